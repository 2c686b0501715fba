"""``Runtime``: the root of the supervision tree and the registry (rules L10–L16, L50–L63).

An application starts one runtime (e.g. in a FastAPI lifespan)::

    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, initial_state=state, inactivity_timeout=600)

The tree mirrors the seed's::

    Runtime
    ├── filesystems supervisor (one_for_one)
    │   └── FileSystemServer per scope    (permanent; shared by the agents of the scope)
    └── agents supervisor (one_for_one; its children are temporary)
        └── agent unit "<agent_id>" (rest_for_one)
            ├── AgentServer          (transient: restarted after a crash, not after a stop)
            └── sub-agents supervisor (started on first use: ``runtime.sub_agents(id)``)

Agents stop before the filesystems they use (reverse dependency order, L54).

Everything is owned by the runtime instance, so two runtimes can live in one process (one per
test). ``stop`` ends the whole unit, so the agent id can be started again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from sagents._errors import (
    AgentAlreadyRunning,
    AgentNotRunning,
    ChildAlreadyStarted,
    InvalidOption,
    RegistryUnavailable,
    SagentsError,
    SupervisorNotRunning,
)
from sagents._state import State
from sagents._status import Status
from sagents.events import Channel
from sagents.execution._agent import Agent
from sagents.middleware._file_store import FileStore
from sagents.runtime._child import ChildExited, SupervisorEvent
from sagents.runtime._context import capture_context
from sagents.runtime._filesystem_server import (
    FileStoreFactory,
    FileSystemServer,
    memory_file_store,
)
from sagents.runtime._handle import AgentHandle
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions
from sagents.runtime._registry import Registry
from sagents.runtime._server import AgentServer
from sagents.runtime._supervisor import (
    ChildNotFound,
    ChildSpec,
    RestartType,
    Strategy,
    Supervisor,
)
from sagents.runtime._watch import Watch

__all__ = ["Runtime"]

_log = logging.getLogger("sagents.runtime")


class Runtime:
    """Hosts agent servers: start, find, stop them; the registry and the supervision tree.

    Args:
        filesystem_store: ``async (scope) -> FileStore`` building the shared store of a
            ``filesystem_scope`` (default: in memory); e.g. a ``DiskFileStore`` per scope.
        max_restarts: restarts of one agent's server allowed within ``max_seconds`` before its
            unit gives up (the agent then stops; other agents are unaffected).
        max_seconds: the window of that restart intensity.
        shutdown_timeout: seconds ``shutdown()`` waits for each agent to stop gracefully.
    """

    def __init__(
        self,
        *,
        filesystem_store: FileStoreFactory = memory_file_store,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self._registry: Registry[AgentServer] = Registry()
        self._agents = Supervisor(
            name="agents", strategy=Strategy.ONE_FOR_ONE, on_event=self._agents_event
        )
        self._filesystems = Supervisor(name="filesystems", strategy=Strategy.ONE_FOR_ONE)
        self._filesystem_store = filesystem_store
        self._fs_servers: dict[Hashable, FileSystemServer] = {}
        self._fs_users: Counter[Hashable] = Counter()
        self._unit_scopes: dict[str, Hashable] = {}
        self._unit_supervisors: dict[str, Supervisor] = {}
        self._sub_agent_supervisors: dict[str, Supervisor] = {}
        self._unit_parents: dict[str, Supervisor] = {}  # unit id -> the supervisor it runs under
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._shutdown_timeout = shutdown_timeout
        self._units: dict[str, str] = {}  # agent id -> supervisor child id of its unit
        self._starting: set[str] = set()
        self._incarnations = itertools.count(1)
        self._reaper: asyncio.Task[None] | None = None
        self._to_reap: asyncio.Queue[tuple[str, Hashable]] = asyncio.Queue()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervision tree; the registry is available once this returns."""
        if self._started:
            return
        await self._filesystems.__aenter__()
        await self._agents.__aenter__()
        self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="sagents reaper")
        self._started = True
        self._registry.available = True

    async def shutdown(self) -> None:
        """Stop every agent gracefully (saving where configured), then the tree (L54)."""
        if not self._started:
            return
        self._registry.available = False  # lookups now raise RegistryUnavailable (L55)
        self._started = False
        try:
            await self._agents.__aexit__(None, None, None)
            await self._filesystems.__aexit__(None, None, None)
        finally:
            if self._reaper is not None:
                self._reaper.cancel()
                await asyncio.gather(self._reaper, return_exceptions=True)
                self._reaper = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def ready(self) -> bool:
        """Whether this runtime can host and route agents now (readiness probes, L56)."""
        return self._started and self._registry.available and self._agents.running

    # -- starting ----------------------------------------------------------------------------

    async def start_agent(
        self,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AgentHandle:
        """Start a server for ``agent``; returns once it is registered (L10).

        Args:
            agent: the agent configuration (from code, never from storage, L13).
            initial_state: a ``State`` or an ``export_state()`` dict to restore (L13).
            **options: see :class:`~sagents.runtime.AgentOptions` (L12).

        Raises:
            AgentAlreadyRunning: a server already runs this agent id.
            InvalidOption: an unknown or invalid option.
            StateError: ``initial_state`` is not a valid state.
            RegistryUnavailable: the runtime is not running.
        """
        return await self._start_unit(self._agents, agent, initial_state, options)

    async def start_sub_agent(
        self,
        parent_id: str,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AgentHandle:
        """Start ``agent`` as a sub-agent of ``parent_id``, under its sub-agents supervisor.

        The sub-agent is an agent like any other (registered, observable, stoppable) whose
        unit belongs to its parent's: stopping or restarting the parent ends it, and its crash
        never reaches the parent (L11, L53).

        Raises:
            AgentNotRunning: the parent is not running.
            AgentAlreadyRunning: a server already runs this agent id.
        """
        supervisor = await self.sub_agents(parent_id)
        return await self._start_unit(supervisor, agent, initial_state, options)

    async def _start_unit(
        self,
        parent: Supervisor,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> AgentHandle:
        if not isinstance(agent, Agent):
            raise InvalidOption(f"start_agent needs a sagents Agent, got {type(agent).__name__}")
        opts = AgentOptions.from_kwargs(options)
        if opts.context is None:
            # Request ids, tenant, tracing: what the caller had set is what the agent runs with.
            opts = dataclasses.replace(opts, context=capture_context())
        if initial_state is None:
            state = State(agent_id=agent.agent_id)
        elif isinstance(initial_state, State):
            state = initial_state
        else:
            state = State.from_dict(initial_state)
        agent_id = agent.agent_id
        if not self._registry.available:
            raise RegistryUnavailable("the runtime is not running; start it before agents")
        existing = self._registry.get(agent_id)
        if existing is not None and existing.closed:
            await existing.wait_ended()  # it is on its way out: start right after
            existing = self._registry.get(agent_id)
        if agent_id in self._starting or existing is not None:
            raise AgentAlreadyRunning(
                f"agent {agent_id!r} is already running; use runtime.agent({agent_id!r})"
            )
        self._starting.add(agent_id)
        unit_id = f"{agent_id}#{next(self._incarnations)}"
        scope = opts.filesystem_scope
        try:
            if scope is not None:
                await self._acquire_filesystem(scope)
                self._unit_scopes[unit_id] = scope
            try:
                self._unit_parents[unit_id] = parent
                await parent.start_child(
                    ChildSpec(
                        id=unit_id,
                        start=lambda: self._unit(unit_id, agent, state, opts),
                        restart=RestartType.TEMPORARY,
                        shutdown_timeout=None,
                    )
                )
            except BaseException:
                self._unit_parents.pop(unit_id, None)
                if self._unit_scopes.pop(unit_id, None) is not None:
                    self._release_filesystem(scope)
                raise
            self._units[agent_id] = unit_id
        finally:
            self._starting.discard(agent_id)
        return AgentHandle(self, agent_id)

    def _unit(self, unit_id: str, agent: Agent, state: State, options: AgentOptions) -> Supervisor:
        def server() -> AgentServer:
            return AgentServer(
                agent,
                state,
                options,
                on_registered=lambda s: self._registry.register(s.agent_id, s),
                on_ended=self._server_ended,
                services=_Services(self, options.filesystem_scope),
            )

        unit = Supervisor(
            name=f"agent {agent.agent_id}",
            strategy=Strategy.REST_FOR_ONE,
            max_restarts=self._max_restarts,
            max_seconds=self._max_seconds,
            children=[
                ChildSpec(
                    id="server",
                    start=server,
                    restart=RestartType.TRANSIENT,
                    shutdown_timeout=options.shutdown_timeout + 1.0,
                ),
            ],
        )
        self._unit_supervisors[unit_id] = unit
        return unit

    async def sub_agents(self, agent_id: str) -> Supervisor:
        """The supervisor of ``agent_id``'s sub-agents, started on first use (L11, L53).

        It sits in the agent's unit after the server (rest_for_one): a crash of the server
        restarts its sub-agents, a crash of a sub-agent never reaches the server, and stopping
        the agent stops them. Agents that never delegate never pay for it.

        Raises:
            AgentNotRunning: the agent is not running.
        """
        self._server(agent_id)
        unit_id = self._units.get(agent_id)
        unit = self._unit_supervisors.get(unit_id) if unit_id is not None else None
        if unit_id is None or unit is None:
            raise AgentNotRunning(f"agent {agent_id!r} is not running")
        current = self._sub_agent_supervisors.get(unit_id)
        if current is not None and current.running:
            return current

        def build() -> Supervisor:
            supervisor = Supervisor(name=f"sub-agents of {agent_id}", on_event=self._agents_event)
            self._sub_agent_supervisors[unit_id] = supervisor
            return supervisor

        with contextlib.suppress(ChildAlreadyStarted):
            await unit.start_child(
                ChildSpec(
                    id="sub_agents",
                    start=build,
                    restart=RestartType.PERMANENT,
                    shutdown_timeout=None,
                )
            )
        return self._sub_agent_supervisors[unit_id]

    def _server_ended(self, server: AgentServer, reason: str) -> None:
        self._registry.unregister(server.agent_id, server)
        if reason != "crash" and self._started:
            # A server that stopped by itself (inactivity, no viewers) leaves its unit behind;
            # the reaper ends it, so sub-agents never outlive their parent.
            unit_id = self._units.get(server.agent_id)
            if unit_id is not None:
                self._to_reap.put_nowait(("unit", unit_id))

    def _agents_event(self, event: SupervisorEvent) -> None:
        # However a unit ends (stop, self-stop, giving up), its scope loses a user.
        if isinstance(event, ChildExited) and isinstance(event.id, str):
            self._unit_supervisors.pop(event.id, None)
            self._sub_agent_supervisors.pop(event.id, None)
            self._unit_parents.pop(event.id, None)
            scope = self._unit_scopes.pop(event.id, None)
            if scope is not None:
                self._release_filesystem(scope)

    async def _reap(self) -> None:
        while True:
            kind, key = await self._to_reap.get()
            try:
                if kind == "unit":
                    await self._end_unit(str(key))
                elif self._fs_users[key] == 0:
                    self._fs_users.pop(key, None)
                    with contextlib.suppress(ChildNotFound):
                        await self._filesystems.terminate_child(("filesystem", key))
            except SupervisorNotRunning:
                return  # the runtime is shutting down: the supervisors end everything
            except Exception:
                _log.exception("ending %s %r failed", kind, key)

    # -- filesystem servers (L50, L53) --------------------------------------------------------

    async def _acquire_filesystem(self, scope: Hashable) -> None:
        self._fs_users[scope] += 1
        if scope in self._fs_servers:
            return
        try:
            await self._filesystems.start_child(
                ChildSpec(
                    id=("filesystem", scope),
                    start=lambda: FileSystemServer(
                        scope, self._filesystem_store, self._filesystem_ready
                    ),
                    restart=RestartType.PERMANENT,
                    shutdown_timeout=self._shutdown_timeout,
                )
            )
        except ChildAlreadyStarted:
            pass  # another start of this scope is bringing it up
        except BaseException:
            self._fs_users[scope] -= 1
            raise

    def _filesystem_ready(self, server: FileSystemServer) -> None:
        self._fs_servers[server.scope] = server

    def _release_filesystem(self, scope: Hashable) -> None:
        self._fs_users[scope] -= 1
        if self._fs_users[scope] <= 0:
            self._fs_servers.pop(scope, None)
            self._to_reap.put_nowait(("filesystem", scope))

    def filesystem(self, scope: Hashable) -> FileStore:
        """The shared store of ``scope`` while agents of that scope run.

        Raises:
            SagentsError: no agent of that scope runs.
        """
        server = self._fs_servers.get(scope)
        if server is None:
            raise SagentsError(f"no filesystem server runs for scope {scope!r}")
        return server.store

    async def _end_unit(self, unit_id: str) -> None:
        agent_id = unit_id.rpartition("#")[0]
        if self._units.get(agent_id) == unit_id:
            del self._units[agent_id]
        parent = self._unit_parents.get(unit_id, self._agents)
        with contextlib.suppress(ChildNotFound, SupervisorNotRunning):
            await parent.terminate_child(unit_id)

    # -- lookups (L55, L60–L63) ---------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentHandle:
        """A handle for a running agent.

        Raises:
            AgentNotRunning: no server runs ``agent_id``.
            RegistryUnavailable: the runtime is starting or stopping (retry; never start it).
        """
        server = self._registry.lookup(agent_id)
        if server is None or server.closed:
            raise AgentNotRunning(f"agent {agent_id!r} is not running")
        return AgentHandle(self, agent_id)

    def _server(self, agent_id: str) -> AgentServer:
        server = self._registry.lookup(agent_id)
        if server is None or server.closed:
            raise AgentNotRunning(f"agent {agent_id!r} is not running")
        return server

    async def get_status(self, agent_id: str) -> Status | None:
        """The agent's status, or None when it is not running (L60)."""
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.status

    def get_status_nowait(self, agent_id: str) -> Status | None:
        """:meth:`get_status` without awaiting (the registry is local)."""
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.status

    def agent_info_nowait(self, agent_id: str) -> AgentInfo | None:
        """:meth:`agent_info` without awaiting."""
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.info()

    async def agent_info(self, agent_id: str) -> AgentInfo | None:
        """A snapshot of the agent, or None when it is not running (L61)."""
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.info()

    def list_running_agents(self) -> list[str]:
        """Ids of the running agents (no agent is messaged, L63)."""
        return self._registry.ids()

    def agent_count(self) -> int:
        return self._registry.count()

    def list_agents_matching(self, pattern: str) -> list[str]:
        """Running agent ids matching a ``*`` glob, e.g. ``"conversation-*"``."""
        return self._registry.matching(pattern)

    # -- commands ------------------------------------------------------------------------------

    async def stop(self, agent_id: str, reason: str = "manual") -> None:
        """Stop the agent gracefully; returns once its whole unit is gone (L40–L43).

        Raises:
            AgentNotRunning: it is not running.
        """
        if not isinstance(reason, str) or not reason:
            raise InvalidOption("stop(reason=...) must be a non-empty string")
        server = self._server(agent_id)
        # AgentNotRunning here means it was already stopping: wait for it below.
        with contextlib.suppress(AgentNotRunning):
            await server.call(server.do_stop, reason)
        await server.wait_ended()
        unit_id = self._units.get(agent_id)
        if unit_id is not None:
            await self._end_unit(unit_id)

    async def cancel(self, agent_id: str) -> None:
        """Cancel the agent's run (L5).

        Raises:
            AgentNotRunning: it is not running.
            InvalidTransition: it has no run in progress.
        """
        server = self._server(agent_id)
        await server.call(server.do_cancel)

    async def export_state(self, agent_id: str) -> dict[str, Any]:
        """The agent's state as versioned JSON (L45); counts as activity."""
        return await AgentHandle(self, agent_id).export_state()

    def watch(self, agent_id: str, channel: Channel = "main") -> Watch:
        """A durable subscription: pending until the agent runs, kept across restarts (L81)."""
        return Watch(self._registry, agent_id, channel)


class _Services(Mapping[str, Any]):
    """What an agent's tools may use (``ToolContext.services``), resolved at each access."""

    def __init__(self, runtime: Runtime, scope: Hashable | None) -> None:
        self._runtime = runtime
        self._scope = scope

    def _keys(self) -> list[str]:
        return ["runtime"] if self._scope is None else ["runtime", "filesystem"]

    def __getitem__(self, key: str) -> Any:
        if key == "runtime":
            return self._runtime
        if key == "filesystem" and self._scope is not None:
            return self._runtime.filesystem(self._scope)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())
