"""One model call: streaming, retries with backoff, fallback models.

A half-streamed reply lives only in a local accumulator until the stream completes, so a cancel
or a failure mid-stream can never leave a partial message in the state.

Streaming works with any ``BaseChatModel``, including the many integrations that implement only
``_generate`` or ``_agenerate``: for those (and for ``disable_streaming``) langchain-core's
``astream`` yields the whole reply as one complete ``AIMessage``, which becomes the reply's single
delta. A model failure of any type, ``BaseException`` included, is a failed attempt; only a
cancellation of the run propagates. Each attempt runs in a task of its own whose body is
contained, because a sync model runs in a worker thread and what it raises there is thrown into
the awaiting task (see ``_containment.py``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.messages.ai import add_ai_message_chunks

from sagents import telemetry
from sagents._errors import ModelCallFailed
from sagents.events import LLMDeltas, LLMError, ToolCallIdentified
from sagents.execution._containment import (
    BaseExceptionRaised,
    cancel_requests,
    contained_call,
    describe,
    log_contained,
    reraise_cancellation,
)
from sagents.execution._tools import tool_display_text

if TYPE_CHECKING:
    from sagents.execution._run import Run

__all__ = ["call_model"]


async def _stream(run: Run, model: Any, messages: Sequence[BaseMessage], config: Any) -> AIMessage:
    agent_id = run.agent.agent_id
    emit = run.sink.emit
    tools = run.agent.all_tools
    # Merged once at the end: ``acc + chunk`` per chunk rebuilds the whole message every time.
    chunks: list[AIMessageChunk] = []
    complete: AIMessage | None = None
    identified: set[Any] = set()
    async for item in model.astream(messages, config=config):
        if isinstance(item, AIMessageChunk):
            chunk = item
        elif isinstance(item, AIMessage):
            # A model that cannot stream: langchain-core's astream fell back to ainvoke and
            # yields the whole reply at once. It is the reply's one delta.
            complete = item
            chunk = AIMessageChunk(**item.model_dump(exclude={"type"}))
        else:
            continue
        chunks.append(chunk)
        emit(LLMDeltas(agent_id=agent_id, deltas=[chunk]))
        for position, tc in enumerate(chunk.tool_call_chunks):
            name = tc.get("name")
            if not name:
                continue
            # A call's pieces share an index (OpenAI) or else an id; a chunk that carries whole
            # calls (the fallback above) may give neither, and then each is its own call.
            key: object = tc.get("index")
            if key is None:
                key = tc.get("id") or (len(chunks), position)
            if key not in identified:
                identified.add(key)
                emit(
                    ToolCallIdentified(
                        agent_id=agent_id,
                        tool_call_id=tc.get("id") or "",
                        name=name,
                        display_text=tool_display_text(tools.get(name), name),
                    )
                )
    if not chunks:
        raise RuntimeError("the model returned an empty stream")
    if complete is not None and len(chunks) == 1:
        return complete  # as the model made it, not rebuilt from its chunk
    acc = chunks[0] if len(chunks) == 1 else add_ai_message_chunks(chunks[0], *chunks[1:])
    message = message_chunk_to_message(acc)
    if not isinstance(message, AIMessage):  # pragma: no cover - langchain always gives one
        raise RuntimeError(f"the model streamed a {type(message).__name__}, not an AI message")
    return message


async def _invoke(model: Any, messages: Sequence[BaseMessage], config: Any) -> AIMessage:
    message = await model.ainvoke(messages, config=config)
    if not isinstance(message, AIMessage):
        raise RuntimeError(f"the model returned a {type(message).__name__}, not an AI message")
    return message


def model_name(model: Any) -> str:
    """A readable model name for telemetry (``gpt-4o``, ``claude-...``, or the class name)."""
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


_REQUEST = telemetry.LLM_REQUEST
_RESPONSE = telemetry.LLM_RESPONSE
_ERROR = telemetry.LLM_ERROR


async def call_model(run: Run, messages: Sequence[BaseMessage]) -> AIMessage:
    """Ask the model (then each fallback) for the next message, retrying transient errors.

    Raises:
        ModelCallFailed: every attempt on every model failed.
        asyncio.CancelledError: the run was cancelled.
    """
    agent = run.agent
    policy = agent.retry
    config: dict[str, Any] = {"callbacks": list(agent.callbacks)} if agent.callbacks else {}
    names = agent.model_names
    has_handlers = telemetry.has_handlers
    attempt = 0
    since = cancel_requests()
    errors: list[str] = []
    last: BaseException | None = None
    for model_index, model in enumerate(agent.models):
        if model_index and last is not None and agent.before_fallback_hooks:
            messages = await _before_fallback(run, list(messages), last, model_index)
        for retry_number in range(policy.max_attempts):
            attempt += 1
            # Telemetry payloads are built only when a handler listens: this is the hot path.
            started = time.perf_counter()
            if has_handlers(_REQUEST):
                telemetry.execute(
                    _REQUEST,
                    {"system_time": time.time()},
                    _metadata(run, attempt, names[model_index]),
                )
            try:
                # In a task of its own whose body is contained: a sync model runs in a worker
                # thread, and what it raises there is thrown into the awaiting task, where a
                # GeneratorExit would tear down the whole run and SystemExit end the process.
                # The call is made inside the task: a task cancelled before its first step
                # must not leave a coroutine that was never awaited.
                message = await asyncio.get_running_loop().create_task(
                    contained_call(
                        functools.partial(_stream, run, model, messages, config)
                        if agent.stream
                        else functools.partial(_invoke, model, messages, config)
                    )
                )
            except BaseException as exc:  # a failed attempt, whatever it raised
                reraise_cancellation(exc, since)
                if isinstance(exc, BaseExceptionRaised):
                    exc = exc.original
                log_contained(exc, f"model {names[model_index]!r}", agent.agent_id)
                last = exc
                text = describe(exc)
                errors.append(f"attempt {attempt} (model {model_index}): {text}")
                if run.sink.debug:
                    run.sink.emit(LLMError(agent_id=agent.agent_id, error=text, attempt=attempt))
                if has_handlers(_ERROR):
                    telemetry.execute(
                        _ERROR,
                        {"duration": time.perf_counter() - started},
                        {**_metadata(run, attempt, names[model_index]), "error": text},
                    )
                if not policy.retry_on(exc):
                    break
                if retry_number + 1 < policy.max_attempts:
                    await policy.sleep(retry_number, exc)
                continue
            if has_handlers(_RESPONSE):
                usage: Mapping[str, Any] = message.usage_metadata or {}
                telemetry.execute(
                    _RESPONSE,
                    {
                        "duration": time.perf_counter() - started,
                        "input_tokens": usage.get("input_tokens", 0),
                        "output_tokens": usage.get("output_tokens", 0),
                        "total_tokens": usage.get("total_tokens", 0),
                    },
                    _metadata(run, attempt, names[model_index]),
                )
            return message
    summary = "; ".join(errors[-5:])
    raise ModelCallFailed(
        f"the model failed after {attempt} attempt(s) on {len(agent.models)} model(s): {summary}. "
        "Check the provider's status and credentials, or add fallback_models"
    ) from last


async def _before_fallback(
    run: Run, messages: list[BaseMessage], error: BaseException, model_index: int
) -> list[BaseMessage]:
    """The messages for fallback ``model_index``, as the middleware's ``before_fallback`` hooks
    make them."""
    fallback = run.agent.fallback_models[model_index - 1]
    for middleware in run.agent.before_fallback_hooks:
        changed = await middleware.before_fallback(messages, error, fallback)
        if changed is not None:
            messages = list(changed)
    return messages


def _metadata(run: Run, attempt: int, model: str) -> dict[str, Any]:
    return {"agent_id": run.agent.agent_id, **run.metadata, "attempt": attempt, "model": model}
