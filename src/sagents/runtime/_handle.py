"""``AgentHandle``: what callers hold instead of the server (pykka's ``ActorRef``).

A handle names an agent id in one runtime and resolves the server on every call (one dict
lookup), so a handle stays valid across a restart of the agent, and every call on an agent that
is not running raises :class:`AgentNotRunning` instead of reaching a dead object.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage

from sagents._errors import AgentNotRunning, InvalidOption
from sagents._interrupt import Decision
from sagents._state import State
from sagents._status import Status
from sagents.events import Channel
from sagents.execution._agent import Agent
from sagents.execution._tool_context import Display
from sagents.runtime import _commands as commands
from sagents.runtime._context import capture_context
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions
from sagents.runtime._publisher import Subscription
from sagents.runtime._reset import ResetFiles, check_files

if TYPE_CHECKING:
    from sagents.runtime._runtime import Runtime
    from sagents.runtime._server import AgentServer

__all__ = ["AgentHandle"]


class AgentHandle:
    """Talk to one running agent. All calls are async (docs/runtime.md lists them)."""

    __slots__ = ("_runtime", "agent_id")

    def __init__(self, runtime: Runtime, agent_id: str) -> None:
        self._runtime = runtime
        self.agent_id = agent_id

    def __repr__(self) -> str:
        return f"AgentHandle({self.agent_id!r})"

    def _server(self) -> AgentServer:
        server = self._runtime._registry.lookup(self.agent_id)
        if server is None or server.closed:
            raise AgentNotRunning(
                f"agent {self.agent_id!r} is not running; start it (Session.ensure_running)"
            )
        return server

    async def add_message(
        self,
        message: BaseMessage | str,
        *,
        run: bool = True,
        tool_context: Mapping[str, Any] | None = None,
        display: Display = True,
    ) -> None:
        """Append a message and, by default, run. A string becomes a ``HumanMessage``.

        While a run is in progress the message is queued and runs next; while interrupted it
        dismisses the pending approval or question. ``tool_context`` (the caller's data for
        tools, e.g. the request's user) replaces the previous message's over the start
        option's, from the run this message starts: tools read it as
        ``ToolContext.tool_context``. ``display`` is what the conversation's display rows
        show: the message (or the ``message_preprocessor``'s version of it), nothing (False:
        the model reads it, the transcript does not), or other wording (e.g. the command the
        user typed for an expanded prompt).
        """
        if isinstance(message, str):
            message = HumanMessage(message)
        server = self._server()
        await server.call(commands.add_message, server, message, run, tool_context, display)

    async def execute(self) -> None:
        """Start a run.

        Raises:
            InvalidTransition: already running, or interrupted (use :meth:`resume`).
        """
        server = self._server()
        await server.call(commands.execute, server)

    async def resume(self, decisions: Sequence[Decision | Mapping[str, Any]]) -> None:
        """Continue an interrupted run with one decision per pending call: for an approval
        ``Approve`` / ``Edit`` / ``Reject`` (or ``Respond`` where allowed), for a question
        (``AskUserQuestion``) ``Answer`` with one answer per question, ``Respond`` or
        ``Reject``.

        Raises:
            InvalidTransition: the agent is not interrupted.
            InvalidDecision: the decisions (or answers) do not fit; the interrupt stays.
        """
        server = self._server()
        await server.call(commands.resume, server, decisions)

    async def dismiss_interrupt(self) -> None:
        """Clear a pending approval or question without sending a message: every pending call
        is answered with a "not run" result (so the history stays valid for the model), and
        the agent becomes ``idle``; nothing runs.

        Raises:
            InvalidTransition: the agent is not interrupted.
        """
        server = self._server()
        await server.call(commands.dismiss_interrupt, server)

    async def reset(self, *, files: ResetFiles = "keep") -> None:
        """Go back to a fresh state without restarting the server: a run in progress is
        cancelled, queued messages dropped, and messages, todos, metadata and any pending
        interrupt cleared; ``AgentReset`` is broadcast, then ``StatusChanged(IDLE)``, and the
        fresh state is saved.

        Args:
            files: ``"keep"`` leaves the agent's files; ``"clear"`` deletes the files of its
                conversation (docs/runtime.md, "Reset").

        Raises:
            InvalidOption: ``files`` is not a policy, or ``"clear"`` for files shared with other
                conversations (a ``filesystem_scope``).
        """
        check_files(files)
        server = self._server()
        await server.call(commands.reset_agent, server, files)

    async def cancel(self) -> None:
        """Cancel the run in progress.

        Raises:
            InvalidTransition: nothing is running.
        """
        server = self._server()
        await server.call(commands.cancel, server)

    async def pause(self) -> None:
        """Pause for infrastructure (a node drain): any run stops, the state is saved with a
        ``paused`` mark, and ``execute()`` — here or after a restart from that state —
        continues.

        Raises:
            InvalidTransition: the agent waits for approval (that already survives restarts).
        """
        server = self._server()
        await server.call(commands.pause, server)

    async def stop(self, reason: str = "manual") -> None:
        """Stop gracefully (save, ``AgentShutdown(reason)``); returns once it has left."""
        await self._runtime.stop(self.agent_id, reason=reason)

    async def send_to_middleware(self, key: str, message: Any) -> None:
        """Deliver ``message`` to the middleware with metadata key ``key`` (its
        ``handle_message`` hook); while a run is in progress it is handled right after.

        Raises:
            InvalidTransition: the agent has no middleware with that key.
        """
        server = self._server()
        await server.call(commands.send_to_middleware, server, key, message)

    async def update_context(self, context: contextvars.Context | None = None) -> None:
        """Replace the ``contextvars`` the agent's next runs and tools see (request id, tenant,
        tracing) with ``context``, or with a copy of the caller's context."""
        if context is None:
            context = capture_context()
        elif not isinstance(context, contextvars.Context):
            raise InvalidOption("context must be a contextvars.Context (copy_context()) or None")
        server = self._server()
        await server.call(commands.update_context, server, context)

    async def touch(self) -> None:
        """Count as activity: push the inactivity deadline back."""
        self._server().touch()

    async def get_state(self) -> State:
        """The current state (an immutable snapshot); counts as activity."""
        server = self._server()
        server.touch()
        return server.state

    async def export_state(self) -> dict[str, Any]:
        """``get_state().to_dict()``: versioned JSON; counts as activity."""
        return (await self.get_state()).to_dict()

    async def get_status(self) -> Status:
        return self._server().status

    async def info(self) -> AgentInfo:
        return self._server().info()

    async def get_agent(self) -> Agent:
        """The agent's configuration the server runs: as started, or as last replaced by
        :meth:`update_agent_and_state`."""
        return self._server().agent

    async def options(self) -> AgentOptions:
        """The validated options the agent's server runs with. Agents started with equal plain
        options (numbers, strings, None) may share one instance."""
        return self._server().options

    async def last_result(self) -> Any:
        """The structured result of the last completed run: what its ``until_tool`` returned
        (as ``Agent.run`` returns it in ``Done.value``), None when it ended without one. Also
        sent to subscribers as the ``data`` of that run's ``StatusChanged(IDLE)``."""
        return self._server().last_result

    def subscribe(self, channel: Channel = "main", *, after_seq: int | None = None) -> Subscription:
        """Subscribe to this server's events (an async context manager and async iterator).

        ``after_seq`` replays buffered events after that sequence number.
        """
        return self._server().subscribe(channel, after_seq)

    async def restore_state(self, state: State | Mapping[str, Any]) -> None:
        """Replace the state (broadcasts ``StateRestored``); not while running."""
        if not isinstance(state, State):
            state = State.from_dict(state)
        server = self._server()
        await server.call(commands.replace_state, server, state, None)

    async def update_agent_and_state(self, agent: Agent, state: State) -> None:
        """Replace the agent configuration and the state at once; not while running."""
        server = self._server()
        await server.call(commands.replace_state, server, state, agent)

    def is_running(self) -> bool:
        """Whether a server runs this agent id now (never raises ``AgentNotRunning``)."""
        try:
            self._server()
        except AgentNotRunning:
            return False
        return True
