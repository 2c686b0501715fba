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

from langchain_core.messages import BaseMessage, HumanMessage

from sagents._errors import InvalidOption, SagentsError
from sagents._interrupt import Decision, Interrupt
from sagents._state import State
from sagents.events import Event, MiddlewareAction

if TYPE_CHECKING:
    from sagents.execution._agent import Agent

__all__ = [
    "Display",
    "MessageQueue",
    "StateUpdate",
    "ToolContext",
    "ToolResume",
    "get_tool_context",
    "shown_as",
]

#: A change to apply to the state after the turn's tools have run.
StateUpdate = Callable[[State], State]

#: Where ``ToolContext.queue_message`` puts a message: ``(message, shown)``, ``shown`` being
#: the user's version of it (None: the user sees nothing).
MessageQueue = Callable[[BaseMessage, BaseMessage | None], None]

_NOTHING: Mapping[str, Any] = {}

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
        tool_context: the caller's data for tools: the ``tool_context`` start option, with
            the ``tool_context`` of the message that started this run on top (Sagents'
            ``custom_context``). Empty when none was given.
    """

    agent_id: str
    tool_call_id: str
    tool_name: str
    state: State
    services: Mapping[str, Any] = field(default_factory=dict)
    agent: Agent | None = field(default=None, repr=False)
    resume: ToolResume | None = None
    tool_context: Mapping[str, Any] = field(default_factory=lambda: _NOTHING)
    message_queue: MessageQueue | None = field(default=None, repr=False)
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

    def queue_message(self, message: BaseMessage | str, *, display: Display = True) -> bool:
        """Queue ``message`` (a string becomes a ``HumanMessage``) as the next turn's input:
        it enters the conversation when this run ends, at the head of a follow-up run, like
        a message the user sent meanwhile (and counted against ``max_follow_ups``). Use it to
        hand the model instructions rather than data: models treat a tool result as data and
        a user turn as instructions. If the run ends waiting for a human decision, the
        message waits for the run that continues it.

        ``display`` is what the user sees in the conversation's display rows: the message
        itself (True), nothing (False: the model sees it, the transcript does not), or
        another message or text. As nobody typed it, prefer False or your own wording.

        Returns False, queuing nothing, when the tool does not run in an agent server
        (e.g. a bare ``Run``): the tool should then return the text as its result.
        """
        queue = self.message_queue
        if queue is None:
            return False
        if isinstance(message, str):
            message = HumanMessage(message)
        queue(message, shown_as(message, display))
        return True

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


#: What the display rows show of a message: itself (True), nothing (False), or other wording.
Display = bool | BaseMessage | str


def shown_as(message: BaseMessage, display: Display) -> BaseMessage | None:
    """The user's version of ``message`` for ``display`` (None: no display row)."""
    if display is True:
        return message
    if display is False:
        return None
    if isinstance(display, str):
        return HumanMessage(display)
    if isinstance(display, BaseMessage):
        return display
    raise InvalidOption(
        f"display must be True, False, a message or its text, got {type(display).__name__}"
    )


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
