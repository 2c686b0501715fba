"""Telemetry: named events with measurements, in the style of Erlang's ``:telemetry``.

Events are tuples of strings such as ``("sagents", "agent", "start")``. A handler is a plain
function ``handler(event, measurements, metadata, config)``, attached under a unique id::

    from sagents import telemetry

    def on_llm(event, measurements, metadata, config):
        print(event, measurements["duration"], metadata["agent_id"])

    telemetry.attach("my-llm-logger", ("sagents", "llm", "response"), on_llm)

This is the one deliberate global of sagents (like :mod:`logging`): instrumentation is process
wide, and code emitting events must not need a handle to find the handlers. When nothing is
attached, :func:`execute` returns after one dictionary lookup. A handler that raises is detached
and logged, so an observer can never break the agent it observes.

Events emitted by sagents:

=====================================  ==========================================
``("sagents", "agent", "start"|"stop"|"crash")``   an agent server's life
``("sagents", "execution", "start"|"stop"|"interrupt")``  one run of the loop
``("sagents", "execution", "halt")``                    a run halted on purpose (``Halt``)
``("sagents", "llm", "request"|"response"|"error")``     one model call attempt
``("sagents", "tool", "start"|"stop"|"error")``          one tool call
``("sagents", "middleware", "task", "spawned"|"completed"|"failed")``  a middleware's
                                                         background task (``ctx.spawn``)
``("sagents", "middleware", "message", "received")``     a message for a middleware's
                                                         ``handle_message``
=====================================  ==========================================

:func:`span` wraps a block of your own code in a ``start`` / ``stop`` / ``exception`` triple, like
Erlang's ``:telemetry.span/3``. The OpenTelemetry bridge lives in :mod:`sagents.otel` (an optional
dependency), so that this module, and ``import sagents``, never import OpenTelemetry.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

from sagents._errors import SagentsError

__all__ = [
    "AGENT_CRASH",
    "AGENT_START",
    "AGENT_STOP",
    "EXECUTION_HALT",
    "EXECUTION_INTERRUPT",
    "EXECUTION_START",
    "EXECUTION_STOP",
    "LLM_ERROR",
    "MIDDLEWARE_MESSAGE_RECEIVED",
    "MIDDLEWARE_TASK_COMPLETED",
    "MIDDLEWARE_TASK_FAILED",
    "MIDDLEWARE_TASK_SPAWNED",
    "LLM_REQUEST",
    "LLM_RESPONSE",
    "PERSISTENCE_ERROR",
    "PERSISTENCE_SAVE",
    "TOOL_ERROR",
    "TOOL_START",
    "TOOL_STOP",
    "EVENTS",
    "EventName",
    "Handler",
    "Span",
    "attach",
    "attach_many",
    "detach",
    "execute",
    "has_handlers",
    "list_handlers",
    "span",
]

EventName: TypeAlias = tuple[str, ...]
Handler: TypeAlias = Callable[[EventName, Mapping[str, Any], Mapping[str, Any], Any], None]

# The events sagents emits, by name (attach handlers with these rather than spelling tuples).
AGENT_START: EventName = ("sagents", "agent", "start")
AGENT_STOP: EventName = ("sagents", "agent", "stop")
AGENT_CRASH: EventName = ("sagents", "agent", "crash")
EXECUTION_START: EventName = ("sagents", "execution", "start")
EXECUTION_STOP: EventName = ("sagents", "execution", "stop")
EXECUTION_INTERRUPT: EventName = ("sagents", "execution", "interrupt")
#: Besides its ``stop`` (status ``idle``): the run was halted, ``reason`` in the metadata.
EXECUTION_HALT: EventName = ("sagents", "execution", "halt")
LLM_REQUEST: EventName = ("sagents", "llm", "request")
LLM_RESPONSE: EventName = ("sagents", "llm", "response")
LLM_ERROR: EventName = ("sagents", "llm", "error")
TOOL_START: EventName = ("sagents", "tool", "start")
TOOL_STOP: EventName = ("sagents", "tool", "stop")
TOOL_ERROR: EventName = ("sagents", "tool", "error")
MIDDLEWARE_TASK_SPAWNED: EventName = ("sagents", "middleware", "task", "spawned")
MIDDLEWARE_TASK_COMPLETED: EventName = ("sagents", "middleware", "task", "completed")
MIDDLEWARE_TASK_FAILED: EventName = ("sagents", "middleware", "task", "failed")
MIDDLEWARE_MESSAGE_RECEIVED: EventName = ("sagents", "middleware", "message", "received")
PERSISTENCE_SAVE: EventName = ("sagents", "persistence", "save")
PERSISTENCE_ERROR: EventName = ("sagents", "persistence", "error")

#: Every event sagents emits (a test checks this against the ``execute`` call sites).
EVENTS: tuple[EventName, ...] = (
    AGENT_START,
    AGENT_STOP,
    AGENT_CRASH,
    EXECUTION_START,
    EXECUTION_STOP,
    EXECUTION_INTERRUPT,
    EXECUTION_HALT,
    LLM_REQUEST,
    LLM_RESPONSE,
    LLM_ERROR,
    TOOL_START,
    TOOL_STOP,
    TOOL_ERROR,
    MIDDLEWARE_TASK_SPAWNED,
    MIDDLEWARE_TASK_COMPLETED,
    MIDDLEWARE_TASK_FAILED,
    MIDDLEWARE_MESSAGE_RECEIVED,
    PERSISTENCE_SAVE,
    PERSISTENCE_ERROR,
)

_logger = logging.getLogger("sagents.telemetry")


@dataclass(frozen=True, slots=True)
class _Attachment:
    handler_id: str
    event: EventName
    handler: Handler
    config: Any


_by_event: dict[EventName, list[_Attachment]] = {}
_by_id: dict[str, list[_Attachment]] = {}


def attach(handler_id: str, event: EventName, handler: Handler, config: Any = None) -> None:
    """Call ``handler`` for every ``event``.

    Raises:
        SagentsError: ``handler_id`` is already attached (detach it first).
    """
    attach_many(handler_id, [event], handler, config)


def attach_many(
    handler_id: str, events: Iterable[EventName], handler: Handler, config: Any = None
) -> None:
    """Call ``handler`` for each of ``events`` under one id.

    Raises:
        SagentsError: ``handler_id`` is already attached (detach it first).
    """
    if handler_id in _by_id:
        raise SagentsError(f"telemetry handler {handler_id!r} is already attached; detach it first")
    attachments = [_Attachment(handler_id, tuple(event), handler, config) for event in events]
    _by_id[handler_id] = attachments
    for attachment in attachments:
        _by_event.setdefault(attachment.event, []).append(attachment)


def detach(handler_id: str) -> bool:
    """Detach a handler; returns False if no handler had that id."""
    attachments = _by_id.pop(handler_id, None)
    if attachments is None:
        return False
    for attachment in attachments:
        remaining = [a for a in _by_event.get(attachment.event, ()) if a is not attachment]
        if remaining:
            _by_event[attachment.event] = remaining
        else:
            _by_event.pop(attachment.event, None)
    return True


def list_handlers(prefix: EventName = ()) -> list[tuple[str, EventName]]:
    """``(handler_id, event)`` pairs whose event starts with ``prefix``."""
    return [
        (a.handler_id, a.event)
        for attachments in _by_id.values()
        for a in attachments
        if a.event[: len(prefix)] == prefix
    ]


def has_handlers(event: EventName) -> bool:
    """Whether anything listens to ``event`` (to skip building costly metadata)."""
    return event in _by_event


def execute(event: EventName, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Emit ``event`` to its handlers. Never raises because of a handler."""
    attachments = _by_event.get(event)
    if not attachments:
        return
    for attachment in list(attachments):
        try:
            attachment.handler(event, measurements, metadata, attachment.config)
        except Exception:
            _logger.exception(
                "telemetry handler %r raised on %s and was detached",
                attachment.handler_id,
                event,
            )
            detach(attachment.handler_id)


_span_ids = itertools.count(1)


class Span:
    """A block of code reported as ``prefix + ("start",)`` then ``("stop",)`` or ``("exception",)``.

    Build it with :func:`span`. It is a context manager for ``with`` and ``async with`` alike, and
    ``as`` gives the span itself, whose :attr:`metadata` and :attr:`measurements` the block may
    extend before they are reported on exit (Erlang's span returns its stop metadata instead;
    a mutable object reads better in a ``with`` block)::

        with telemetry.span(("myapp", "index"), {"doc": doc_id}) as span:
            count = index(doc)
            span.metadata["status"] = "ok"
            span.measurements["terms"] = count

    Events:
        ``start``: measurements ``system_time`` (``time.time()``) and ``monotonic_time``
        (``time.perf_counter()``, the clock ``duration`` is measured on); the metadata as given.

        ``stop``: measurements ``duration`` (seconds, a float) and ``monotonic_time`` plus what the
        block added; the metadata plus what the block added.

        ``exception``: the same, with metadata ``kind`` (the exception's class), ``reason`` (the
        exception) and ``stacktrace`` (its traceback). The exception is always re-raised, and
        any ``BaseException`` counts, cancellation included: the block did not complete, and
        ``kind`` lets a handler tell ``asyncio.CancelledError`` from a failure.

    All three carry ``telemetry_span_context`` in their metadata: an integer unique to this span,
    so a handler can pair a ``stop`` with its ``start`` even when spans overlap.

    When no handler listens to an event, that event costs one dictionary lookup: no clock is
    read for ``start`` and no dictionary is built (see :func:`has_handlers`). The monotonic clock
    is always read on entry, so a handler attached while the block runs still gets a true
    ``duration``.
    """

    __slots__ = ("_started", "event_prefix", "measurements", "metadata")

    def __init__(self, event_prefix: EventName, metadata: Mapping[str, Any]) -> None:
        self.event_prefix: EventName = tuple(event_prefix)
        #: Reported with ``stop`` / ``exception``; the block may add to it.
        self.metadata: dict[str, Any] = {**metadata, "telemetry_span_context": next(_span_ids)}
        #: Extra measurements reported with ``stop`` / ``exception``; the block may add to it.
        self.measurements: dict[str, Any] = {}
        self._started: float | None = None

    def __enter__(self) -> Span:
        if self._started is not None:
            raise SagentsError(
                f"telemetry span {self.event_prefix} was already entered; build a new one per block"
            )
        self._started = now = time.perf_counter()
        event = (*self.event_prefix, "start")
        if event in _by_event:
            execute(
                event,
                {"system_time": time.time(), "monotonic_time": now},
                dict(self.metadata),
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        event = (*self.event_prefix, "stop" if exc is None else "exception")
        if event not in _by_event or self._started is None:
            return
        now = time.perf_counter()
        measurements = {**self.measurements, "duration": now - self._started, "monotonic_time": now}
        metadata = self.metadata
        if exc is not None:
            metadata = {**metadata, "kind": type(exc), "reason": exc, "stacktrace": traceback}
        execute(event, measurements, metadata)

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def span(event_prefix: EventName, metadata: Mapping[str, Any]) -> Span:
    """Report the block it wraps as ``event_prefix`` + ``start`` / ``stop`` / ``exception``.

    Args:
        event_prefix: the event without its last element, e.g. ``("myapp", "index")``.
        metadata: reported with every event of the span (copied; extend ``span.metadata``).

    Returns:
        A :class:`Span`, to use once as ``with`` or ``async with``.
    """
    return Span(event_prefix, metadata)
