"""``Summarization``: keep a long history under a token budget.

Before each model call the history is measured against three triggers, any of which may be set:
more than ``threshold`` tokens, more than ``fraction`` of the model's context window (given as
``context_window``, or read from the agent model's langchain profile), or more than
``max_messages`` messages. Tokens are counted over what the model will receive, the agent's
system prompt included. Past a trigger, the older messages are replaced by one summary written
by ``model``, and the last ``messages_to_keep`` messages (or a few more) stay as they are. The
new history is returned from ``before_model``, so the loop commits it with the model's reply
and it is persisted like any other state.

Two cheaper steps come around the summary:

- **Old file writes are shortened first.** The arguments of ``write_file`` / ``edit_file`` /
  ``edit_lines`` calls older than the kept messages are the bulk of many histories, and the
  files themselves hold that text. Past a token trigger they are cut to ``shorten_arguments``
  characters (with a note); when that alone brings the history under budget, no summary is
  written. Only past a trigger, so a provider's prompt cache is not invalidated on every call.
- **A context overflow is recovered once.** Counting is an estimate, so a provider may still
  refuse the prompt as too long (OpenAI ``context_length_exceeded``, Anthropic "prompt is too
  long", ...: :func:`is_context_overflow`, or a predicate of your own). Then ``on_model_error``
  summarises whatever it can, whatever the triggers say, and the loop makes the call once more.

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
import math
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from sagents._errors import InvalidMiddleware, SagentsError
from sagents._state import State
from sagents.events import MiddlewareAction
from sagents.execution._middleware import Middleware
from sagents.execution._middleware_context import MiddlewareContext, get_middleware_context
from sagents.middleware._token_counter import (
    TokenCounter,
    approximate_token_count,
    context_window,
    model_token_counter,
)

__all__ = [
    "SUMMARY_MARK",
    "Summarization",
    "is_context_overflow",
    "is_summary",
    "safe_cut",
    "shorten_file_arguments",
]

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

#: The tools whose long arguments are shortened in old messages: the files hold the text.
FILE_WRITING_TOOLS = frozenset({"write_file", "edit_file", "edit_lines"})

# Words in the errors providers raise for a prompt over the context window (lower case).
_OVERFLOW_CODES = frozenset({"context_length_exceeded", "model_context_window_exceeded"})
_OVERFLOW_TEXT = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "context length",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "exceeds the maximum number of tokens",
    "maximum number of tokens",
    "reduce the length of the messages",
)


def _error_code(error: BaseException) -> object:
    code = getattr(error, "code", None)
    if code is None:
        body = getattr(error, "body", None)
        if isinstance(body, dict):
            inner = body.get("error")
            code = inner.get("code") if isinstance(inner, dict) else body.get("code")
    return code


def is_context_overflow(error: BaseException) -> bool:
    """Whether a model error says the prompt is over the model's context window.

    Provider SDKs disagree on types, so this reads what they share: OpenAI's error ``code``
    ``context_length_exceeded`` (also in the error body), and the usual wording ("prompt is
    too long" from Anthropic, "maximum context length", "input is too long", "too many
    tokens", ...) in the message of the error or of the errors it was raised from.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _error_code(current) in _OVERFLOW_CODES:
            return True
        text = str(current).lower()
        if any(words in text for words in _OVERFLOW_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def _cut_text(value: str, limit: int) -> str:
    """``value`` cut to exactly ``limit`` characters, a note included (so cutting again
    changes nothing)."""
    note = f"... [{len(value):,} characters, cut in the history; the file holds the text]"
    return value[: max(0, limit - len(note))] + note


def _shorten_args(args: dict[str, Any], limit: int) -> dict[str, Any] | None:
    if not any(isinstance(v, str) and len(v) > limit for v in args.values()):
        return None
    return {
        k: _cut_text(v, limit) if isinstance(v, str) and len(v) > limit else v
        for k, v in args.items()
    }


def _shortened_message(message: AIMessage, limit: int) -> AIMessage | None:
    """``message`` with the long arguments of its file-writing calls cut, or None."""
    new_args: dict[str, dict[str, Any]] = {}
    for call in message.tool_calls:
        if call["name"] in FILE_WRITING_TOOLS and (cut := _shorten_args(call["args"], limit)):
            new_args[call.get("id") or ""] = cut
    if not new_args:
        return None
    calls = [
        {**call, "args": new_args.get(call.get("id") or "", call["args"])}
        for call in message.tool_calls
    ]
    update: dict[str, Any] = {"tool_calls": calls}
    # Providers may rebuild the request from the raw forms too: Anthropic's tool_use content
    # blocks, OpenAI's additional_kwargs["tool_calls"]. They get the same cut.
    if isinstance(message.content, list):
        update["content"] = [
            {**block, "input": new_args[block["id"]]}
            if isinstance(block, dict)
            and block.get("type") == "tool_use"
            and block.get("id") in new_args
            else block
            for block in message.content
        ]
    raw = message.additional_kwargs.get("tool_calls")
    if isinstance(raw, list):
        update["additional_kwargs"] = {
            **message.additional_kwargs,
            "tool_calls": [
                {
                    **item,
                    "function": {
                        **item["function"],
                        "arguments": json.dumps(new_args[item["id"]], ensure_ascii=False),
                    },
                }
                if isinstance(item, dict)
                and item.get("id") in new_args
                and isinstance(item.get("function"), dict)
                else item
                for item in raw
            ],
        }
    return message.model_copy(update=update)


def shorten_file_arguments(
    messages: Sequence[BaseMessage], end: int, limit: int
) -> tuple[list[BaseMessage], int]:
    """``messages`` with every argument longer than ``limit`` characters of the
    ``write_file`` / ``edit_file`` / ``edit_lines`` calls before index ``end`` cut to ``limit``
    characters (a note included), and how many messages changed."""
    out = list(messages)
    changed = 0
    for index in range(min(end, len(out))):
        message = out[index]
        if isinstance(message, AIMessage) and message.tool_calls:
            shortened = _shortened_message(message, limit)
            if shortened is not None:
                out[index] = shortened
                changed += 1
    return out, changed


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
    """Replaces older messages by a model-written summary when the history grows too long.

    Triggers (any may be set; with none, ``threshold=50_000``): ``threshold`` tokens,
    ``fraction`` of the context window, ``max_messages`` messages.

    Args:
        model: writes the summaries (a cheaper model than the agent's is fine); None: the
            agent's own model.
        threshold: summarise when the prompt counts more tokens than this.
        fraction: summarise when the prompt counts more than this fraction (0 < f <= 1) of the
            model's context window: ``context_window``, or the agent model's
            ``profile["max_input_tokens"]``. Ignored (with one warning) when neither is known.
        context_window: the agent model's context window in tokens, for ``fraction``.
        max_messages: summarise when the history holds more messages than this (it must be
            more than ``messages_to_keep``).
        messages_to_keep: how many recent messages stay verbatim (a few more when a tool call
            and its results straddle the cut).
        token_counter: counts a history's tokens: a callable, or a model whose own counter to
            use. By default ``model``'s own counter when its class has one, else
            :func:`approximate_token_count`. A model's counter runs in a worker thread; if it
            fails, the approximation is used (and the failure logged once).
        prompt: the instructions given to the summary model.
        shorten_arguments: past a token trigger, the arguments of ``write_file`` /
            ``edit_file`` / ``edit_lines`` calls older than the kept messages are cut to this
            many characters first (None: never).
        is_context_overflow: says whether a model error means "the prompt is too long"; then
            the history is summarised and the call made once more. :func:`is_context_overflow`
            by default; None never recovers.

    Raises:
        InvalidMiddleware: an option is out of range.
    """

    key = "summarization"

    def __init__(
        self,
        model: BaseChatModel | None = None,
        *,
        threshold: int | None = None,
        fraction: float | None = None,
        context_window: int | None = None,
        max_messages: int | None = None,
        messages_to_keep: int = 20,
        token_counter: TokenCounter | BaseLanguageModel[Any] | None = None,
        prompt: str = DEFAULT_SUMMARY_PROMPT,
        shorten_arguments: int | None = 2_000,
        is_context_overflow: Callable[[BaseException], bool] | None = is_context_overflow,
    ) -> None:
        self.model = model
        if threshold is None and fraction is None and max_messages is None:
            threshold = 50_000
        self.threshold = threshold
        self.fraction = fraction
        self.context_window = context_window
        self.max_messages = max_messages
        self.messages_to_keep = messages_to_keep
        self.prompt = prompt
        self.shorten_arguments = shorten_arguments
        self.is_context_overflow = is_context_overflow
        counter_source = model if token_counter is None else token_counter
        self._counter: TokenCounter | None
        if isinstance(counter_source, BaseLanguageModel):
            self._counter = model_token_counter(counter_source)
        else:
            self._counter = counter_source
        self._counter_failed = False
        self._agent_counter = model is None and token_counter is None
        self._window_warned = False
        self.validate()

    def validate(self) -> None:
        def positive_int(name: str, value: object, *, minimum: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidMiddleware(
                    f"Summarization({name}=...) must be an int >= {minimum}, got {value!r}"
                )

        positive_int("messages_to_keep", self.messages_to_keep)
        for name in ("threshold", "context_window", "max_messages"):
            if (value := getattr(self, name)) is not None:
                positive_int(name, value)
        if self.shorten_arguments is not None:
            positive_int("shorten_arguments", self.shorten_arguments, minimum=200)
        fraction = self.fraction
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not math.isfinite(fraction)
            or not 0 < fraction <= 1
        ):
            raise InvalidMiddleware(
                f"Summarization(fraction=...) must be a number in (0, 1], got {fraction!r}"
            )
        if self.max_messages is not None and self.max_messages <= self.messages_to_keep:
            raise InvalidMiddleware(
                f"Summarization(max_messages={self.max_messages}) must be more than "
                f"messages_to_keep={self.messages_to_keep}, or every call would summarise"
            )
        if self.model is not None and not isinstance(self.model, BaseLanguageModel):
            raise InvalidMiddleware(
                "Summarization(model=...) must be a langchain chat model (it writes the summaries)"
            )

    async def count_tokens(self, messages: Sequence[BaseMessage]) -> int:
        """The token count of ``messages`` (the triggers compare the prompt's)."""
        counter = self._counter
        if counter is None and self.model is None and self._agent_counter:
            # The agent's own model writes the summaries: its counter counts them, once known.
            agent = getattr(_context(), "agent", None)
            if agent is not None:
                self._agent_counter = False
                counter = self._counter = model_token_counter(agent.model)
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

    def _token_budget(self, context: MiddlewareContext | None) -> int | None:
        """The fewest tokens that trigger a summary (None: no token trigger)."""
        budgets = [] if self.threshold is None else [self.threshold]
        if self.fraction is not None:
            window = self.context_window
            if window is None and context is not None and context.agent is not None:
                window = context_window(context.agent.model)
            if window is not None:
                budgets.append(max(1, int(window * self.fraction)))
            elif not self._window_warned:
                self._window_warned = True
                _log.warning(
                    "Summarization(fraction=%s): the model's context window is unknown (no "
                    "profile max_input_tokens); give context_window=... to use this trigger",
                    self.fraction,
                )
        return min(budgets) if budgets else None

    async def _prompt_tokens(
        self, messages: Sequence[BaseMessage], context: MiddlewareContext | None
    ) -> int:
        """The tokens of what the model will receive: the system prompt, then ``messages``."""
        prompt = context.agent.system_prompt if context and context.agent else None
        return await self.count_tokens([SystemMessage(prompt), *messages] if prompt else messages)

    async def before_model(self, state: State) -> State | None:
        context = _context()
        messages = state.messages
        budget = self._token_budget(context)
        over_messages = self.max_messages is not None and len(messages) > self.max_messages
        tokens = None
        if budget is not None:
            tokens = await self._prompt_tokens(messages, context)
        over_tokens = tokens is not None and budget is not None and tokens > budget
        if not over_tokens and not over_messages:
            return None
        return await self._compact(
            state, context, budget=None if over_messages else budget, tokens=tokens
        )

    async def on_model_error(self, state: State, error: BaseException) -> State | None:
        """After a context-overflow error, summarise whatever can be, whatever the triggers
        say, so that the loop can make the call once more."""
        if self.is_context_overflow is None or not self.is_context_overflow(error):
            return None
        context = _context()
        if context is not None:
            context.emit(
                MiddlewareAction(
                    middleware=self.name,
                    data={
                        "action": "context_overflow",
                        "error": f"{type(error).__name__}: {error}",
                    },
                )
            )
        return await self._compact(state, context, budget=None, tokens=None)

    async def _compact(
        self,
        state: State,
        context: MiddlewareContext | None,
        *,
        budget: int | None,
        tokens: int | None,
    ) -> State | None:
        """Shorten old file arguments and, unless that brings the prompt under ``budget``
        (None: it cannot, summarise anyway), summarise the older messages."""
        messages = state.messages
        kept_from = len(messages) - self.messages_to_keep
        if self.shorten_arguments is not None:
            shortened, changed = shorten_file_arguments(messages, kept_from, self.shorten_arguments)
            if changed:
                messages = shortened
                if budget is not None:
                    after = await self._prompt_tokens(messages, context)
                    _emit(
                        context,
                        self.name,
                        {
                            "action": "arguments_shortened",
                            "messages": changed,
                            "tokens_before": tokens,
                            "tokens_after": after,
                        },
                    )
                    if after <= budget:
                        return state.replace(messages=messages)
        summarized = await self._summarized(state, messages, context, tokens)
        if summarized is not None:
            return summarized
        return state.replace(messages=messages) if messages is not state.messages else None

    async def _summarized(
        self,
        state: State,
        messages: Sequence[BaseMessage],
        context: MiddlewareContext | None,
        tokens: int | None,
    ) -> State | None:
        """``state`` with the older ``messages`` replaced by a summary; None when nothing can
        be summarised or the summary model failed."""
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
        _emit(
            context,
            self.name,
            {
                "action": "summarized",
                "summarized_messages": summarized,
                "kept_messages": len(messages) - cut,
                "tokens_before": tokens,
            },
        )
        return state.replace(messages=new_messages, metadata={**state.metadata, self.key: record})

    async def _summarize(self, previous: BaseMessage | None, older: Sequence[BaseMessage]) -> str:
        parts = []
        if previous is not None:
            text = previous.text.removeprefix(_SUMMARY_HEADER)
            parts.append(f"The summary so far:\n{text}")
        parts.append(f"The messages to add to it:\n{_transcript(older)}")
        writer = self.model
        if writer is None:
            agent = getattr(_context(), "agent", None)
            if agent is None:
                raise InvalidMiddleware(
                    "Summarization() without a model writes with the agent's: run it in an agent"
                )
            writer = agent.model
        reply = await writer.ainvoke([SystemMessage(self.prompt), HumanMessage("\n\n".join(parts))])
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
        _emit(_context(), self.name, {"action": "summarization_failed", "error": error})


def _context() -> MiddlewareContext | None:
    """The hook's context; None when a hook is called directly (in a test, say)."""
    try:
        return get_middleware_context()
    except SagentsError:
        return None


def _emit(context: MiddlewareContext | None, middleware: str, data: dict[str, Any]) -> None:
    if context is not None:
        context.emit(MiddlewareAction(middleware=middleware, data=data))
