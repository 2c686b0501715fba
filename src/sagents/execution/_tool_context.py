"""What a running tool can see and do besides its arguments.

Tools are ordinary langchain tools, so the loop cannot pass extra parameters to them. Instead,
while a tool runs, :func:`get_tool_context` returns its :class:`ToolContext` (a ``contextvars``
variable set in the tool's own task, so parallel tools each see their own). Through it a tool reads
the state as it was when the turn's tools started and asks for state changes, which the loop
applies after the turn in tool-call order (``propagate_state``) so parallel tools never race on
the state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sagents._errors import SagentsError
from sagents._interrupt import Interrupt
from sagents._state import State
from sagents.events import Event, MiddlewareAction

__all__ = ["StateUpdate", "ToolContext", "get_tool_context"]

#: A change to apply to the state after the turn's tools have run.
StateUpdate = Callable[[State], State]

_current: ContextVar[ToolContext | None] = ContextVar("sagents_tool_context", default=None)


@dataclass(slots=True, kw_only=True)
class ToolContext:
    """The context of one tool call.

    Attributes:
        agent_id: the agent running the tool.
        tool_call_id: the id of this call.
        tool_name: the tool's name.
        state: the state when the turn's tools started (read-only).
        services: what the host offers tools, e.g. ``"filesystem"`` (the scope's shared file
            store) when the agent runs in a runtime with a ``filesystem_scope``.
    """

    agent_id: str
    tool_call_id: str
    tool_name: str
    state: State
    services: Mapping[str, Any] = field(default_factory=dict)
    updates: list[StateUpdate] = field(default_factory=list)
    interrupt: Interrupt | None = None
    emit: Callable[[Event], None] = field(default=lambda event: None, repr=False)

    def update_state(self, update: StateUpdate) -> None:
        """Apply ``update`` to the state once the turn's tools are done (in call order)."""
        self.updates.append(update)

    def request_interrupt(self, interrupt: Interrupt) -> None:
        """Pause the run after this turn's tools (``check_tool_interrupts``) for ``interrupt``."""
        self.interrupt = interrupt

    def report(self, middleware: str, data: Any) -> None:
        """Publish a ``MiddlewareAction`` debug event."""
        self.emit(MiddlewareAction(agent_id=self.agent_id, middleware=middleware, data=data))


def get_tool_context() -> ToolContext:
    """The context of the tool call running in this task.

    Raises:
        SagentsError: called outside a tool run by a sagents agent.
    """
    context = _current.get()
    if context is None:
        raise SagentsError(
            "get_tool_context() was called outside a tool run by a sagents agent; "
            "call it from inside the tool function"
        )
    return context


def set_tool_context(context: ToolContext | None) -> None:
    """Set the context for the current task (used by the loop)."""
    _current.set(context)
