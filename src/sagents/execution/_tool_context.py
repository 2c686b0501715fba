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
from typing import TYPE_CHECKING, Any

from sagents._errors import SagentsError
from sagents._interrupt import Decision, Interrupt
from sagents._state import State
from sagents.events import Event, MiddlewareAction

if TYPE_CHECKING:
    from sagents.execution._agent import Agent

__all__ = ["StateUpdate", "ToolContext", "ToolResume", "get_tool_context"]

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
            store) when the agent runs in a runtime with a ``filesystem_scope``, and
            ``"runtime"`` when it runs in a :class:`~sagents.Runtime`.
        agent: the agent running the tool.
        resume: set when this call was suspended (:meth:`suspend`) and the run is being resumed:
            the human decisions for it and the data it suspended with.
    """

    agent_id: str
    tool_call_id: str
    tool_name: str
    state: State
    services: Mapping[str, Any] = field(default_factory=dict)
    agent: Agent | None = field(default=None, repr=False)
    resume: ToolResume | None = None
    updates: list[StateUpdate] = field(default_factory=list)
    interrupt: Interrupt | None = None
    suspended: Interrupt | None = None
    emit: Callable[[Event], None] = field(default=lambda event: None, repr=False)
    debug: Callable[[], bool] = field(default=lambda: False, repr=False)

    def update_state(self, update: StateUpdate) -> None:
        """Apply ``update`` to the state once the turn's tools are done (in call order)."""
        self.updates.append(update)

    def request_interrupt(self, interrupt: Interrupt) -> None:
        """Pause the run after this turn's tools (``check_tool_interrupts``) for ``interrupt``."""
        self.interrupt = interrupt

    def suspend(self, interrupt: Interrupt) -> None:
        """End this call without a result and pause the run for ``interrupt``.

        The other calls of the turn keep their results. When the run is resumed, this tool is
        called again with the same arguments and :attr:`resume` holding the decisions (one per
        action request of ``interrupt``) and ``interrupt.data``: this is how a sub-agent's
        approval request travels through its parent. Whatever the tool returns after calling
        this is ignored.
        """
        self.suspended = interrupt

    def wants_debug(self) -> bool:
        """Whether anyone listens on the agent's ``debug`` channel (skip building debug events
        when not)."""
        return self.debug()

    def report(self, middleware: str, data: Any) -> None:
        """Publish a ``MiddlewareAction`` debug event (when anyone listens)."""
        if self.debug():
            self.emit(MiddlewareAction(agent_id=self.agent_id, middleware=middleware, data=data))


@dataclass(frozen=True, slots=True)
class ToolResume:
    """What a suspended tool call is resumed with: the decisions for its action requests and
    the data of the interrupt it suspended with."""

    decisions: tuple[Decision, ...]
    data: Mapping[str, Any]


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
