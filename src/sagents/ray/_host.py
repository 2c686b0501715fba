"""``Host``: one process of the cluster running many agent servers (a Ray actor).

A host is an ordinary in-process :class:`~sagents.Runtime` behind a Ray actor: supervision,
inactivity, presence, saving and sub-agents work there exactly as in one process. One Python
process uses one core, so a backend runs one host per core (a Ray actor per agent would cost a
process per conversation).

What the host adds: it tells the :class:`~sagents.ray._directory.Directory` which agents its
registry holds (in order, as they come and go), runs the calls handles route to it, and streams
subscriptions back to the subscriber's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Hashable, Mapping
from typing import Any

import ray
from ray import cloudpickle

from sagents._errors import (
    AgentNotRunning,
    AgentUnavailable,
    ConfigurationError,
    ConversationOwnedElsewhere,
    SagentsError,
)
from sagents.events import NodeTransferred, NodeTransferring
from sagents.persistence import scope_key as persistence_scope_key
from sagents.ray._calls import Request, run_batch
from sagents.ray._feed import Feed
from sagents.ray._files import FILE_METHODS, FilesNotHere
from sagents.ray._shared import SharedObjects
from sagents.runtime._runtime import Runtime
from sagents.session._session import Session

__all__ = ["ConfigMissing", "FilesOpenElsewhere", "Host", "files_key"]

_log = logging.getLogger("sagents.ray")

#: The directory's answer to a report: its version after it, and the host a drain moved the
#: agent from.
Report = tuple[int, str | None]

#: The handle methods a remote handle may call (nothing else is reachable through a host).
HANDLE_METHODS = frozenset(
    {
        "add_message",
        "execute",
        "resume",
        "dismiss_interrupt",
        "reset",
        "cancel",
        "pause",
        "send_to_middleware",
        "touch",
        "get_state",
        "get_agent",
        "export_state",
        "get_status",
        "info",
        "options",
        "last_result",
        "restore_state",
        "update_agent_and_state",
    }
)

#: A feed's window when a subscription is attached before the feed's own call has run (the
#: client's window, which the feed's call brings, is the same by default).
_FEED_WINDOW = 256

#: How many ended feeds a host remembers, so that a call about one arriving late (an attach,
#: ``feed_owner``: calls to a host may start out of order) does not open it again. Client ids
#: are never reused; the calls that may arrive late are in flight for milliseconds.
_ENDED_FEEDS_KEPT = 1024

#: The session operations a client runs on the host that holds (or is to hold) the agent.
SESSION_METHODS = frozenset({"start", "ensure_running", "dismiss", "stop", "delete"})


class Host:
    """An agent host (a Ray actor; see the module docstring).

    Args:
        name: the host's name in the directory (its Ray actor name).
        directory: the directory actor.
        runtime_options: the in-process runtime's arguments (``max_restarts``...).
        gc_thresholds: the collector's thresholds in this process, set once started (with the
            start-up's objects frozen); None leaves the collector as it is.
    """

    def __init__(
        self,
        name: str,
        directory: Any,
        runtime_options: Mapping[str, Any],
        gc_thresholds: tuple[int, int, int] | None = None,
    ) -> None:
        self._name = name
        self._gc_thresholds = gc_thresholds
        self._directory = directory
        self._runtime = Runtime(**runtime_options)
        self._runtime.guard_filesystems(_FilesGuard(name, directory))
        self._configs: dict[str, Any] = {}
        # agent id -> its last report to the directory: (the directory's version, the host a
        # drain moved it from)
        self._reports: dict[str, Report | asyncio.Task[Report]] = {}
        self._announced: set[str] = set()  # agents whose arrival by a drain was published
        self._feeds: dict[str, Feed] = {}  # client process -> its event feed from here
        self._ended_feeds: dict[str, None] = {}  # the last clients whose feed ended, in order
        self._shared = SharedObjects()  # the models and tools of the agents started here

    async def start(self) -> str:
        """Start the runtime and join the directory; the host's name."""
        self._runtime.follow_registry(self._report)
        await self._runtime.start()
        await self._directory.add_host.remote(self._name, self._runtime.owner_id)
        if self._gc_thresholds is not None:
            # A host process is sagents' own: tune its collector as docs/reliability.md
            # advises a process holding many conversations. What start-up made (Ray,
            # langchain, the modules) is never garbage: frozen, full collections skip it.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*self._gc_thresholds)
        return self._name

    def _report(self, agent_id: str, registered: bool) -> None:
        # Not awaited: calls from one actor to another run in the order they were made. The
        # last one per agent is kept, so that a client can wait for its directory mirror to
        # show it (whichever caller's start or stop made it). It is kept as a task, not as
        # the Ray reference: a live reference holds its result in Ray's store, kilobytes per
        # running agent.
        directory = self._directory
        report = directory.registered if registered else directory.unregistered
        ref = report.remote(agent_id, self._name)
        task = asyncio.get_running_loop().create_task(self._reported(agent_id, ref, registered))
        self._reports[agent_id] = task
        self._announced.discard(agent_id)

    async def _reported(self, agent_id: str, ref: Any, registered: bool) -> Report:
        try:
            version, moved_from = await ref
        except Exception as exc:
            # The directory lists the agent wrongly: say so (for an end, callers then get
            # AgentNotRunning from this host, and the next start places it again).
            change = "start" if registered else "end"
            _log.error(
                "host %s: the directory missed the %s of %r: %s", self._name, change, agent_id, exc
            )
            if registered:
                raise  # to whoever waits for this start
            return -1, None
        finally:
            if not registered and self._reports.get(agent_id) is asyncio.current_task():
                del self._reports[agent_id]
        result = int(version), moved_from
        if self._reports.get(agent_id) is asyncio.current_task():
            self._reports[agent_id] = result  # lighter than the done task, for as long as it runs
        return result

    async def _synced(self, agent_id: str) -> int:
        """The directory's version once it knows the last change of ``agent_id`` here (-1
        when there is none to wait for). An agent that a drain moved here announces it."""
        report = self._reports.get(agent_id)
        if report is None:
            return -1
        if isinstance(report, tuple):
            version, moved_from = report
        else:
            version, moved_from = await asyncio.shield(report)
        if moved_from is not None and agent_id not in self._announced:
            self._announced.add(agent_id)  # once, however many callers wait for this start
            event = NodeTransferred(from_node=moved_from, to_node=self._name)
            with contextlib.suppress(AgentNotRunning):
                self._runtime._server(agent_id).emit(event)
        return int(version)

    async def drain(self) -> tuple[list[str], int]:
        """Move this host's agents away: it takes no new ones, and each agent (with its
        sub-agents) is placed on another host, its subscribers get ``NodeTransferring``, and
        it stops gracefully (saved) with reason ``"node_transfer"``. Its next start, on its
        next use, is on that host, whose server then publishes ``NodeTransferred``. Returns
        the agents moved, and the directory's version without them."""
        await self._directory.drain.remote(self._name)
        moved, version = [], -1
        for agent_id in self._runtime._top_level_agents():
            target: str = await self._directory.transfer.remote(agent_id, self._name)
            event = NodeTransferring(from_node=self._name, to_node=target)
            try:
                self._runtime._server(agent_id).emit(event)
                await self._runtime.stop(agent_id, reason="node_transfer")
            except AgentNotRunning:
                continue  # it stopped meanwhile
            moved.append(agent_id)
            version = max(version, await self._synced(agent_id))
        return moved, version

    async def shutdown(self) -> None:
        """Stop every agent gracefully (saving where configured), then the runtime."""
        await self._runtime.shutdown()
        await self._directory.release_files.remote(self._name)

    def ping(self) -> str:
        return self._name

    def node_id(self) -> str:
        """The Ray node this host runs on."""
        node: str = ray.get_runtime_context().get_node_id()
        return node

    def agent_count(self) -> int:
        return self._runtime.agent_count()

    # -- starting --------------------------------------------------------------------------

    async def start_agent(self, payload: bytes, shared: dict[str, bytes]) -> int:
        """Start an agent from ``(agent, initial_state, options)`` pickled by a client's
        :class:`~sagents.ray._shared.SharedPickler`, with the models and tools this host does
        not have yet; the directory's version that has it.

        Raises:
            SharedMissing: a model or tool the payload refers to is not here any more.
        """
        agent, initial_state, options = self._shared.loads(payload, shared)
        try:
            await self._runtime.start_agent(agent, initial_state, **options)
        except BaseException:
            self._directory.unplace.remote(agent.agent_id, self._name)
            raise
        return await self._synced(agent.agent_id)

    def agent_infos(self) -> list[Any]:
        """What ``agent_info`` reports of each agent here, sub-agents included."""
        runtime = self._runtime
        return [
            self._located(info)
            for agent_id in runtime.list_running_agents()
            if (info := runtime.agent_info_nowait(agent_id)) is not None
        ]

    def _located(self, info: Any) -> Any:
        return None if info is None else dataclasses.replace(info, node=self._name)

    async def stop(self, agent_id: str, reason: str) -> int:
        """Stop the agent gracefully (its whole unit); the directory's version without it."""
        await self._runtime.stop(agent_id, reason)
        return await self._synced(agent_id)

    async def session(
        self,
        method: str,
        config_key: str,
        config: bytes | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        agent_id: str,
    ) -> tuple[Any, int]:
        """Run ``Session.<method>(runtime, config, *args, **kwargs)`` here for ``agent_id``;
        ``(result, version)``: a resulting session as ``(agent_id, conversation_id, restored,
        started)``, anything else as is, and the directory's version that knows of the start
        or stop it made (-1: none).

        ``config`` (a cloudpickled ``SessionConfig``) comes with the first call for
        ``config_key`` on this host, and is kept for the next ones.

        Raises:
            ConfigMissing: the host does not know ``config_key`` (it restarted).
        """
        if method not in SESSION_METHODS:
            raise ValueError(f"not a session operation: {method!r}")
        if config is not None:
            self._configs[config_key] = cloudpickle.loads(config)
        session_config = self._configs.get(config_key)
        if session_config is None:
            raise ConfigMissing(config_key)
        operation = getattr(Session, method)
        try:
            try:
                result = await operation(self._runtime, session_config, *args, **kwargs)
            except ConversationOwnedElsewhere as exc:
                if not await self._take_over(session_config, exc):
                    raise
                result = await operation(self._runtime, session_config, *args, **kwargs)
        except FilesOpenElsewhere:
            self._directory.unplace.remote(agent_id, self._name)  # the client places it there
            raise
        version = await self._synced(agent_id)
        if not isinstance(result, Session):
            return result, version
        session = (result.agent_id, result.conversation_id, result.restored, result.started)
        return session, version

    async def _take_over(self, config: Any, refusal: ConversationOwnedElsewhere) -> bool:
        """Expire the leases of ``refusal``'s owner if it was a host found dead (rather than
        wait out their ttl); whether they were."""
        owner = refusal.owner
        if owner is None or not await self._directory.is_dead_owner.remote(owner):
            return False
        expire = getattr(config.agent_persistence, "expire_leases", None)
        if expire is None:
            return False
        expired = await expire(owner)
        _log.warning("host %s: took over %d lease(s) of dead owner %s", self._name, expired, owner)
        return True

    # -- calls and streams -----------------------------------------------------------------

    async def calls(self, requests: bytes) -> bytes:
        """Run a batch of handle calls (:mod:`sagents.ray._calls`), each ``(agent_id,
        method, args, kwargs)``: ``runtime.agent(agent_id).<method>(*args, **kwargs)``; one
        ``(True, result)`` or ``(False, exception)`` per call (both lists pickled:
        :mod:`sagents.ray._wire`)."""
        return await run_batch(requests, self._call)

    async def _call(self, request: Request) -> Any:
        agent_id, method, args, kwargs = request
        if method not in HANDLE_METHODS:
            raise ValueError(f"not an agent handle operation: {method!r}")
        result = await getattr(self._runtime.agent(agent_id), method)(*args, **kwargs)
        return self._located(result) if method == "info" else result

    async def agent_info(self, agent_id: str) -> Any:
        return self._located(await self._runtime.agent_info(agent_id))

    async def feed(
        self, client: str, window: int, ahead: int, owner: list[Any]
    ) -> AsyncIterator[bytes]:
        """The event feed of ``client`` (a process's :class:`~sagents.ray._feed.FeedLink`; a
        Ray streaming generator): the events of its subscriptions here, each item everything
        pending for it, at most ``ahead`` items beyond what it said it has read.

        ``owner`` is ``[ref]``, the client's call to :meth:`feed_owner`: the feed ends once
        it fails, that is once the client process has died (Ray fails an object whose owner
        died; it neither cancels nor fails a stream whose caller died).
        """
        feed = self._feed(client)
        if feed is None:
            return  # it has ended already (its client closed it)
        feed.window = window
        feed.ahead = ahead
        try:
            async for item in feed.items(owner[0]):
                yield item
        finally:
            feed.close()
            if self._feeds.get(client) is feed:
                del self._feeds[client]
            self._ended_feeds[client] = None
            while len(self._ended_feeds) > _ENDED_FEEDS_KEPT:
                del self._ended_feeds[next(iter(self._ended_feeds))]

    async def feed_owner(self, client: str) -> None:
        """Pending for as long as ``client``'s feed from here lives: the client owns its
        result, which the feed awaits (see :meth:`feed`)."""
        feed = self._feed(client)
        if feed is not None:
            await feed.wait_closed()

    def _feed(self, client: str) -> Feed | None:
        """``client``'s feed, made here if its own call has not run yet; None if it has
        ended."""
        if client in self._ended_feeds:
            return None
        feed = self._feeds.get(client)
        if feed is None:
            feed = self._feeds[client] = Feed(_FEED_WINDOW)
        return feed

    def has_files(self, scope: Hashable) -> bool:
        """Whether an agent here uses the filesystem scope ``scope`` (its store is open)."""
        try:
            self._runtime.filesystem(scope)
        except SagentsError:
            return False
        return True

    async def files(self, scope: Hashable, method: str, args: tuple[Any, ...]) -> Any:
        """Run ``store.<method>(*args)`` on the store of ``scope`` here (a client's
        :class:`~sagents.ray._files.RemoteFileStore`).

        Raises:
            FilesNotHere: no agent here uses that scope (any more).
        """
        if method not in FILE_METHODS:
            raise ValueError(f"not a file store operation: {method!r}")
        try:
            store = self._runtime.filesystem(scope)
        except SagentsError as exc:
            raise FilesNotHere(str(exc)) from None
        return await getattr(store, method)(*args)

    def feed_read(self, client: str, count: int) -> None:
        """``client`` has read ``count`` items of its feed from here."""
        feed = self._feeds.get(client)
        if feed is not None:
            feed.read(count)

    def attach(
        self, client: str, sub_id: int, agent_id: str, channel: str, after_seq: int | None
    ) -> int:
        """Subscribe ``client``'s subscription ``sub_id`` to the agent (from ``after_seq``);
        its events go to the client's feed. Returns how many of them, first, are replayed
        (exempt from the subscription's window, as in one process).

        Raises:
            AgentNotRunning: the agent does not run here.
            AgentUnavailable: the client's feed from here has ended.
        """
        feed = self._feed(client)
        if feed is None:
            raise AgentUnavailable(f"the event feed from sagents host {self._name} has ended")
        subscription = self._runtime.agent(agent_id).subscribe(
            channel,  # type: ignore[arg-type]
            after_seq=after_seq,
        )
        feed.attach(sub_id, subscription)
        return subscription.replay_pending

    def detach(self, client: str, sub_id: int) -> None:
        """``client`` closed ``sub_id``."""
        feed = self._feeds.get(client)
        if feed is not None:
            feed.detach(sub_id)


def files_key(scope: Hashable) -> str:
    """A shared filesystem scope as the directory knows it: its
    :func:`~sagents.persistence.scope_key`, the same in every process (a ``repr`` is not: a
    frozenset's order follows the hash seed).

    Raises:
        ConfigurationError: the scope has no stable key.
    """
    try:
        key = persistence_scope_key(scope)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"filesystem_scope {scope!r}: with RayBackend a shared scope must be known by the "
            f"same key in every process: {exc}"
        ) from None
    assert key is not None  # a None scope shares nothing
    return key


class FilesOpenElsewhere(SagentsError):
    """A shared filesystem scope is open on another host: agents using it start there."""

    def __init__(self, scope: str, host: str) -> None:
        super().__init__(f"the files of scope {scope} are open on sagents host {host}")
        self.scope = scope
        self.host = host


class _FilesGuard:
    """The host's :class:`~sagents.runtime._filesystem_server.FilesystemGuard`: a shared
    scope's files are open on one host of the cluster at a time."""

    def __init__(self, host: str, directory: Any) -> None:
        self._host = host
        self._directory = directory

    async def claim(self, scope: Hashable) -> None:
        key = files_key(scope)
        holder: str | None = await self._directory.claim_files.remote(key, self._host)
        if holder is not None:
            raise FilesOpenElsewhere(key, holder)

    def release(self, scope: Hashable) -> None:
        self._directory.release_files.remote(self._host, files_key(scope))


class ConfigMissing(Exception):
    """The host restarted and lost a session configuration: the client sends it again."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
