"""``Summarization``: keep a long history under a token budget.

Before each model call, when the history counts more than ``threshold`` tokens, the older
messages are replaced by one summary written by ``model``, and the last ``messages_to_keep``
messages (or a few more) stay as they are. The new history is returned from ``before_model``, so
the loop commits it with the model's reply and it is persisted like any other state.

Invariants:

- **Tool pairs stay whole.** The cut never separates an AI message's tool calls from their
  results: it moves earlier until no call before it is answered after it, and the kept part never
  starts with a tool result. Parallel calls count as one unit with all their results.
- **The summary is a recognisable message**: a ``HumanMessage`` whose ``additional_kwargs`` hold
  ``{"sagents_summary": True}`` (see :func:`is_summary`), placed after any leading system
  messages. A user message rather than a system one because several providers accept system
  text only at the very start, and some want the first turn to be the user's. A later
  summarisation folds the previous summary in, as "the summary so far", rather than
  summarising it like a user turn.
- **Failure keeps everything.** If the summary model fails or answers nothing, the history is
  left untouched, a warning is logged and a ``MiddlewareAction`` (debug channel) reports it; the
  next model call tries again.

What the middleware did lives in ``state.metadata["summarization"]``: ``{"summaries": n,
"summarized_messages": m}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from sagents._errors import InvalidMiddleware
from sagents._state import State
from sagents.events import MiddlewareAction
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import get_middleware_context
from sagents.middleware._token_counter import (
    TokenCounter,
    approximate_token_count,
    model_token_counter,
)

__all__ = ["SUMMARY_MARK", "Summarization", "is_summary", "safe_cut"]

_log = logging.getLogger("sagents.middleware")

#: The ``additional_kwargs`` key that marks a summary message.
SUMMARY_MARK = "sagents_summary"

#: Longest text of one message quoted in the transcript given to the summary model.
_QUOTE_LIMIT = 4000

DEFAULT_SUMMARY_PROMPT = """\
You condense conversations between a user and an AI assistant that uses tools. Write a summary \
that lets the assistant carry on as if it had read everything: the user's goals and requests, \
decisions made, facts learned, the tool results that still matter (names, values, errors) and \
what is still to do. Write compact notes, not a reply to the user. When a summary so far is \
given, merge it with the new messages into one summary."""

_SUMMARY_HEADER = "Summary of the earlier conversation:\n\n"


def is_summary(message: BaseMessage) -> bool:
    """Whether ``message`` is a summary written by :class:`Summarization`."""
    return bool(message.additional_kwargs.get(SUMMARY_MARK))


def safe_cut(messages: Sequence[BaseMessage], start: int, wanted: int) -> int:
    """The largest index ``cut <= wanted`` such that ``messages[start:cut]`` can be replaced by a
    summary without breaking a tool call / result pair; ``start`` when there is none.

    A cut is safe when no tool call made before it is answered at or after it, and the message
    at the cut is not a tool result (a kept part must never open with an orphan result).
    """
    wanted = min(wanted, len(messages))
    if wanted <= start:
        return start
    # A call made at i and answered at j forbids every cut in (i, j]: count, for each cut, the
    # pairs that straddle it (a difference array keeps this linear in the history). A result
    # answers the latest call with its id before it: some models reuse ids such as "call_0".
    made: dict[str, int] = {}
    straddling = [0] * (len(messages) + 2)
    for index, message in enumerate(messages):
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                made[call.get("id") or ""] = index
        elif isinstance(message, ToolMessage):
            origin = made.get(message.tool_call_id)
            if origin is not None:
                straddling[origin + 1] += 1
                straddling[index + 1] -= 1
    open_pairs = 0
    forbidden = [False] * (len(messages) + 1)
    for cut in range(len(messages) + 1):
        open_pairs += straddling[cut]
        forbidden[cut] = open_pairs > 0
    for cut in range(wanted, start, -1):
        if forbidden[cut] or (cut < len(messages) and isinstance(messages[cut], ToolMessage)):
            continue
        return cut
    return start


def _text(message: BaseMessage) -> str:
    text = message.text
    if len(text) > _QUOTE_LIMIT:
        return text[:_QUOTE_LIMIT] + f" [... {len(text) - _QUOTE_LIMIT} characters left out]"
    return text


def _transcript(messages: Sequence[BaseMessage]) -> str:
    lines: list[str] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            lines.append(f"[user] {_text(message)}")
        elif isinstance(message, AIMessage):
            if text := _text(message):
                lines.append(f"[assistant] {text}")
            for call in message.tool_calls:
                args = json.dumps(call["args"], default=str, ensure_ascii=False)
                lines.append(f"[assistant calls tool {call['name']}] {args}")
        elif isinstance(message, ToolMessage):
            status = " (error)" if message.status == "error" else ""
            lines.append(
                f"[result of tool {message.name or message.tool_call_id}{status}] {_text(message)}"
            )
        elif isinstance(message, SystemMessage):
            lines.append(f"[system] {_text(message)}")
        else:
            lines.append(f"[{message.type}] {_text(message)}")
    return "\n".join(lines)


class Summarization(Middleware):
    """Replaces older messages by a model-written summary past a token threshold.

    Args:
        model: writes the summaries (a cheaper model than the agent's is fine).
        threshold: summarise when the history counts more tokens than this.
        messages_to_keep: how many recent messages stay verbatim (a few more when a tool call
            and its results straddle the cut).
        token_counter: counts a history's tokens: a callable, or a model whose own counter to
            use. By default ``model``'s own counter when its class has one, else
            :func:`approximate_token_count`. A model's counter runs in a worker thread; if it
            fails, the approximation is used (and the failure logged once).
        prompt: the instructions given to the summary model.

    Raises:
        InvalidMiddleware: a bad ``threshold`` or ``messages_to_keep``.
    """

    key = "summarization"

    def __init__(
        self,
        model: BaseChatModel,
        *,
        threshold: int = 50_000,
        messages_to_keep: int = 20,
        token_counter: TokenCounter | BaseLanguageModel[Any] | None = None,
        prompt: str = DEFAULT_SUMMARY_PROMPT,
    ) -> None:
        self.model = model
        self.threshold = threshold
        self.messages_to_keep = messages_to_keep
        self.prompt = prompt
        counter_source = model if token_counter is None else token_counter
        self._counter: TokenCounter | None
        if isinstance(counter_source, BaseLanguageModel):
            self._counter = model_token_counter(counter_source)
        else:
            self._counter = counter_source
        self._counter_failed = False
        self.validate()

    def validate(self) -> None:
        for name in ("threshold", "messages_to_keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidMiddleware(
                    f"Summarization({name}=...) must be an int >= 1, got {value!r}"
                )
        if not isinstance(self.model, BaseLanguageModel):
            raise InvalidMiddleware(
                "Summarization(model=...) must be a langchain chat model (it writes the summaries)"
            )

    async def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """The token count the threshold is compared with."""
        counter = self._counter
        if counter is None or self._counter_failed:
            return approximate_token_count(messages)
        try:
            return await asyncio.to_thread(counter, list(messages))
        except Exception as exc:
            # Once: a counter that needs a download or a network fails the same way every time.
            self._counter_failed = True
            _log.warning(
                "Summarization: the token counter failed (%s: %s); using the approximate count",
                type(exc).__name__,
                exc,
            )
            return approximate_token_count(messages)

    async def before_model(self, state: State) -> State | None:
        messages = state.messages
        tokens = await self.count_tokens(messages)
        if tokens <= self.threshold:
            return None
        start = 0
        while start < len(messages) and isinstance(messages[start], SystemMessage):
            start += 1
        previous = (
            messages[start] if start < len(messages) and is_summary(messages[start]) else None
        )
        first = start + 1 if previous is not None else start
        cut = safe_cut(messages, first, len(messages) - self.messages_to_keep)
        if cut <= first:
            return None  # nothing but the summary (or an unbreakable tool turn) to fold in
        try:
            summary = await self._summarize(previous, messages[first:cut])
        except Exception as exc:
            self._report_failure(state, exc)
            return None
        summary_message = HumanMessage(
            content=_SUMMARY_HEADER + summary, additional_kwargs={SUMMARY_MARK: True}
        )
        new_messages = [*messages[:start], summary_message, *messages[cut:]]
        info = state.metadata.get(self.key)
        info = info if isinstance(info, dict) else {}
        summarized = cut - first
        record = {
            "summaries": int(info.get("summaries", 0)) + 1,
            "summarized_messages": int(info.get("summarized_messages", 0)) + summarized,
        }
        get_middleware_context().emit(
            MiddlewareAction(
                middleware=self.name,
                data={
                    "action": "summarized",
                    "summarized_messages": summarized,
                    "kept_messages": len(messages) - cut,
                    "tokens_before": tokens,
                },
            )
        )
        return state.replace(messages=new_messages, metadata={**state.metadata, self.key: record})

    async def _summarize(self, previous: BaseMessage | None, older: Sequence[BaseMessage]) -> str:
        parts = []
        if previous is not None:
            text = previous.text.removeprefix(_SUMMARY_HEADER)
            parts.append(f"The summary so far:\n{text}")
        parts.append(f"The messages to add to it:\n{_transcript(older)}")
        reply = await self.model.ainvoke(
            [SystemMessage(self.prompt), HumanMessage("\n\n".join(parts))]
        )
        summary = reply.text.strip()
        if not summary:
            raise ValueError("the summary model returned an empty summary")
        return summary

    def _report_failure(self, state: State, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        _log.warning(
            "agent %r: Summarization failed, the history is kept as it is: %s",
            state.agent_id,
            error,
        )
        get_middleware_context().emit(
            MiddlewareAction(
                middleware=self.name, data={"action": "summarization_failed", "error": error}
            )
        )
