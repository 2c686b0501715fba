"""Telemetry: named events with measurements, in the style of Erlang's ``:telemetry`` (L70, L71).

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
``("sagents", "llm", "request"|"response"|"error")``     one model call attempt
``("sagents", "tool", "start"|"stop"|"error")``          one tool call
=====================================  ==========================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from sagents._errors import SagentsError

__all__ = [
    "EventName",
    "Handler",
    "attach",
    "attach_many",
    "detach",
    "execute",
    "has_handlers",
    "list_handlers",
]

EventName: TypeAlias = tuple[str, ...]
Handler: TypeAlias = Callable[[EventName, Mapping[str, Any], Mapping[str, Any], Any], None]

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
