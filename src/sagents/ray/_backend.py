"""``RayBackend``: a runtime's agents on the hosts of a Ray cluster.

``Runtime(backend=RayBackend())`` makes the runtime a client of the cluster: each agent runs on
one :class:`~sagents.ray._host.Host` actor (one per core by default, each holding many agents),
the :class:`~sagents.ray._directory.Directory` keeps at most one agent per id cluster-wide, and
handles and subscriptions route to the host that runs the agent. With no ``address`` a local
Ray is started: the embedded way to use every core of one machine.

Calls that reach no host (its process or node died, or the call timed out) raise
:class:`~sagents.AgentUnavailable`, never a hang and never "not running"; a dead host is
forgotten by the directory, and the next ``Session.ensure_running`` restarts its agents on a
live host from their persisted state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import ray
from ray import cloudpickle

from sagents._errors import (
    AgentNotRunning,
    AgentUnavailable,
    ConfigurationError,
    InvalidOption,
    SagentsError,
)
from sagents._files import FileStore
from sagents._state import State
from sagents.events import Channel
from sagents.execution._agent import Agent
from sagents.ray._calls import CallBatcher
from sagents.ray._directory import DIRECTORY_NAME, Directory
from sagents.ray._feed import FeedLink
from sagents.ray._files import FilesNotHere, RemoteFileStore
from sagents.ray._handle import RemoteAgentHandle, RemoteSubscription, RemoteWatch
from sagents.ray._host import ConfigMissing, FilesOpenElsewhere, Host
from sagents.ray._shared import SharedMissing, SharedPickler
from sagents.runtime._handle import AgentHandle
from sagents.runtime._info import AgentInfo
from sagents.runtime._options import StartOptions
from sagents.runtime._publisher import Subscription
from sagents.runtime._watch import Watch

if TYPE_CHECKING:
    from sagents.runtime._runtime import Runtime
    from sagents.session._config import SessionConfig

__all__ = ["RayBackend"]

_log = logging.getLogger("sagents.ray")

_PLACEMENTS = ("least_loaded", "hash")

T = TypeVar("T")

#: How many hosts a start tries before giving up (each refusal names the next one).
_PLACEMENT_ATTEMPTS = 20
#: Session methods that start the agent or find it running: sent again to another host when
#: theirs died (whatever they did there died with it).
_IDEMPOTENT = frozenset({"start", "ensure_running"})


class _HostDied(AgentUnavailable):
    """A host died; ``sent``: a call had been sent to it (else nothing reached it)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


#: Feed items a host may send ahead of this process's reading (each carries every event
#: pending for it, so a few suffice; past them the host's subscriptions overflow).
_FEED_AHEAD = 8

#: The resource only the head node of a Ray cluster has.
_HEAD_RESOURCE = "node:__internal_head__"

#: The hosts' collector thresholds by default (``gc.set_threshold``): a young collection per
#: 100,000 net allocations instead of 700, as ``docs/reliability.md`` advises.
HOST_GC_THRESHOLDS = (100_000, 20, 100)


class RayBackend:
    """Run a runtime's agents on a Ray cluster (see the module docstring).

    Args:
        address: the cluster (``"ray://..."``, ``"auto"``, a head's ``host:port``); None starts
            a local Ray in this process when none is connected.
        hosts: how many host actors the cluster should have; default one per CPU of the
            cluster. Hosts are named, detached actors: every process using the namespace
            shares them, and the first to start creates them.
        namespace: the Ray namespace of the directory and the hosts (one deployment each).
        placement: ``"least_loaded"`` (the host with the fewest agents) or ``"hash"`` (by the
            agent id: the same host while the hosts stay).
        host_cpus: CPUs each host reserves (1: one host per core).
        node_labels: run the hosts only on nodes with these Ray labels (e.g.
            ``{"sagents": "agents"}`` for nodes started with ``ray start --labels``); with
            ``placement="hash"`` a conversation stays on its host while the hosts stay.
        call_timeout: seconds a call to a host may take before it raises
            :class:`~sagents.AgentUnavailable` (None: no limit).
        stream_window: events a subscription may have on their way to its reader, on the
            host and in this process, before it overflows as in one process.
        stop_hosts: stop the hosts (gracefully: agents are saved) at shutdown; default when
            this backend started Ray itself.
        runtime_options: the hosts' in-process ``Runtime`` arguments (``max_restarts``...).
        init_options: more ``ray.init`` arguments.
        host_gc_thresholds: the cyclic collector's thresholds in each host process, set once
            it has started, with what the start-up made frozen (``gc.freeze()``): a host is
            sagents' own process, holding many conversations, and Python's defaults collect
            far too often for it (W4 on two hosts: 715 turns/s with them, 839 tuned). None
            leaves the hosts' collector alone.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        hosts: int | None = None,
        namespace: str = "sagents",
        placement: str = "least_loaded",
        host_cpus: float = 1.0,
        node_labels: Mapping[str, str] | None = None,
        call_timeout: float | None = 30.0,
        stream_window: int = 256,
        stop_hosts: bool | None = None,
        runtime_options: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None,
        host_gc_thresholds: tuple[int, int, int] | None = HOST_GC_THRESHOLDS,
    ) -> None:
        if placement not in _PLACEMENTS:
            raise ConfigurationError(
                f"RayBackend: placement must be one of {', '.join(_PLACEMENTS)}, got {placement!r}"
            )
        if hosts is not None and (
            isinstance(hosts, bool) or not isinstance(hosts, int) or hosts < 1
        ):
            raise ConfigurationError("RayBackend: hosts must be an int >= 1 (or None)")
        if call_timeout is not None and not call_timeout > 0:
            raise ConfigurationError("RayBackend: call_timeout must be > 0 (or None)")
        if not isinstance(stream_window, int) or stream_window < 1:
            raise ConfigurationError("RayBackend: stream_window must be an int >= 1")
        if host_gc_thresholds is not None and (
            not isinstance(host_gc_thresholds, tuple)
            or len(host_gc_thresholds) != 3
            or not all(isinstance(t, int) and t >= 0 for t in host_gc_thresholds)
        ):
            raise ConfigurationError(
                "RayBackend: host_gc_thresholds must be three ints >= 0 (gc.set_threshold's "
                "arguments) or None"
            )
        self._host_gc_thresholds = host_gc_thresholds
        self._address = address
        self._host_count = hosts
        self._namespace = namespace
        self._placement = placement
        self._host_cpus = host_cpus
        self._node_labels = dict(node_labels or {})
        self._call_timeout = call_timeout
        self._stream_window = stream_window
        self._stop_hosts = stop_hosts
        self._runtime_options = dict(runtime_options or {})
        self._init_options = dict(init_options or {})
        self._started_ray = False
        self._directory: Any = None
        self._hosts: dict[str, Any] = {}  # host name -> actor handle
        self._mirror: dict[str, str] = {}  # agent id -> host name (the directory, as known)
        self._mirror_version = -1
        self._mirror_task: asyncio.Task[None] | None = None
        self._mirror_ready: asyncio.Event | None = None
        self._mirror_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # agent id -> subscriptions made here that the host has not attached yet
        self._attaching: dict[str, list[RemoteSubscription]] = {}
        self._links: dict[str, FeedLink] = {}  # host name -> its event feed to this process
        self._batchers: dict[str, CallBatcher] = {}  # host name -> this process's calls to it
        self._files_hosts: dict[Hashable, str] = {}  # filesystem scope -> the host that has it
        self._listeners: dict[str, list[Callable[[], None]]] = {}  # agent id -> on change
        # id(config) -> (config, key, pickled): the config is kept, so its id is not reused.
        self._configs: dict[int, tuple[SessionConfig, str, bytes]] = {}
        self._configs_sent: set[tuple[str, str]] = set()  # (host, key)
        self._shared = SharedPickler()  # the models and tools of started agents, sent once
        self._shared_sent: set[tuple[str, str]] = set()  # (host, key)
        self._ready = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, runtime: Runtime) -> None:
        if not ray.is_initialized():
            options = {"namespace": self._namespace, **self._init_options}
            await asyncio.to_thread(ray.init, address=self._address, **options)
            self._started_ray = True
        namespace = self._namespace
        self._directory = (
            ray.remote(Directory)
            .options(
                name=DIRECTORY_NAME,
                namespace=namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=0,
                max_concurrency=10_000,
                # On the head node, which a cluster cannot lose anyway (Ray's own state is
                # there): the directory outlives any worker node.
                resources={_HEAD_RESOURCE: 0.001},
            )
            .remote(self._placement)
        )
        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        count = self._host_count or max(1, int(resources.get("CPU", 1)))
        host_class = ray.remote(Host)
        for index in range(count):
            name = f"sagents-host-{index}"
            self._hosts[name] = host_class.options(
                name=name,
                namespace=namespace,
                lifetime="detached",
                get_if_exists=True,
                num_cpus=self._host_cpus,
                max_concurrency=100_000,
                scheduling_strategy="SPREAD",
                **({"label_selector": self._node_labels} if self._node_labels else {}),
            ).remote(name, self._directory, self._runtime_options, self._host_gc_thresholds)
        await asyncio.gather(*(host.start.remote() for host in self._hosts.values()))
        self._mirror_ready = asyncio.Event()
        self._mirror_task = asyncio.get_running_loop().create_task(
            self._follow_directory(), name="sagents ray directory mirror"
        )
        await self._mirror_ready.wait()
        self._ready = True

    async def shutdown(self) -> None:
        self._ready = False
        if self._mirror_task is not None:
            self._mirror_task.cancel()
            await asyncio.gather(self._mirror_task, return_exceptions=True)
            self._mirror_task = None
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.aclose()
        stop_hosts = self._started_ray if self._stop_hosts is None else self._stop_hosts
        if stop_hosts and self._hosts:
            results = await asyncio.gather(
                *(host.shutdown.remote() for host in self._hosts.values()),
                return_exceptions=True,
            )
            for name, result in zip(self._hosts, results, strict=True):
                if isinstance(result, BaseException):
                    _log.error("stopping sagents host %s failed: %s", name, result)
            for actor in (*self._hosts.values(), self._directory):
                with contextlib.suppress(Exception):
                    ray.kill(actor)
        self._hosts.clear()
        self._mirror.clear()
        if self._started_ray:
            await asyncio.to_thread(ray.shutdown)
            self._started_ray = False

    def ready(self) -> bool:
        return self._ready

    # -- the directory mirror --------------------------------------------------------------

    async def _follow_directory(self) -> None:
        assert self._mirror_ready is not None
        while True:
            try:
                version, changes = await self._directory.changes.remote(self._mirror_version, 10.0)
            except ray.exceptions.RayActorError:
                _log.error("the sagents directory is unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            if isinstance(changes, dict):
                changed = set(self._mirror) ^ set(changes)
                self._mirror = changes
            else:
                changed = set()
                for agent_id, host in changes:
                    changed.add(agent_id)
                    if host is None:
                        self._mirror.pop(agent_id, None)
                    else:
                        self._mirror[agent_id] = host
            for agent_id in changed & self._listeners.keys():
                for listener in list(self._listeners.get(agent_id, ())):
                    listener()
            self._mirror_version = version
            self._mirror_ready.set()
            waiting, self._mirror_waiters = self._mirror_waiters, []
            for wanted, waiter in waiting:
                if wanted <= version:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    self._mirror_waiters.append((wanted, waiter))

    async def _mirrored(self, version: int) -> None:
        """Return once this process's mirror is at ``version`` (read-your-writes: a start or
        stop made from here is visible here when it returns)."""
        if version <= self._mirror_version:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._mirror_waiters.append((version, waiter))
        await waiter

    def running_agents(self) -> list[str]:
        return list(self._mirror)

    def on_change(self, agent_id: str, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` whenever ``agent_id`` starts or stops anywhere (as this
        process's mirror of the directory learns it); returns a remover."""
        self._listeners.setdefault(agent_id, []).append(listener)

        def remove() -> None:
            listeners = self._listeners.get(agent_id)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[agent_id]

        return remove

    def watch(self, agent_id: str, channel: Channel) -> Watch:
        """``runtime.watch`` over the cluster (:class:`~sagents.ray._handle.RemoteWatch`)."""
        return RemoteWatch(self, agent_id, channel)

    @property
    def namespace(self) -> str:
        """The Ray namespace of the directory and the hosts."""
        return self._namespace

    def host_of(self, agent_id: str) -> str | None:
        """The name of the host running ``agent_id`` (None: none, as far as this process
        knows)."""
        return self._mirror.get(agent_id)

    async def drain(self, host: str) -> list[str]:
        """Move the agents of ``host`` (a name from :meth:`hosts`) to the others, e.g. before
        its node is scaled in or redeployed: it takes no new agents, each of its agents is
        saved and stopped (its subscribers get ``NodeTransferring``, then ``AgentShutdown``
        with reason ``"node_transfer"``) and comes back on its new host on its next use (whose
        server publishes ``NodeTransferred``). Returns the agents moved."""
        ref = self._host(host).drain.remote()
        moved, version = await self._await(host, ref, f"drain {host}", timeout=None)
        await self._mirrored(version)
        return list(moved)

    async def hosts(self) -> dict[str, int]:
        """The live hosts, each with the number of agents placed or running there."""
        hosts: dict[str, int] = await self._directory.hosts.remote()
        return hosts

    def runs(self, agent_id: str) -> bool:
        """Whether ``agent_id`` runs on a host, as this process knows."""
        return agent_id in self._mirror

    # -- files -----------------------------------------------------------------------------

    def filesystem(self, scope: Hashable) -> FileStore:
        return RemoteFileStore(self, scope)

    async def file_call(self, scope: Hashable, method: str, args: tuple[Any, ...]) -> Any:
        """Run a :class:`RemoteFileStore` operation on the host that has ``scope`` open.

        Raises:
            SagentsError: no host has it open (no agent of that scope runs).
        """
        for _ in range(2):  # the remembered host may have let it go: look again, once
            name = self._files_hosts.get(scope) or await self._locate_files(scope)
            try:
                return await self._await(
                    name,
                    self._host(name).files.remote(scope, method, args),
                    f"files of scope {scope!r}: {method}",
                )
            except FilesNotHere:
                self._files_hosts.pop(scope, None)
        raise SagentsError(f"no filesystem server runs for scope {scope!r}")

    async def _locate_files(self, scope: Hashable) -> str:
        names = list(await self.hosts())
        answers = await asyncio.gather(
            *(self._host(name).has_files.remote(scope) for name in names), return_exceptions=True
        )
        for name, has in zip(names, answers, strict=True):
            if has is True:
                self._files_hosts[scope] = name
                return name
        failed = [(name, a) for name, a in zip(names, answers, strict=True) if a is not False]
        if failed:
            # The scope may be open on a host that did not answer: unknown, not "not open".
            name, error = failed[0]
            raise AgentUnavailable(
                f"files of scope {scope!r}: sagents host {name} did not say whether it has them "
                f"open ({type(error).__name__}: {error}); retry"
            ) from (error if isinstance(error, BaseException) else None)
        raise SagentsError(f"no filesystem server runs for scope {scope!r}")

    def _host_name(self, agent_id: str) -> str:
        name = self._mirror.get(agent_id)
        if name is None:
            raise AgentNotRunning(
                f"agent {agent_id!r} is not running on any host; start it (Session.ensure_running)"
            )
        return name

    def _host(self, name: str) -> Any:
        host = self._hosts.get(name)
        if host is None:
            try:
                host = ray.get_actor(name, namespace=self._namespace)
            except ValueError as exc:  # Ray's word for "no such named actor": it died
                self._forget(name)
                raise _HostDied(
                    f"sagents host {name} is gone (its process or node died); the directory "
                    "forgets it now. Retry: its agents restart elsewhere on their next "
                    "Session.ensure_running",
                    sent=False,
                ) from exc
            self._hosts[name] = host
        return host

    # -- calls -----------------------------------------------------------------------------

    async def _await(
        self, host_name: str, ref: Any, what: str, *, timeout: float | str | None = "call"
    ) -> Any:
        """``await ref`` within the call timeout (or ``timeout``); the host's own exception
        as raised there."""
        limit = self._call_timeout if timeout == "call" else timeout
        try:
            # asyncio.timeout, not wait_for: no task per call (a call is on every turn's path).
            async with asyncio.timeout(limit):  # type: ignore[arg-type]
                return await ref
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            message = (
                f"{what}: sagents host {host_name} did not answer ({type(exc).__name__}); it may "
                "or may not have happened. Retry: a dead host's agents restart elsewhere on "
                "their next Session.ensure_running"
            )
            if isinstance(exc, ray.exceptions.ActorDiedError):
                self._forget(host_name)
                raise _HostDied(message, sent=True) from exc
            raise AgentUnavailable(message) from exc

    def _forget(self, host_name: str) -> None:
        self._hosts.pop(host_name, None)
        self._batchers.pop(host_name, None)
        for agent_id in [a for a, h in self._mirror.items() if h == host_name]:
            del self._mirror[agent_id]
        self._directory.forget_host.remote(host_name)

    async def call_agent(
        self, agent_id: str, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        attaching = self._attaching.pop(agent_id, None)
        for subscription in attaching or ():
            await subscription.attached()  # its events include this call's
        name = self._host_name(agent_id)
        if method == "stop":
            ref = self._host(name).stop.remote(agent_id, *args)
            version = await self._await(name, ref, f"agent {agent_id!r}: stop")
            await self._mirrored(version)
            return None
        return await self._calls(name).call((agent_id, method, args, kwargs))

    def _calls(self, name: str) -> CallBatcher:
        """This process's calls to host ``name``."""
        batcher = self._batchers.get(name)
        if batcher is None:
            host = self._host(name)

            async def send(batch: bytes) -> bytes:
                answer: bytes = await self._await(
                    name, host.calls.remote(batch), "calls to agents on it"
                )
                return answer

            batcher = self._batchers[name] = CallBatcher(send)
        return batcher

    async def agent_info(self, agent_id: str) -> AgentInfo | None:
        try:
            name = self._host_name(agent_id)
        except AgentNotRunning:
            return None
        info: AgentInfo | None = await self._await(
            name, self._host(name).agent_info.remote(agent_id), f"agent {agent_id!r}: info"
        )
        return info

    async def agent_infos(self) -> list[AgentInfo]:
        """What :meth:`agent_info` reports, of every agent of the cluster (one call per
        host); a host that does not answer is left out and logged."""
        names = list(await self.hosts())

        async def listed(name: str) -> list[AgentInfo]:
            infos: list[AgentInfo] = await self._await(
                name, self._host(name).agent_infos.remote(), "agent infos"
            )
            return infos

        results = await asyncio.gather(*map(listed, names), return_exceptions=True)
        infos: list[AgentInfo] = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                _log.error("sagents host %s did not list its agents: %s", name, result)
            else:
                infos.extend(result)
        return infos

    def handle(self, runtime: Runtime, agent_id: str) -> AgentHandle:
        self._host_name(agent_id)  # AgentNotRunning unless it runs somewhere
        return RemoteAgentHandle(runtime, agent_id, self)

    def subscribe(self, agent_id: str, channel: Channel, after_seq: int | None) -> Subscription:
        name = self._host_name(agent_id)
        subscription = RemoteSubscription(self._link(name), agent_id, channel, after_seq)
        self._attaching.setdefault(agent_id, []).append(subscription)
        subscription.when_attached(lambda: self._attach_done(agent_id, subscription))
        return subscription

    def _link(self, name: str) -> FeedLink:
        """This process's event feed from host ``name`` (opened on first use)."""
        link = self._links.get(name)
        if link is None or not link.alive:
            link = self._links[name] = FeedLink(
                self._host(name), name, self._stream_window, _FEED_AHEAD
            )
            link.on_lost = self._link_lost
        return link

    def _link_lost(self, link: FeedLink) -> None:
        if self._links.get(link.host_name) is link:
            del self._links[link.host_name]

    def _attach_done(self, agent_id: str, subscription: RemoteSubscription) -> None:
        waiting = self._attaching.get(agent_id)
        if waiting is not None and subscription in waiting:
            waiting.remove(subscription)
            if not waiting:
                del self._attaching[agent_id]

    # -- starting --------------------------------------------------------------------------

    async def start_agent(
        self,
        runtime: Runtime,
        agent: Agent,
        initial_state: State | Mapping[str, Any] | None,
        options: StartOptions,
    ) -> AgentHandle:
        if not isinstance(agent, Agent):
            raise InvalidOption(f"start_agent needs a sagents Agent, got {type(agent).__name__}")
        if options.get("context") is not None:
            raise InvalidOption(
                "context: a contextvars.Context cannot leave its process, and this runtime "
                "starts its agents on the hosts of a Ray cluster"
            )
        options = {key: value for key, value in options.items() if key != "context"}  # type: ignore[assignment]
        try:
            payload, shared = self._shared.dumps((agent, initial_state, options))
        except Exception as exc:
            raise _unpicklable("start_agent", exc) from exc
        agent_id = agent.agent_id

        async def start(name: str) -> int:
            # The models and tools this host has from earlier starts are not sent again.
            unsent = {k: b for k, b in shared.items() if (name, k) not in self._shared_sent}
            host, what = self._host(name), f"start {agent_id!r}"
            try:
                version: int = await self._await(
                    name, host.start_agent.remote(payload, unsent), what
                )
            except SharedMissing:  # the host let one go meanwhile (its agents had ended)
                version = await self._await(name, host.start_agent.remote(payload, shared), what)
            self._shared_sent.update((name, key) for key in shared)
            return version

        await self._mirrored(await self._on_placed_host(agent_id, start, idempotent=True))
        return RemoteAgentHandle(runtime, agent_id, self)

    async def _on_placed_host(
        self, agent_id: str, start: Callable[[str], Awaitable[T]], *, idempotent: bool
    ) -> T:
        """``start(host)`` on the host the directory places ``agent_id`` on; again on the
        host that holds its shared filesystem scope if that is another one (agents sharing
        files run together: each host would keep its own view of them); again elsewhere if
        the host turns out dead, unless ``start`` reached it and is not ``idempotent``."""
        pinned: str | None = None
        reason = "no host took it"
        for attempt in range(_PLACEMENT_ATTEMPTS):
            name: str = await self._directory.place.remote(agent_id, pinned)
            try:
                return await start(name)
            except _HostDied as exc:  # the directory forgets it: the next place is elsewhere
                if exc.sent and not idempotent:
                    raise
                pinned, reason = None, str(exc)
            except FilesOpenElsewhere as exc:
                if exc.host == pinned:  # that host is leaving (a drain): it releases soon
                    await asyncio.sleep(min(0.05 * attempt, 0.5))
                pinned = exc.host
                reason = (
                    f"the files it shares stayed open on sagents host {pinned}, which takes "
                    "no new agents"
                )
        raise AgentUnavailable(f"agent {agent_id!r} could not start: {reason}. Retry in a moment")

    async def session(
        self,
        method: str,
        config: SessionConfig,
        agent_id: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        where: str,
    ) -> Any:
        """Run ``Session.<method>(host_runtime, config, *args, **kwargs)`` on a host: the one
        that runs ``agent_id`` (``where="running"``; None when none does), the one it runs on
        or is placed on (``"place"``), or any (``"any"``). A resulting session comes back as
        ``(agent_id, conversation_id, restored, started)``."""
        key, pickled = self._config(config)
        what = f"Session.{method}"

        async def run(name: str) -> Any:
            host = self._host(name)
            send = (name, key) not in self._configs_sent
            ref = host.session.remote(
                method, key, pickled if send else None, args, dict(kwargs), agent_id
            )
            try:
                result, version = await self._await(name, ref, what)
            except ConfigMissing:  # the host restarted
                ref = host.session.remote(method, key, pickled, args, dict(kwargs), agent_id)
                result, version = await self._await(name, ref, what)
            self._configs_sent.add((name, key))
            await self._mirrored(version)
            return result

        if where == "place":
            return await self._on_placed_host(agent_id, run, idempotent=method in _IDEMPOTENT)
        if where == "running":
            try:
                return await run(self._host_name(agent_id))
            except AgentNotRunning:
                return None
        return await run(next(iter(self._hosts)))

    def _config(self, config: SessionConfig) -> tuple[str, bytes]:
        cached = self._configs.get(id(config))
        if cached is None or cached[0] is not config:
            pickled = _pickled("the SessionConfig", config)
            key = hashlib.blake2b(pickled, digest_size=16).hexdigest()
            cached = self._configs[id(config)] = (config, key, pickled)
        return cached[1], cached[2]


def _pickled(what: str, value: Any) -> bytes:
    try:
        return bytes(cloudpickle.dumps(value))  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise _unpicklable(what, exc) from exc


def _unpicklable(what: str, error: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"{what} cannot be sent to a sagents host ({type(error).__name__}: {error}). With "
        "RayBackend, agents, states, options and session configurations travel to the "
        "hosts: build models and tools from picklable parts, and stores from URLs "
        "(SqlPersistence(url) pickles as its URL)"
    )
