"""``AgentUnit``: one agent's supervision unit, without a task of its own.

The unit is what OTP would build as a ``rest_for_one`` supervisor holding the agent server and
the supervisor of its sub-agents. A fleet of mostly idle agents cannot afford a supervisor task
(and its mailbox) per agent, so the unit is a plain object driven by callbacks: the server tells
it how it ended (:meth:`server_ended`) and the unit reacts, with a task only while it has work to
do (a restart, ending sub-agents). The guarantees are those of the supervisor it replaces:

- **transient server**: restarted after a crash, not after a stop. The restarted server resumes
  from the last lifecycle point the crashed one reached (a completed run, an interrupt...), which
  the server reports to its unit, and with persistence from whatever storage holds if that is
  newer: a crash never forks a conversation back to its initial state. Restarts are counted on
  the loop clock and more than ``max_restarts`` within ``max_seconds`` make the unit give up
  (the agent then stops; nothing else is touched).
- **rest_for_one**: a crash or a stop of the server ends its sub-agents (the units started with
  ``start_sub_agent`` and the ``sub_agents()`` supervisor); a sub-agent's crash never reaches the
  parent.
- **stop ends the whole unit**, so the agent id can be started again at once; a runtime shutdown
  stops sub-agents first, then the server (reverse dependency order).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Coroutine, Hashable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sagents._errors import SagentsError
from sagents._state import State
from sagents.execution._agent import Agent
from sagents.runtime._options import AgentOptions
from sagents.runtime._server import AgentServer
from sagents.runtime._supervisor import Strategy, Supervisor

if TYPE_CHECKING:
    from sagents.runtime._ownership import Ownership

__all__ = ["AgentUnit", "ServerOwner", "UnitHost"]

_log = logging.getLogger("sagents.runtime")


class ServerOwner(Protocol):
    """What a server reports to: its agent unit."""

    def server_ended(self, server: AgentServer, reason: str) -> None: ...

    def keep(self, state: State, version: int) -> None:
        """The state a restart after a crash resumes from."""
        ...

    def keep_display(self, operations: list[Any]) -> None:
        """Display operations a crashed server could not write, for its restart."""
        ...


class UnitHost(Protocol):
    """What an agent unit needs from its runtime: the registry, the table of running units,
    the task set that shutdown waits for, and the resources of a filesystem scope."""

    @property
    def running(self) -> bool:
        """Whether the runtime is started (a crashed server is restarted only then)."""
        ...

    @property
    def ownership(self) -> Ownership: ...

    @property
    def max_restarts(self) -> int: ...

    @property
    def max_seconds(self) -> float: ...

    def services_for(self, scope: Hashable | None) -> Mapping[str, Any]: ...

    def register(self, agent_id: str, server: AgentServer) -> None:
        """Register a restarted server (raises ``SagentsError`` when the id is taken or the
        runtime stops)."""
        ...

    def unregister(self, agent_id: str, server: AgentServer) -> None: ...

    def is_current(self, unit: AgentUnit) -> bool:
        """Whether ``unit`` is the one the runtime runs for its agent id."""
        ...

    def unit_ended(self, unit: AgentUnit) -> None:
        """Forget ``unit`` and release its filesystem scope."""
        ...

    def own(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` (a restart or an ending) until it is done; shutdown waits for it."""
        ...


class AgentUnit:
    """The unit of one running agent id: its server, restarts and sub-agents (not public)."""

    __slots__ = (
        "_display_log",
        "_done",
        "_restarts",
        "_sup_ready",
        "_task",
        "agent",
        "context",
        "ended",
        "options",
        "parent",
        "runtime",
        "server",
        "state",
        "stopping",
        "sub_units",
        "supervisor",
        "version",
    )

    def __init__(
        self,
        runtime: UnitHost,
        parent: AgentUnit | None,
        agent: Agent,
        state: State,
        options: AgentOptions,
        context: contextvars.Context | None,
    ) -> None:
        self.runtime = runtime
        # The caller's context variables (request id, tenant, tracing), for every incarnation;
        # kept apart from the options so that equal options can be shared between agents.
        self.context = context
        self.parent = parent
        self.agent = agent
        # The last lifecycle point's state and version: a restart resumes from them.
        self.state = state
        self.version = options.state_version
        self.options = options
        self.server: AgentServer | None = None
        # Everything below is made on demand: most agents never crash nor delegate.
        self.sub_units: dict[str, AgentUnit] | None = None
        self.supervisor: Supervisor | None = None
        self._sup_ready: asyncio.Future[None] | None = None
        self._restarts: deque[float] | None = None
        self._task: asyncio.Task[None] | None = None  # a restart or an ending in progress
        self._done: list[asyncio.Future[None]] | None = None
        self._display_log: list[Any] | None = None  # a crashed server's unwritten rows
        self.stopping = False
        self.ended = False

    @property
    def agent_id(self) -> str:
        return self.agent.agent_id

    def __repr__(self) -> str:
        return f"<AgentUnit {self.agent_id!r}{' ended' if self.ended else ''}>"

    def new_server(self, *, restart: bool = False) -> AgentServer:
        return AgentServer(
            self.agent,
            self.state,
            self.options,
            unit=self,
            context=self.context,
            services=self.runtime.services_for(self.options.filesystem_scope),
            version=self.version,
            restart=restart,
            ownership=self.runtime.ownership,
            display_log=self._take_display(),
        )

    def keep_display(self, operations: list[Any]) -> None:
        """Called by a crashed server: display operations it could not write, for the next."""
        if operations:
            self._display_log = operations

    def _take_display(self) -> list[Any]:
        log, self._display_log = self._display_log, None
        return log or []

    def keep(self, state: State, version: int) -> None:
        """Called by the server at each lifecycle point: what a restart resumes from."""
        self.state = state
        self.version = version

    def adopt(self, server: AgentServer) -> None:
        """Make ``server`` the unit's (it is registered): timers start, messages flow."""
        self.server = server
        server.started()

    # -- the server's end ------------------------------------------------------------------------

    def server_ended(self, server: AgentServer, reason: str) -> None:
        """Called by the server once it has ended (its ``AgentShutdown`` is published)."""
        runtime = self.runtime
        runtime.unregister(server.agent_id, server)
        if server is not self.server or self.ended or self.stopping:
            return  # close() is in charge
        if reason == "crash" and runtime.running:
            self._spawn(self._restart())
        elif self.sub_units or self.supervisor is not None:
            self._spawn(self._end_after_children())
        else:
            self._finish()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"unit {self.agent_id}")
        self._task = task
        self.runtime.own(task)

    async def _end_after_children(self) -> None:
        try:
            await self.end_children()
        finally:
            self._finish()

    async def _restart(self) -> None:
        """Restart the crashed server (after ending its sub-agents), retrying failed starts."""
        runtime = self.runtime
        try:
            await self.end_children()
            while self._count_restart():
                if self.stopping or not runtime.running or not runtime.is_current(self):
                    return
                server = self.new_server(restart=True)
                try:
                    if server.start():
                        await server.initialise()  # on failure, nothing of it is left
                except Exception:
                    _log.exception("agent %r failed to restart", self.agent_id)
                    await server.shutdown("start failed", graceful=False)  # if not done yet
                    continue  # a failed restart is another crash (counted next round)
                try:
                    runtime.register(self.agent_id, server)
                except SagentsError as exc:
                    # The id was taken meanwhile or the runtime is stopping: nothing to restart.
                    _log.warning("agent %r was not restarted: %s", self.agent_id, exc)
                    await server.shutdown("start failed", graceful=False)
                    return
                self.adopt(server)
                return
            _log.error(
                "agent %r gave up: more than %d restarts within %s s; it is stopped",
                self.agent_id,
                runtime.max_restarts,
                runtime.max_seconds,
            )
        finally:
            if self.server is None or self.server.ended:
                self._finish()

    def _count_restart(self) -> bool:
        """Record a restart; False once the restart intensity is exceeded."""
        runtime = self.runtime
        times = self._restarts
        if times is None:
            times = self._restarts = deque(maxlen=runtime.max_restarts + 1)
        now = asyncio.get_running_loop().time()
        times.append(now)
        while times and now - times[0] > runtime.max_seconds:
            times.popleft()
        return len(times) <= runtime.max_restarts

    # -- ending the unit ---------------------------------------------------------------------------

    def close_now(self) -> bool:
        """:meth:`close` without awaiting, when nothing needs it (no sub-agents, no restart in
        progress, a quiet server); False, with nothing done, otherwise."""
        server = self.server
        if (
            self.stopping
            or self.ended
            or self.sub_units
            or self.supervisor is not None
            or (self._task is not None and not self._task.done())
            or server is None
            or server.ended
        ):
            return False
        self.stopping = True  # so that server_ended leaves the ending to us
        if not server.shutdown_nowait("shutdown"):
            self.stopping = False
            return False
        self._finish()
        return True

    async def close(self, *, children_first: bool) -> None:
        """End the whole unit gracefully: sub-agents and server (saving where configured).

        ``children_first`` is the shutdown order; a ``stop`` ends the server first.
        """
        if self.stopping:
            await self.wait_ended()
            return
        self.stopping = True
        try:
            task = self._task
            if task is not None and not task.done():
                await asyncio.wait({task})  # a restart or an ending in progress
            if self.ended:
                return
            if children_first:
                await self.end_children()
            server = self.server
            if server is not None and not server.ended:
                await _stop(server)
            await self.end_children()
        finally:
            self._finish()

    async def end_children(self) -> None:
        """Stop the sub-agents (latest first) and the ``sub_agents()`` supervisor."""
        while self.sub_units:
            _, unit = self.sub_units.popitem()
            try:
                await unit.close(children_first=True)
            except Exception:
                _log.exception("stopping sub-agent %r of %r failed", unit.agent_id, self.agent_id)
        supervisor, self.supervisor = self.supervisor, None
        ready, self._sup_ready = self._sup_ready, None
        if supervisor is not None and ready is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(ready)
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                try:
                    await supervisor.__aexit__(None, None, None)
                except Exception:
                    _log.exception("the sub-agents supervisor of %r failed", self.agent_id)

    def _finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.runtime.unit_ended(self)
        parent = self.parent
        if parent is not None and parent.sub_units and parent.sub_units.get(self.agent_id) is self:
            del parent.sub_units[self.agent_id]
        waiters, self._done = self._done, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def wait_ended(self) -> None:
        if self.ended:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._done is None:
            self._done = []
        self._done.append(waiter)
        await waiter

    # -- sub-agents ------------------------------------------------------------------------------

    def add_sub_unit(self, unit: AgentUnit) -> None:
        if self.sub_units is None:
            self.sub_units = {}
        self.sub_units[unit.agent_id] = unit

    async def sub_agent_supervisor(self) -> Supervisor:
        """The supervisor of arbitrary sub-agent children, started on first use."""
        supervisor, ready = self.supervisor, self._sup_ready
        if supervisor is None or ready is None or (ready.done() and not supervisor.running):
            supervisor = Supervisor(
                name=f"sub-agents of {self.agent_id}", strategy=Strategy.ONE_FOR_ONE
            )
            ready = asyncio.get_running_loop().create_future()
            self.supervisor, self._sup_ready = supervisor, ready
            try:
                await supervisor.__aenter__()
            except BaseException as exc:
                ready.set_exception(exc)
                ready.exception()  # retrieved here; other waiters re-raise it
                if self.supervisor is supervisor:
                    self.supervisor = self._sup_ready = None
                raise
            ready.set_result(None)
            return supervisor
        await asyncio.shield(ready)
        return supervisor


async def _stop(server: AgentServer) -> None:
    """Stop ``server`` gracefully within its shutdown timeout (+1 s), else at once."""
    try:
        async with asyncio.timeout(server.options.shutdown_timeout + 1.0):
            await server.shutdown("shutdown", graceful=True)
    except TimeoutError:
        _log.warning(
            "agent %r did not stop within %s s; cancelling it",
            server.agent_id,
            server.options.shutdown_timeout + 1.0,
        )
        await server.shutdown("shutdown", graceful=False)
