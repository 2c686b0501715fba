"""An offline chat model that follows a script, for demos and tests.

:class:`ScriptedChatModel` is a real langchain-core ``BaseChatModel``, not a stub the loop has to
special-case: ``ainvoke``, ``astream``, ``astream_events``, callbacks and ``bind_tools`` all go
through langchain-core's own machinery. Each model call consumes one script entry:

- :class:`Reply` answers with text and/or :class:`ToolCall` s, optionally slowly;
- :class:`Fail` raises an exception, optionally after streaming part of a reply;
- a callable entry ``(messages) -> Reply | Fail`` decides from the prompt it receives.

Alternatively a single ``responder`` callable answers every call. It keeps no cursor, so one
model can serve any number of conversations at once.

Streams are shaped like an OpenAI-style provider's, because consumers must not be able to tell
the difference: text arrives in several chunks, then each tool call as a first chunk carrying its
``name`` and ``id`` followed by its JSON arguments split across at least two chunks (same
``index``), then a closing chunk with the ``usage_metadata``, the ``finish_reason`` and
``chunk_position="last"``. Summing the chunks therefore gives the same content, tool calls and
usage as a non-streamed call. Failures in the middle of a stream are real exceptions raised by
the stream, after the chunks that came before them.

Choices:

- Delays are ``asyncio.sleep`` calls, never busy waits or wall-clock reads, so tests run on
  virtual time (``looptime``) and a cancelled consumer stops at once.
- An entry is taken (and the prompt recorded) synchronously, under a lock, before the first
  ``await``, so concurrent callers sharing one model consume the script in call order. The lock
  is for the sync API, which langchain-core runs in worker threads (``batch``).
- The script is consumed even by a call that is later cancelled: a real provider would have
  received that request too.
- ``stop`` sequences and bound tools are ignored: the script decides what the model says.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr, SkipValidation, model_validator

from sagents._errors import ConfigurationError, ScriptExhausted

__all__ = ["Fail", "Reply", "Responder", "ScriptEntry", "ScriptedChatModel", "ToolCall"]

#: Words per streamed chunk when a reply does not set ``chunk_size``.
_WORDS_PER_CHUNK = 3
#: Longest piece of a tool call's JSON arguments in one streamed chunk.
_ARGS_PIECE = 16
_USAGE_KEYS = frozenset({"input_tokens", "output_tokens", "total_tokens"})


def _check_delay(owner: str, delay: float) -> None:
    if not (math.isfinite(delay) and delay >= 0):
        raise ConfigurationError(f"{owner}.delay must be a finite number >= 0, got {delay!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A tool call the scripted model makes.

    Attributes:
        name: the tool to call.
        args: its arguments; must be JSON-serialisable, as they travel as JSON when streamed.
        id: the call id; when ``None`` each model call generates a fresh ``call_<hex>`` id.
    """

    name: str
    args: Mapping[str, Any]
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("ToolCall.name must be a non-empty tool name")
        try:
            json.dumps(dict(self.args))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"ToolCall({self.name!r}).args must be JSON-serialisable: {exc}"
            ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A successful model answer.

    Attributes:
        text: the message text (may be empty when the reply only calls tools).
        tool_calls: tool calls made in this turn, streamed after the text, in order.
        chunk_size: characters per streamed text chunk; ``None`` streams a few words per chunk.
        delay: seconds awaited before each streamed chunk (the closing chunk included), or
            once before a non-streamed reply.
        usage: ``input_tokens`` / ``output_tokens`` (and optionally ``total_tokens``, else their
            sum); when ``None`` a rough estimate is used: prompt characters // 4 + 1 input
            tokens and ``len(text) // 4 + 1`` output tokens.
        id: the message id; when ``None`` langchain-core assigns its run id.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    chunk_size: int | None = None
    delay: float = 0.0
    usage: Mapping[str, int] | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        # A tuple, so that a list the caller keeps and mutates cannot rewrite the script.
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        for call in self.tool_calls:
            if not isinstance(call, ToolCall):
                raise ConfigurationError(
                    f"Reply.tool_calls must hold ToolCall objects, got {call!r}"
                )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigurationError(f"Reply.chunk_size must be >= 1, got {self.chunk_size}")
        _check_delay("Reply", self.delay)
        if self.usage is not None:
            unknown = set(self.usage) - _USAGE_KEYS
            if unknown:
                raise ConfigurationError(
                    f"Reply.usage has unknown keys {sorted(unknown)}; use {sorted(_USAGE_KEYS)}"
                )
            if any(not isinstance(v, int) or v < 0 for v in self.usage.values()):
                raise ConfigurationError(f"Reply.usage values must be ints >= 0: {self.usage}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """A failing model call.

    Attributes:
        error: the exception instance the call raises.
        text: text streamed before the failure (only with ``after_chunks``).
        after_chunks: when streaming, how many chunks of ``text`` arrive before ``error`` is
            raised (``text`` is divided evenly between them); a non-streamed call just raises.
        delay: seconds awaited before each streamed chunk and before raising.
    """

    error: BaseException
    text: str = ""
    after_chunks: int = 0
    delay: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.error, BaseException):
            raise ConfigurationError(
                f"Fail.error must be an exception instance (e.g. TimeoutError('...')), "
                f"got {self.error!r}"
            )
        if self.after_chunks < 0:
            raise ConfigurationError(f"Fail.after_chunks must be >= 0, got {self.after_chunks}")
        _check_delay("Fail", self.delay)


#: Decides the answer to one model call from the messages the model received.
Responder: TypeAlias = Callable[[list[BaseMessage]], Reply | Fail]
#: One step of a script.
ScriptEntry: TypeAlias = Reply | Fail | Responder


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """Everything one call produces, worked out before the first ``await``."""

    chunks: tuple[AIMessageChunk, ...]
    message: AIMessage | None  # the non-streamed answer; None for a failure
    error: BaseException | None
    delay: float


class ScriptedChatModel(BaseChatModel):
    """A chat model that answers from a script instead of a provider.

    Give exactly one of ``script`` (entries consumed in order, one per call, streamed or not)
    or ``responder`` (called for every call, no state).

    Example:
        ```python
        model = ScriptedChatModel(
            script=[
                Reply(text="Planning.", tool_calls=[ToolCall(name="ls", args={})]),
                Reply(text="Done.", delay=0.05),
            ]
        )
        ```

    Attributes:
        script: the scripted entries, in call order.
        responder: the callable answering every call instead of a script.
        model_name: reported as ``response_metadata["model_name"]``.
        record_prompts: keep every call's messages in :attr:`prompts`; turn it off for a
            long-lived demo server, where the list would grow without bound.

    Raises:
        ConfigurationError: neither or both of ``script`` and ``responder`` were given, or a
            script entry is not a ``Reply``, a ``Fail`` or a callable.
    """

    # SkipValidation: pydantic cannot (and need not) build a schema for exceptions or callables;
    # the validator below checks the entries with a message that says what to fix.
    script: SkipValidation[Sequence[ScriptEntry] | None] = None
    responder: SkipValidation[Responder | None] = None
    model_name: str = "scripted"
    record_prompts: bool = True

    _cursor: int = PrivateAttr(default=0)
    _calls: int = PrivateAttr(default=0)
    _prompts: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __getstate__(self) -> dict[Any, Any]:
        # Picklable (a distributed backend sends agents to other processes): without its lock,
        # which the copy gets afresh.
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private.pop("_lock", None)
        return {**state, "__pydantic_private__": private}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    @model_validator(mode="after")
    def _check_source(self) -> ScriptedChatModel:
        # ConfigurationError is not a ValueError, so pydantic lets it through unwrapped.
        if (self.script is None) == (self.responder is None):
            raise ConfigurationError(
                "ScriptedChatModel needs exactly one of script=[...] (replies consumed in order) "
                "or responder=callable (answers every call)"
            )
        if self.responder is not None and not callable(self.responder):
            raise ConfigurationError(f"responder must be callable, got {self.responder!r}")
        if self.script is not None:
            self.script = tuple(self.script)
            for position, entry in enumerate(self.script):
                if not isinstance(entry, Reply | Fail) and not callable(entry):
                    raise ConfigurationError(
                        f"script[{position}] must be a Reply, a Fail or a callable "
                        f"(messages) -> Reply | Fail, got {entry!r}"
                    )
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    @property
    def calls(self) -> int:
        """How many model calls were made (including one that found the script exhausted)."""
        return self._calls

    @property
    def prompts(self) -> list[list[BaseMessage]]:
        """The messages received by each call, in call order (if ``record_prompts``)."""
        return self._prompts

    @property
    def remaining(self) -> int | None:
        """Script entries not consumed yet; ``None`` in responder mode."""
        return None if self.script is None else len(self.script) - self._cursor

    def reset(self) -> None:
        """Rewind the script to its first entry and forget recorded calls and prompts."""
        with self._lock:
            self._cursor = 0
            self._calls = 0
            self._prompts = []

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as a provider would; the script, not the tools, decides the answer.

        Args:
            tools: tools in any form ``convert_to_openai_tool`` accepts.
            tool_choice: recorded in the bound kwargs, otherwise ignored.
            **kwargs: further kwargs bound to every call.

        Returns:
            The model bound with OpenAI-format ``tools``.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    # -- langchain-core hooks ---------------------------------------------------------------
    # langchain-core fires on_llm_new_token itself for every chunk these yield, so they do not
    # (a provider doing it too would report each token twice).

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = self._plan(messages)
        if plan.delay:
            time.sleep(plan.delay)
        return _result(plan)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        plan = self._plan(messages)
        if plan.delay:
            await asyncio.sleep(plan.delay)
        return _result(plan)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        plan = self._plan(messages)
        for chunk in plan.chunks:
            if plan.delay:
                time.sleep(plan.delay)
            yield ChatGenerationChunk(message=chunk)
        if plan.error is not None:
            if plan.delay:
                time.sleep(plan.delay)
            raise plan.error

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        plan = self._plan(messages)
        for chunk in plan.chunks:
            if plan.delay:
                await asyncio.sleep(plan.delay)
            yield ChatGenerationChunk(message=chunk)
        if plan.error is not None:
            if plan.delay:
                await asyncio.sleep(plan.delay)
            raise plan.error

    # -- script handling --------------------------------------------------------------------

    def _plan(self, messages: list[BaseMessage]) -> _Plan:
        return self._build_plan(self._take(messages), messages)

    def _take(self, messages: list[BaseMessage]) -> Reply | Fail:
        """Consume the entry for this call and record the call, with no ``await`` in between."""
        with self._lock:
            self._calls += 1
            if self.record_prompts:
                self._prompts.append(list(messages))
            entry: ScriptEntry
            if self.responder is not None:
                entry = self.responder
            else:
                script = self.script or ()
                if self._cursor >= len(script):
                    raise ScriptExhausted(_exhausted_message(len(script), self._calls, messages))
                entry = script[self._cursor]
                self._cursor += 1
        # Callable entries run outside the lock: they are user code and may be slow.
        if isinstance(entry, Reply | Fail):
            return entry
        outcome = entry(list(messages))
        if not isinstance(outcome, Reply | Fail):
            raise ConfigurationError(
                f"a ScriptedChatModel responder must return a Reply or a Fail, got {outcome!r}"
            )
        return outcome

    def _build_plan(self, outcome: Reply | Fail, messages: list[BaseMessage]) -> _Plan:
        if isinstance(outcome, Fail):
            pieces = _split_evenly(outcome.text, outcome.after_chunks)
            partial = tuple(AIMessageChunk(content=piece) for piece in pieces)
            return _Plan(chunks=partial, message=None, error=outcome.error, delay=outcome.delay)

        # Ids are fixed once per call so that every chunk of a tool call carries the same one.
        calls = [
            (call.name, _json_roundtrip(call.args), call.id or f"call_{uuid.uuid4().hex[:24]}")
            for call in outcome.tool_calls
        ]
        usage = _usage(outcome, messages)
        finish: Literal["tool_calls", "stop"] = "tool_calls" if calls else "stop"
        metadata = {"model_name": self.model_name, "finish_reason": finish}

        chunks = [
            AIMessageChunk(content=piece, id=outcome.id)
            for piece in _split_text(outcome.text, outcome.chunk_size)
        ]
        for index, (name, args, call_id) in enumerate(calls):
            # As OpenAI streams them: name and id once (a second copy would be concatenated by
            # chunk addition), then the JSON arguments in pieces under the same index.
            chunks.append(
                AIMessageChunk(
                    content="",
                    id=outcome.id,
                    tool_call_chunks=[tool_call_chunk(name=name, args="", id=call_id, index=index)],
                )
            )
            chunks.extend(
                AIMessageChunk(
                    content="",
                    id=outcome.id,
                    tool_call_chunks=[tool_call_chunk(args=piece, index=index)],
                )
                for piece in _split_args(json.dumps(args))
            )
        # The closing chunk carries what only the end of a stream knows; chunk_position="last"
        # tells langchain-core the aggregate is complete (it parses tool calls for it).
        chunks.append(
            AIMessageChunk(
                content="",
                id=outcome.id,
                usage_metadata=usage,
                response_metadata=dict(metadata),
                chunk_position="last",
            )
        )
        message = AIMessage(
            content=outcome.text,
            tool_calls=[
                tool_call(name=name, args=args, id=call_id) for name, args, call_id in calls
            ],
            usage_metadata=usage,
            response_metadata=dict(metadata),
            id=outcome.id,
        )
        return _Plan(chunks=tuple(chunks), message=message, error=None, delay=outcome.delay)


def _result(plan: _Plan) -> ChatResult:
    if plan.error is not None:
        raise plan.error
    if plan.message is None:  # pragma: no cover - a plan has either an error or a message
        raise RuntimeError("scripted plan without message or error")
    return ChatResult(generations=[ChatGeneration(message=plan.message)])


def _json_roundtrip(args: Mapping[str, Any]) -> dict[str, Any]:
    # The streamed path hands consumers the args parsed back from JSON; the non-streamed path
    # must give the same values (lists, not tuples) and never the script's own mutable dict.
    parsed: dict[str, Any] = json.loads(json.dumps(dict(args)))
    return parsed


def _usage(reply: Reply, messages: Sequence[BaseMessage]) -> UsageMetadata:
    if reply.usage is None:
        input_tokens = sum(len(message.text) for message in messages) // 4 + 1
        output_tokens = len(reply.text) // 4 + 1
        total_tokens = input_tokens + output_tokens
    else:
        input_tokens = reply.usage.get("input_tokens", 0)
        output_tokens = reply.usage.get("output_tokens", 0)
        total_tokens = reply.usage.get("total_tokens", input_tokens + output_tokens)
    return UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=total_tokens
    )


def _split_text(text: str, chunk_size: int | None) -> list[str]:
    if not text:
        return []
    if chunk_size is not None:
        return [text[start : start + chunk_size] for start in range(0, len(text), chunk_size)]
    # Words keep their trailing whitespace, so the pieces concatenate back to the exact text.
    words: list[str] = []
    start = 0
    for position in range(1, len(text)):
        if text[position - 1].isspace() and not text[position].isspace():
            words.append(text[start:position])
            start = position
    words.append(text[start:])
    return [
        "".join(words[start : start + _WORDS_PER_CHUNK])
        for start in range(0, len(words), _WORDS_PER_CHUNK)
    ]


def _split_args(arguments: str) -> list[str]:
    # Always at least two pieces (the shortest JSON object, "{}", has two characters), so a
    # consumer is exercised on arguments that are incomplete JSON until the last piece.
    size = max(1, min(_ARGS_PIECE, len(arguments) // 2))
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


def _split_evenly(text: str, parts: int) -> list[str]:
    return [text[i * len(text) // parts : (i + 1) * len(text) // parts] for i in range(parts)]


def _exhausted_message(length: int, call: int, messages: Sequence[BaseMessage]) -> str:
    if messages:
        last = messages[-1]
        text = last.text if last.text else str(last.content)
        if len(text) > 80:
            text = text[:77] + "..."
        prompt = f"{type(last).__name__} {text!r}"
    else:
        prompt = "no messages"
    return (
        f"ScriptedChatModel script has {length} "
        f"{'reply' if length == 1 else 'replies'}, all used; call {call} received "
        f"(last prompt message: {prompt}). Add an entry to the script, or use responder=..."
    )
