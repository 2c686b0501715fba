"""Turning what users pass as tools into langchain tools, and running one tool call.

A tool call never raises into the loop: an unknown tool, invalid arguments, a tool that raises or
one that outlives its timeout all become an error ``ToolMessage`` (``status="error"``) the model
reads on its next turn. "Raises" means anything, ``BaseException`` included: a tool
calling ``sys.exit()`` or raising a ``CancelledError`` of its own fails that call, not the process
or the run (see ``_containment.py``). Only a cancellation of the run propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import ValidationError

from sagents import telemetry
from sagents._errors import Halt, InvalidAgent
from sagents.execution._containment import (
    BaseExceptionRaised,
    cancel_requests,
    contain_tool,
    describe,
    log_contained,
    reraise_cancellation,
)
from sagents.execution._tool_context import ToolContext, set_tool_context

__all__ = [
    "ToolOutcome",
    "as_tool",
    "invalid_call_outcome",
    "invoke_tool",
    "tool_display_text",
    "tool_timeout",
]

_START = telemetry.TOOL_START
_STOP = telemetry.TOOL_STOP
_ERROR = telemetry.TOOL_ERROR


def as_tool(obj: BaseTool | Callable[..., Any]) -> BaseTool:
    """A langchain tool for ``obj``: a ``BaseTool`` as is, a typed function wrapped.

    Raises:
        InvalidAgent: ``obj`` is neither, or the function cannot become a tool (no docstring).
    """
    if isinstance(obj, BaseTool):
        return obj
    if not callable(obj):
        raise InvalidAgent("tools", f"{obj!r} is neither a langchain tool nor a function")
    try:
        if inspect.iscoroutinefunction(obj):
            return StructuredTool.from_function(coroutine=obj)
        return StructuredTool.from_function(func=obj)
    except Exception as exc:
        name = getattr(obj, "__name__", repr(obj))
        raise InvalidAgent(
            "tools", f"cannot turn {name} into a tool: {exc} (give it a docstring and type hints)"
        ) from None


def tool_timeout(tool: BaseTool, default: float | None) -> float | None:
    """The tool's own timeout (``tool.metadata["timeout"]``) or the agent's default."""
    if tool.metadata and "timeout" in tool.metadata:
        value = tool.metadata["timeout"]
        return None if value is None else float(value)
    return default


def tool_display_text(tool: BaseTool | None, name: str) -> str:
    """A short label for UIs: ``tool.metadata["display_text"]`` or the name, humanised."""
    if tool is not None and tool.metadata and tool.metadata.get("display_text"):
        return str(tool.metadata["display_text"])
    return name.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """What one call produced: the message for the model, its structured value, any error."""

    message: ToolMessage
    value: Any
    error: str | None
    context: ToolContext | None
    #: The reason when the tool raised :class:`~sagents.Halt` (the run ends after the turn).
    halt: str | None = None

    @property
    def suspended(self) -> bool:
        """The call ended without a result, waiting for decisions (``ToolContext.suspend``)."""
        return self.context is not None and self.context.suspended is not None


def _structured(message: ToolMessage) -> Any:
    if message.artifact is not None:
        return message.artifact
    content = message.content
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


def _error(call: ToolCall, text: str) -> ToolOutcome:
    message = ToolMessage(
        content=f"Error: {text}", tool_call_id=call["id"] or "", name=call["name"], status="error"
    )
    return ToolOutcome(message=message, value=None, error=text, context=None)


def invalid_call_outcome(call: Mapping[str, Any]) -> ToolOutcome:
    """The result of a call whose arguments could not be parsed (``invalid_tool_calls``)."""
    raw = call.get("args")
    return _error(
        {"name": call.get("name") or "", "args": {}, "id": call.get("id"), "type": "tool_call"},
        f"invalid arguments for tool {call.get('name')!r}: {call.get('invalid')} "
        f"(got {raw!r}); send the arguments again as one JSON object",
    )


def _describe(exc: BaseException, name: str) -> str:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid arguments for tool {name!r}: {problems}"
    if isinstance(exc, asyncio.CancelledError):
        return f"tool {name!r} failed: it raised CancelledError, though the run was not cancelled"
    return f"tool {name!r} failed: {describe(exc)}"


def _outcome(call: ToolCall, result: Any, context: ToolContext) -> ToolOutcome:
    if not isinstance(result, ToolMessage):
        # A tool returning a Command-like object; keep its text for the model.
        result = ToolMessage(content=str(result), tool_call_id=call["id"] or "", name=call["name"])
    failed = result.status == "error"
    return ToolOutcome(
        message=result,
        value=None if failed else _structured(result),
        error=str(result.content) if failed else None,
        context=context,
    )


async def invoke_tool(
    tool: BaseTool | None,
    call: ToolCall,
    *,
    timeout: float | None,
    context: ToolContext,
    known: Mapping[str, BaseTool],
    metadata: Mapping[str, Any] | None = None,
    callbacks: Sequence[BaseCallbackHandler] = (),
) -> ToolOutcome:
    """Run one tool call to an outcome; only a cancellation of the calling task propagates.

    The tool runs through :func:`contain_tool` (a view of it, made in about a microsecond), so
    that ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` cannot leave the task or
    thread langchain runs it in. ``callbacks`` (the middleware's observability handlers) see the
    tool run; without any, the tool is invoked with no callback configuration at all, the
    cheapest path.

    Raises:
        asyncio.CancelledError: the calling task was cancelled (whatever the tool then raised).
    """
    name = call["name"]
    if tool is None:
        available = ", ".join(sorted(known)) or "none"
        return _error(call, f"unknown tool {name!r}; available tools: {available}")
    started = time.perf_counter()
    # Payloads only when someone listens: one tool call per turn is the common case.
    if telemetry.has_handlers(_START):
        telemetry.execute(
            _START, {"system_time": time.time()}, _metadata(context, name, call, metadata)
        )
    tool = contain_tool(tool)
    since = cancel_requests()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            # Set inside the deadline: its timer copies the context it is made in, and a
            # cancelled timer stays scheduled until its deadline, keeping whatever that copy
            # holds (the tool context reaches the whole agent) alive for up to the timeout.
            set_tool_context(context)
            if callbacks:
                result = await tool.ainvoke(
                    {**call, "type": "tool_call"}, config={"callbacks": list(callbacks)}
                )
            else:
                result = await tool.ainvoke({**call, "type": "tool_call"})
        outcome = _outcome(call, result, context)
    except Halt as halt:  # not a failure: the run ends after this turn (see _halt.py)
        message = ToolMessage(
            content=f"Halted: {halt.reason}", tool_call_id=call["id"] or "", name=name
        )
        outcome = ToolOutcome(
            message=message, value=None, error=None, context=context, halt=halt.reason
        )
    except BaseException as exc:  # the tool's failure, whatever it is: see _containment.py
        reraise_cancellation(exc, since)
        if isinstance(exc, BaseExceptionRaised):
            exc = exc.original
        if deadline.expired():
            # Whatever the tool raised once our deadline cancelled it (usually TimeoutError).
            text = f"tool {name!r} timed out after {timeout:g} s"
        else:
            log_contained(exc, f"tool {name!r}", context.agent_id)
            text = _describe(exc, name)
        outcome = _error(call, text)
    finally:
        set_tool_context(None)
    event = _STOP if outcome.error is None else _ERROR
    if telemetry.has_handlers(event):
        telemetry.execute(
            event,
            {"duration": time.perf_counter() - started},
            _metadata(context, name, call, metadata),
        )
    return outcome


def _metadata(
    context: ToolContext, name: str, call: ToolCall, metadata: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "agent_id": context.agent_id,
        "tool": name,
        "tool_call_id": call["id"],
        **(metadata or {}),
    }
