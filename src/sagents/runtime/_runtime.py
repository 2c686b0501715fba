"""``Runtime``: the root of the supervision tree and the registry.

An application starts one runtime (e.g. in a FastAPI lifespan)::

    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, initial_state=state, inactivity_timeout=600)

The tree mirrors Sagents' supervision tree::

    Runtime
    ├── filesystems supervisor (one_for_one)
    │   └── FileSystemServer per scope    (permanent; shared by the agents of the scope)
    └── agent unit per agent id (rest_for_one, see ``_unit.py``)
        ├── AgentServer          (transient: restarted after a crash, not after a stop)
        └── sub-agents: units started by ``start_sub_agent``, and the supervisor of
            ``runtime.sub_agents(id)`` (started on first use)

An agent unit is not a supervisor task but a plain object the runtime owns, with the same
guarantees (restart intensity, rest_for_one, isolation): a fleet of idle agents costs no task
per agent. Starting an agent that needs no async initialisation (no presence tracking, no
``on_server_start`` hook, no new filesystem scope) is synchronous: build, register, return.

Agents stop before the filesystems they use (reverse dependency order).

Everything is owned by the runtime instance, so two runtimes can live in one process (one per
test). ``stop`` ends the whole unit, so the agent id can be started again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self, Unpack

from sagents._errors import (
    AgentAlreadyRunning,
    AgentNotRunning,
    ChildAlreadyStarted,
    ConfigurationError,
    InvalidOption,
    RegistryUnavailable,
    SagentsError,
    SupervisorNotRunning,
)
from sagents._files import FileStore
from sagents._resource import AsyncResource
from sagents._state import State
from sagents._status import Status
from sagents.events import Channel
from sagents.execution._agent import Agent
from sagents.execution._host import AgentHost
from sagents.runtime._context import capture_context
from sagents.runtime._filesystem_server import (
    FileStoreFactory,
    FilesystemGuard,
    FileSystemServer,
    default_filesystem_scope,
    file_store_factory,
    shared_scope,
)
from sagents.runtime._handle import AgentHandle
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import AgentOptions, StartOptions
from sagents.runtime._ownership import Ownership, default_owner_id
from sagents.runtime._registry import Registry, glob_pattern
from sagents.runtime._server import AgentServer
from sagents.runtime._supervisor import (
    ChildNotFound,
    ChildSpec,
    RestartType,
    Strategy,
    Supervisor,
)
from sagents.runtime._unit import AgentUnit
from sagents.runtime._watch import Watch

if TYPE_CHECKING:
    from sagents.runtime._backend import Backend

__all__ = ["Runtime"]

_log = logging.getLogger("sagents.runtime")

#: Agents stopped concurrently by ``shutdown()`` (bounded, so a million idle agents do not mean
#: a million stop tasks at once).
_SHUTDOWN_BATCH = 256

_PLAIN = frozenset({type(None), bool, int, float, str})
_OPTIONS_CACHE_SIZE = 128


class Runtime(AsyncResource):
    """Hosts agent servers: start, find, stop them; the registry and the supervision tree.

    Args:
        filesystem_store: ``async (scope) -> FileStore`` building the store of a filesystem
            scope, e.g. a ``DiskFileStore`` per scope: of each ``filesystem_scope`` agents are
            started with, and of each conversation whose agent needs files (the scope is then a
            ``ConversationFiles``). Default: a conversation's files live in its
            ``agent_persistence`` when that stores files (both shipped adapters do), other
            scopes in memory.
        max_restarts: restarts of one agent's server allowed within ``max_seconds`` before its
            unit gives up (the agent then stops; other agents are unaffected).
        max_seconds: the window of that restart intensity.
        shutdown_timeout: seconds ``shutdown()`` waits for each agent to stop gracefully.
        owner_id: how this runtime names itself in the ownership leases it takes (see
            ``AgentOptions.lease_ttl``); default ``host:pid:random``, unique per runtime.
        backend: run the agents elsewhere, e.g. ``sagents.ray.RayBackend()`` (every core of a
            machine, or a cluster). This runtime is then its client: starts, lookups, handles,
            subscriptions and health checks go to the backend's hosts, each of which runs an
            in-process runtime built with the other arguments. Default: in this process.
    """

    def __init__(
        self,
        *,
        filesystem_store: FileStoreFactory | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        shutdown_timeout: float = 30.0,
        owner_id: str | None = None,
        backend: Backend | None = None,
    ) -> None:
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigurationError("Runtime: max_restarts must be an int >= 0")
        if not max_seconds > 0:  # also rejects NaN
            raise ConfigurationError("Runtime: max_seconds must be > 0")
        if owner_id is not None and (not isinstance(owner_id, str) or not 0 < len(owner_id) < 256):
            raise ConfigurationError("Runtime: owner_id must be a string of 1 to 255 characters")
        self._ownership = Ownership(owner_id or default_owner_id())
        self._registry: Registry[AgentServer] = Registry()
        self._filesystems = Supervisor(name="filesystems", strategy=Strategy.ONE_FOR_ONE)
        self._filesystem_store = filesystem_store
        self._fs_servers: dict[Hashable, FileSystemServer] = {}
        self._fs_users: Counter[Hashable] = Counter()
        self._fs_guard: FilesystemGuard | None = None
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._shutdown_timeout = shutdown_timeout
        self._units: dict[str, AgentUnit] = {}  # agent id -> its running unit, in start order
        self._unit_tasks: set[asyncio.Task[None]] = set()  # restarts and endings in progress
        self._services: _Services | None = None  # shared by the agents without a scope
        self._options_cache: dict[tuple[tuple[str, type, Any], ...], AgentOptions] = {}
        self._starting: set[str] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._to_reap: asyncio.Queue[Hashable] = asyncio.Queue()
        self._started = False
        self._unit_host = _UnitHost(self)
        self._backend = backend

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the supervision tree; the registry is available once this returns."""
        if self._started:
            return
        if self._backend is not None:
            await self._backend.start(self)
        await self._filesystems.__aenter__()
        self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="sagents reaper")
        self._started = True
        self._registry.available = True

    async def shutdown(self) -> None:
        """Stop every agent gracefully (saving where configured), then the tree."""
        if not self._started:
            return
        self._registry.available = False  # lookups now raise RegistryUnavailable
        self._started = False
        try:
            # Latest first. Quiet idle agents (nothing to save or wait for) stop at once; the
            # others a batch at a time, each unit its sub-agents first, then its server.
            units = [
                unit
                for unit in reversed(list(self._units.values()))
                if unit.parent is None and not unit.close_now()
            ]
            units.reverse()
            for end in range(len(units), 0, -_SHUTDOWN_BATCH):
                batch = units[max(0, end - _SHUTDOWN_BATCH) : end]
                results = await asyncio.gather(
                    *(unit.close(children_first=True) for unit in reversed(batch)),
                    return_exceptions=True,
                )
                for unit, result in zip(reversed(batch), results, strict=True):
                    if isinstance(result, BaseException):
                        _log.error("stopping agent %r failed", unit.agent_id, exc_info=result)
            while self._unit_tasks:  # units that were ending (or restarting) by themselves
                await asyncio.gather(*self._unit_tasks, return_exceptions=True)
            await self._ownership.aclose()
            await self._filesystems.__aexit__(None, None, None)
            if self._backend is not None:
                await self._backend.shutdown()
        finally:
            if self._reaper is not None:
                self._reaper.cancel()
                await asyncio.gather(self._reaper, return_exceptions=True)
                self._reaper = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def aclose(self) -> None:
        """The same as :meth:`shutdown` (so ``async with Runtime()`` ends with one)."""
        await self.shutdown()

    @property
    def backend(self) -> Backend | None:
        """Where the agents run when not in this process (None: here)."""
        return self._backend

    @property
    def owner_id(self) -> str:
        """How this runtime names itself in ownership leases (``host:pid:random``)."""
        return self._ownership.owner_id

    def ready(self) -> bool:
        """Whether this runtime can host and route agents now (readiness probes)."""
        local = self._started and self._registry.available and self._filesystems.running
        return local and (self._backend is None or self._backend.ready())

    # -- starting ----------------------------------------------------------------------------

    async def start_agent(
        self,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
    ) -> AgentHandle:
        """Start a server for ``agent``; returns once it is registered.

        Args:
            agent: the agent configuration (from code, never from storage).
            initial_state: a ``State`` or an ``export_state()`` dict to restore.
            **options: see :class:`~sagents.runtime.AgentOptions`.

        Raises:
            AgentAlreadyRunning: a server already runs this agent id.
            InvalidOption: an unknown or invalid option.
            StateError: ``initial_state`` is not a valid state.
            RegistryUnavailable: the runtime is not running.
        """
        if self._backend is not None:
            self._registry.check()
            return await self._backend.start_agent(self, agent, initial_state, options)
        return await self._start_unit(None, agent, initial_state, options)

    async def start_sub_agent(
        self,
        parent_id: str,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None = None,
        **options: Unpack[StartOptions],
    ) -> AgentHandle:
        """Start ``agent`` as a sub-agent of ``parent_id``, in the parent's unit.

        The sub-agent is an agent like any other (registered, observable, stoppable) whose
        unit belongs to its parent's: stopping or restarting the parent ends it, and its crash
        never reaches the parent. Unless ``filesystem_scope`` is given, it shares
        its parent's, so both see the same files.

        Raises:
            AgentNotRunning: the parent is not running.
            AgentAlreadyRunning: a server already runs this agent id.
        """
        self._local_only("start_sub_agent")
        parent_server = self._server(parent_id)
        parent = self._units.get(parent_id)
        if parent is None or parent.ended or parent.stopping:
            raise AgentNotRunning(f"agent {parent_id!r} is not running")
        options.setdefault("filesystem_scope", parent_server.options.filesystem_scope)
        return await self._start_unit(parent, agent, initial_state, options)

    async def _start_unit(
        self,
        parent: AgentUnit | None,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None,
        options: StartOptions,
    ) -> AgentHandle:
        unit = self._new_unit(parent, agent, initial_state, options)
        await self._check_id_free(unit)
        server: AgentServer | None = None
        if unit.options.filesystem_scope is None:
            server = unit.new_server()
            if not await _start(server):
                # The common case, synchronous: nothing was awaited, so nothing can have
                # interleaved since the checks.
                self._registry.register(unit.agent_id, server)
                self._adopt(unit, server)
                return AgentHandle(self, unit.agent_id)
        await self._start_slowly(unit, server)
        return AgentHandle(self, unit.agent_id)

    def _new_unit(
        self,
        parent: AgentUnit | None,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None,
        options: StartOptions,
    ) -> AgentUnit:
        """The unit of a start, from validated arguments (nothing is registered yet)."""
        if not isinstance(agent, Agent):
            raise InvalidOption(f"start_agent needs a sagents Agent, got {type(agent).__name__}")
        context = options.pop("context", None)
        opts = self._options(options)
        if opts.filesystem_scope is None:
            # Files belong to the conversation unless a scope to share was asked for.
            files = default_filesystem_scope(agent, opts)
            if files is not None:
                opts = dataclasses.replace(opts, filesystem_scope=files)
        if context is None:
            # Request ids, tenant, tracing: what the caller had set is what the agent runs with.
            context = capture_context()
        elif not isinstance(context, contextvars.Context):
            raise InvalidOption("context must be a contextvars.Context (copy_context()) or None")
        if initial_state is None:
            state = State(agent_id=agent.agent_id)
        elif isinstance(initial_state, State):
            state = initial_state
        else:
            state = State.from_dict(initial_state)
        return AgentUnit(self._unit_host, parent, agent, state, opts, context)

    async def _check_id_free(self, unit: AgentUnit) -> None:
        """Raise unless ``unit``'s agent id can start now; a server still on its way out is
        waited for (without awaiting otherwise)."""
        agent_id, parent = unit.agent_id, unit.parent
        if not self._registry.available:
            raise RegistryUnavailable("the runtime is not running; start it before agents")
        existing = self._registry.get(agent_id)
        if existing is not None and existing.closed:
            await existing.wait_ended()  # it is on its way out: start right after
            existing = self._registry.get(agent_id)
            # Anything may have happened meanwhile (a shutdown, the parent stopping).
            if not self._registry.available:
                raise RegistryUnavailable("the runtime is stopping; it takes no new agents")
            if parent is not None and (parent.ended or parent.stopping):
                raise AgentNotRunning(f"agent {parent.agent_id!r} is not running")
        if agent_id in self._starting or existing is not None:
            raise AgentAlreadyRunning(
                f"agent {agent_id!r} is already running; use runtime.agent({agent_id!r})"
            )

    async def _start_slowly(self, unit: AgentUnit, server: AgentServer | None) -> None:
        """The start that awaits: a filesystem scope to bring up, then ``server`` (made here
        when None) to initialise; the id is reserved meanwhile. On failure nothing is left."""
        agent_id, scope = unit.agent_id, unit.options.filesystem_scope
        self._starting.add(agent_id)
        try:
            if scope is not None:
                await self._acquire_filesystem(scope, unit.options)
            try:
                server = await self._initialised(unit, server)
                await self._register(unit, server)
            except BaseException:
                if scope is not None:
                    self._release_filesystem(scope)
                raise
            self._adopt(unit, server)
        finally:
            self._starting.discard(agent_id)

    @staticmethod
    async def _initialised(unit: AgentUnit, server: AgentServer | None) -> AgentServer:
        if server is None:
            server = unit.new_server()
            if not await _start(server):
                return server
        await server.initialise()  # on failure, nothing of it is left
        return server

    async def _register(self, unit: AgentUnit, server: AgentServer) -> None:
        """Register a server started slowly: anything may have happened meanwhile."""
        parent = unit.parent
        try:
            if parent is not None and (parent.ended or parent.stopping):
                raise AgentNotRunning(f"agent {parent.agent_id!r} stopped meanwhile")
            self._registry.register(unit.agent_id, server)
        except BaseException:
            await server.shutdown("start failed", graceful=False)
            raise

    def _options(self, options: Mapping[str, object]) -> AgentOptions:
        """Validated options; equal plain ones (numbers, strings) are built once and shared."""
        try:
            # Types too: 1 == 1.0 == True, but only some of them are valid for an option.
            key = tuple((name, type(value), value) for name, value in options.items())
            cached = self._options_cache.get(key)
        except TypeError:  # an unhashable value (a dict, a list): no sharing
            return AgentOptions.from_kwargs(options)
        if cached is not None:
            return cached
        opts = AgentOptions.from_kwargs(options)
        if all(kind in _PLAIN for _, kind, _ in key):
            # Only plain values: a key never keeps a callback or a subscription alive.
            if len(self._options_cache) >= _OPTIONS_CACHE_SIZE:
                self._options_cache.clear()
            self._options_cache[key] = opts
        return opts

    def _adopt(self, unit: AgentUnit, server: AgentServer) -> None:
        self._units[unit.agent_id] = unit
        if unit.parent is not None:
            unit.parent.add_sub_unit(unit)
        unit.adopt(server)

    def _services_for(self, scope: Hashable | None) -> _Services:
        if scope is not None:
            return _Services(self, scope)  # scopes come and go: not kept
        services = self._services
        if services is None:
            services = self._services = _Services(self, None)
        return services

    async def sub_agents(self, agent_id: str) -> Supervisor:
        """The supervisor of ``agent_id``'s sub-agents, started on first use.

        It belongs to the agent's unit, after the server (rest_for_one): a crash of the server
        ends its sub-agents, a crash of a sub-agent never reaches the server, and stopping the
        agent stops them. Agents that never delegate never pay for it.

        Raises:
            AgentNotRunning: the agent is not running.
        """
        self._local_only("sub_agents")
        self._server(agent_id)
        unit = self._units.get(agent_id)
        if unit is None or unit.ended or unit.stopping:
            raise AgentNotRunning(f"agent {agent_id!r} is not running")
        return await unit.sub_agent_supervisor()

    async def _reap(self) -> None:
        while True:
            scope = await self._to_reap.get()
            try:
                if self._fs_users[scope] == 0:
                    self._fs_users.pop(scope, None)
                    self._fs_servers.pop(scope, None)
                    with contextlib.suppress(ChildNotFound):
                        await self._filesystems.terminate_child(("filesystem", scope))
                    # Unless a start of the scope came meanwhile (its claim is this one).
                    guard = self._fs_guard
                    if guard is not None and shared_scope(scope) and not self._fs_users[scope]:
                        guard.release(scope)
            except SupervisorNotRunning:
                return  # the runtime is shutting down: the supervisor ends everything
            except Exception:
                _log.exception("ending the filesystem server %r failed", scope)

    # -- filesystem servers -------------------------------------------------------------------

    async def _acquire_filesystem(self, scope: Hashable, options: AgentOptions) -> None:
        self._fs_users[scope] += 1
        if scope in self._fs_servers:
            return
        factory = file_store_factory(
            scope, options, self._filesystem_store, ownership=self._ownership
        )
        guard = self._fs_guard if shared_scope(scope) else None
        try:
            if guard is not None:
                await guard.claim(scope)
            await self._filesystems.start_child(
                ChildSpec(
                    id=("filesystem", scope),
                    start=lambda: FileSystemServer(scope, factory, self._filesystem_ready),
                    restart=RestartType.PERMANENT,
                    shutdown_timeout=self._shutdown_timeout,
                )
            )
        except ChildAlreadyStarted:
            pass  # another start of this scope is bringing it up
        except BaseException:
            self._fs_users[scope] -= 1
            if guard is not None and self._fs_users[scope] <= 0 and scope not in self._fs_servers:
                self._fs_users.pop(scope, None)
                guard.release(scope)  # no other start of it here is under way
            raise

    def _filesystem_ready(self, server: FileSystemServer) -> None:
        self._fs_servers[server.scope] = server

    def _release_filesystem(self, scope: Hashable) -> None:
        self._fs_users[scope] -= 1
        if self._fs_users[scope] <= 0:
            # Still registered until the reaper ends it: an agent of this scope starting
            # meanwhile (a conversation restarted at once) finds the server and keeps it.
            self._to_reap.put_nowait(scope)

    def filesystem(self, scope: Hashable) -> FileStore:
        """The store of ``scope`` while agents of that scope run: a ``filesystem_scope``, or a
        conversation's ``ConversationFiles`` (e.g. ``ConversationFiles(scope=tenant,
        conversation_id=...)``).

        With a backend, the store of the scope on whichever process runs its agents; as that
        takes a call to find out, its operations (rather than this lookup) raise the
        ``SagentsError`` while no agent of that scope runs.

        Raises:
            SagentsError: no agent of that scope runs.
        """
        if self._backend is not None:
            return self._backend.filesystem(scope)
        server = self._fs_servers.get(scope)
        if server is None or server.stopping:
            raise SagentsError(f"no filesystem server runs for scope {scope!r}")
        return server.store

    # -- lookups ------------------------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentHandle:
        """A handle for a running agent.

        Raises:
            AgentNotRunning: no server runs ``agent_id``.
            RegistryUnavailable: the runtime is starting or stopping (retry; never start it).
        """
        server = self._registry.lookup(agent_id)
        if server is None or server.closed:
            if self._backend is not None:
                return self._backend.handle(self, agent_id)
            raise AgentNotRunning(f"agent {agent_id!r} is not running")
        return AgentHandle(self, agent_id)

    def _top_level_agents(self) -> list[str]:
        """The agents started by ``start_agent`` (not sub-agents), in start order."""
        return [agent_id for agent_id, unit in self._units.items() if unit.parent is None]

    def _local_only(self, what: str) -> None:
        if self._backend is not None:
            raise ConfigurationError(
                f"runtime.{what} answers about agents of this process only, and this runtime "
                "runs its agents on a backend: use the async form (e.g. await "
                "runtime.agent_info(...)) or call it where the agent runs"
            )

    def _server(self, agent_id: str) -> AgentServer:
        server = self._registry.lookup(agent_id)
        if server is None or server.closed:
            raise AgentNotRunning(f"agent {agent_id!r} is not running")
        return server

    async def get_status(self, agent_id: str) -> Status | None:
        """The agent's status, or None when it is not running."""
        if self._backend is not None:
            info = await self.agent_info(agent_id)
            return None if info is None else info.status
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.status

    def get_status_nowait(self, agent_id: str) -> Status | None:
        """:meth:`get_status` without awaiting (the registry is local)."""
        self._local_only("get_status_nowait")
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.status

    def agent_info_nowait(self, agent_id: str) -> AgentInfo | None:
        """:meth:`agent_info` without awaiting."""
        self._local_only("agent_info_nowait")
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.info()

    async def agent_info(self, agent_id: str) -> AgentInfo | None:
        """A snapshot of the agent, or None when it is not running."""
        if self._backend is not None:
            self._registry.check()
            return await self._backend.agent_info(agent_id)
        server = self._registry.lookup(agent_id)
        return None if server is None or server.closed else server.info()

    async def agent_infos(self) -> list[AgentInfo]:
        """What :meth:`agent_info` reports, for every running agent, sub-agents included
        (with a backend, of the whole cluster, each with its ``node``); never counts as
        activity."""
        if self._backend is not None:
            self._registry.check()
            return await self._backend.agent_infos()
        servers = (self._registry.lookup(agent_id) for agent_id in self._registry.ids())
        return [server.info() for server in servers if server is not None and not server.closed]

    def list_running_agents(self) -> list[str]:
        """Ids of the running agents (no agent is messaged); with a backend, of the whole
        cluster."""
        if self._backend is not None:
            self._registry.check()
            return self._backend.running_agents()
        return self._registry.ids()

    def agent_count(self) -> int:
        if self._backend is not None:
            return len(self.list_running_agents())
        return self._registry.count()

    def list_agents_matching(self, pattern: str) -> list[str]:
        """Running agent ids matching a ``*`` glob, e.g. ``"conversation-*"``."""
        if self._backend is not None:
            regex = glob_pattern(pattern)
            return [i for i in self.list_running_agents() if regex.fullmatch(i)]
        return self._registry.matching(pattern)

    def follow_registry(self, listener: Callable[[str, bool], None] | None) -> None:
        """Call ``listener(agent_id, True)`` when an agent server registers and
        ``listener(agent_id, False)`` when it leaves, synchronously, in order (a distributed
        backend's host keeps its directory current this way); None stops it."""
        self._registry.listener = listener

    def guard_filesystems(self, guard: FilesystemGuard | None) -> None:
        """Ask ``guard.claim(scope)`` before a shared filesystem scope (a ``filesystem_scope``
        start option, not a conversation's own files) is brought up here, and call
        ``guard.release(scope)`` once it has ended; a claim that raises fails the start with
        its error. A distributed backend's host keeps each scope's files in one process this
        way. None removes the guard."""
        self._fs_guard = guard

    def inventory(self) -> dict[str, list[Hashable]]:
        """What this runtime holds now, by kind: a read-only probe for leak checks (tests,
        diagnostics). Never raises, also while the runtime starts or stops.

        - ``agents``: ids of the registered agent servers;
        - ``units``: ids of the agent units (a unit restarting its crashed server is listed
          here while its agent is not registered);
        - ``watches``: agent ids that :meth:`watch` subscriptions wait on;
        - ``unit_tasks``: the restarts and endings of units in progress (their tasks);
        - ``leases``: per persistence store the runtime renews leases in, the conversation ids
          it holds there;
        - ``filesystems``: the scopes with a filesystem server.

        An agent that has ended (stopped, expired, given up after crashes) and whose unit has
        finished ending leaves nothing in ``agents``, ``units`` or ``unit_tasks``; after
        :meth:`shutdown` every list is empty, once the watches are closed.
        """
        return {
            "agents": list(self._registry.registered()),
            "units": list(self._units),
            "watches": list(self._registry.watched()),
            "unit_tasks": list(self._unit_tasks),
            "leases": list(self._ownership.held()),
            "filesystems": list(self._fs_servers),
        }

    # -- commands ------------------------------------------------------------------------------

    async def stop(self, agent_id: str, reason: str = "manual") -> None:
        """Stop the agent gracefully; returns once its whole unit is gone.

        Raises:
            AgentNotRunning: it is not running.
        """
        if not isinstance(reason, str) or not reason:
            raise InvalidOption("stop(reason=...) must be a non-empty string")
        if self._backend is not None:
            await self.agent(agent_id).stop(reason)
            return
        server = self._server(agent_id)
        await server.shutdown(reason, graceful=True)  # if it is already ending, waits for it
        unit = server._unit
        if isinstance(unit, AgentUnit):
            await unit.close(children_first=False)  # its sub-agents, a restart in progress

    async def cancel(self, agent_id: str) -> None:
        """Cancel the agent's run.

        Raises:
            AgentNotRunning: it is not running.
            InvalidTransition: it has no run in progress.
        """
        await self.agent(agent_id).cancel()

    async def export_state(self, agent_id: str) -> dict[str, Any]:
        """The agent's state as versioned JSON; counts as activity."""
        return await self.agent(agent_id).export_state()

    def watch(self, agent_id: str, channel: Channel = "main") -> Watch:
        """A durable subscription: pending until the agent runs, kept across restarts (with a
        backend: on whichever host runs it)."""
        if self._backend is not None:
            return self._backend.watch(agent_id, channel)
        return Watch(self._registry, agent_id, channel)


async def _start(server: AgentServer) -> bool:
    """``server.start()``, undone if it raises (e.g. a broken initial subscriber)."""
    try:
        return server.start()
    except BaseException:
        await server.shutdown("start failed", graceful=False)
        raise


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


if TYPE_CHECKING:

    def _implements_agent_host(runtime: Runtime) -> AgentHost:
        return runtime  # mypy checks here that Runtime is what middleware expect of a host


class _UnitHost:
    """The runtime as its agent units see it (:class:`~sagents.runtime._unit.UnitHost`): a
    narrow interface, so that a unit depends on what it uses, not on the runtime's insides."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def running(self) -> bool:
        return self._runtime._started

    @property
    def ownership(self) -> Ownership:
        return self._runtime._ownership

    @property
    def max_restarts(self) -> int:
        return self._runtime._max_restarts

    @property
    def max_seconds(self) -> float:
        return self._runtime._max_seconds

    def services_for(self, scope: Hashable | None) -> Mapping[str, Any]:
        return self._runtime._services_for(scope)

    def register(self, agent_id: str, server: AgentServer) -> None:
        self._runtime._registry.register(agent_id, server)

    def unregister(self, agent_id: str, server: AgentServer) -> None:
        self._runtime._registry.unregister(agent_id, server)

    def is_current(self, unit: AgentUnit) -> bool:
        return self._runtime._units.get(unit.agent_id) is unit

    def unit_ended(self, unit: AgentUnit) -> None:
        runtime = self._runtime
        if runtime._units.get(unit.agent_id) is unit:
            del runtime._units[unit.agent_id]
            if not runtime._units:
                runtime._units = {}  # a dict never shrinks: give the table of a wave back
        scope = unit.options.filesystem_scope
        if scope is not None:
            runtime._release_filesystem(scope)

    def own(self, task: asyncio.Task[None]) -> None:
        tasks = self._runtime._unit_tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
