"""Counting the tokens of a history, for :class:`~sagents.middleware.Summarization`.

A provider's own counter is exact but not always usable: langchain-core's *default*
``get_num_tokens_from_messages`` needs ``transformers`` (it warns, then fails without it), and a
provider's counter may need a download (tiktoken's encodings) or a network call (Anthropic's
counting API). So a model's counter is used only when its class really overrides langchain's
default, and :func:`approximate_token_count` (characters / 4 over the text and the tool-call
arguments) is the fallback, good enough to decide *when* to summarise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import AIMessage, BaseMessage

__all__ = ["TokenCounter", "approximate_token_count", "context_window", "model_token_counter"]

#: Counts the tokens of a list of messages (may block: it is run in a worker thread).
TokenCounter: TypeAlias = Callable[[Sequence[BaseMessage]], int]

#: Tokens added per message for its role and framing, as chat formats do.
_PER_MESSAGE = 4
_CHARS_PER_TOKEN = 4


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    chars = 0
    for block in content if isinstance(content, list) else ():
        if isinstance(block, str):
            chars += len(block)
        elif isinstance(block, dict):
            text = block.get("text")
            # Non-text blocks (images, tool_use echoes) count by their JSON size: rough, but it
            # grows with the block, which is what a threshold needs.
            chars += len(text) if isinstance(text, str) else len(json.dumps(block, default=str))
    return chars


def approximate_token_count(messages: Sequence[BaseMessage]) -> int:
    """About one token per four characters of content and tool-call arguments, plus a few per
    message. Needs no tokenizer, never does I/O, and is linear in the history's size."""
    chars = 0
    for message in messages:
        chars += _content_chars(message.content)
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                chars += len(call["name"]) + len(json.dumps(call["args"], default=str))
    return -(-chars // _CHARS_PER_TOKEN) + _PER_MESSAGE * len(messages)


def model_token_counter(model: BaseLanguageModel[Any]) -> TokenCounter | None:
    """The model's own counter, or None when its class keeps langchain-core's default one.

    The default needs ``transformers`` and is not this model's tokenizer anyway, so it is not
    worth a warning and a failure on every call.
    """
    own = type(model).get_num_tokens_from_messages
    if own is BaseLanguageModel.get_num_tokens_from_messages:
        return None

    def count(messages: Sequence[BaseMessage]) -> int:
        return int(model.get_num_tokens_from_messages(list(messages)))

    return count


def context_window(model: BaseLanguageModel[Any]) -> int | None:
    """The most input tokens ``model`` accepts, from its langchain profile
    (``model.profile["max_input_tokens"]``), or None when it does not say."""
    profile = getattr(model, "profile", None)
    if not isinstance(profile, dict):
        return None
    value = profile.get("max_input_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
