"""``RayPresence``: viewers counted across every process of a Ray cluster.

A :class:`~sagents.runtime.Presence` whose board is one named actor: a viewer tracked through
web worker A keeps an agent on host B alive, and the agent's grace period starts when the last
viewer of the whole cluster leaves. Each process's ``RayPresence`` long-polls the board for the
counts of the topics it watches (one call in flight per process, whatever the number of
topics) and heartbeats for the connections it tracked: the connections of a process that stops
heartbeating (it died) are dropped after ``connection_ttl``.

A ``RayPresence`` pickles as its namespace and settings, so a ``SessionConfig`` holding one
reaches the backend's hosts and they all use the same board.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import ray

from sagents.runtime._presence import PresenceList, PresenceRef

__all__ = ["PresenceBoard", "RayPresence"]

_log = logging.getLogger("sagents.ray")

BOARD_NAME = "sagents-presence"


class PresenceBoard:
    """The cluster's viewers (a Ray actor). Every method but :meth:`changes` is atomic."""

    def __init__(self, connection_ttl: float) -> None:
        self._ttl = connection_ttl
        # topic -> key -> connection id -> (process, meta)
        self._topics: dict[str, dict[str, dict[str, tuple[str, dict[str, Any]]]]] = {}
        self._beats: dict[str, float] = {}  # process -> last heartbeat (monotonic)
        self._counts: dict[str, tuple[int, int]] = {}  # topic -> (count, version of change)
        self._version = 0
        self._changed: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None

    def track(self, topic: str, key: str, meta: dict[str, Any], process: str) -> str:
        self._reap_later()
        self._beats[process] = time.monotonic()
        connection = uuid.uuid4().hex
        self._topics.setdefault(topic, {}).setdefault(key, {})[connection] = (process, meta)
        self._recount(topic)
        return connection

    def untrack(self, topic: str, key: str, connection: str | None) -> None:
        keys = self._topics.get(topic)
        if keys is None or key not in keys:
            return
        if connection is None:
            del keys[key]
        else:
            keys[key].pop(connection, None)
            if not keys[key]:
                del keys[key]
        if not keys:
            del self._topics[topic]
        self._recount(topic)

    def heartbeat(self, process: str) -> None:
        self._beats[process] = time.monotonic()

    def list(self, topic: str) -> PresenceList:
        keys = self._topics.get(topic, {})
        return {key: [meta for _, meta in conns.values()] for key, conns in keys.items()}

    def count(self, topic: str) -> int:
        return len(self._topics.get(topic, {}))

    async def changes(
        self, after: int, topics: builtins.list[str], fresh: builtins.list[str], timeout: float
    ) -> tuple[int, dict[str, int]]:
        """``(version, counts)``: the counts of ``fresh`` topics, and of those ``topics`` whose
        count changed since ``after``; at once if there are any, else once one changes or
        ``timeout`` passed."""
        if not fresh and not self._changed_since(after, topics):
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        counts = {
            topic: self.count(topic)
            for topic in topics
            if topic in fresh or self._counts.get(topic, (0, 0))[1] > after
        }
        return self._version, counts

    def _changed_since(self, after: int, topics: builtins.list[str]) -> bool:
        return any(self._counts.get(topic, (0, 0))[1] > after for topic in topics)

    def _recount(self, topic: str) -> None:
        count = self.count(topic)
        if self._counts.get(topic, (0, 0))[0] == count:
            return
        self._version += 1
        if count:
            self._counts[topic] = (count, self._version)
        else:
            self._counts[topic] = (0, self._version)
        changed = self._changed
        if changed is not None:
            changed.set()
            self._changed = None

    def _reap_later(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 2)
            now = time.monotonic()
            dead = {p for p, beat in self._beats.items() if now - beat > self._ttl}
            for process in dead:
                del self._beats[process]
            if not dead:
                continue
            for topic in builtins.list(self._topics):
                for key, conns in builtins.list(self._topics[topic].items()):
                    for connection, (process, _) in builtins.list(conns.items()):
                        if process in dead:
                            self.untrack(topic, key, connection)


class RayPresence:
    """A :class:`~sagents.runtime.Presence` shared by every process of a Ray cluster (see the
    module docstring).

    Args:
        namespace: the Ray namespace of the board (the backend's, usually).
        connection_ttl: seconds after which the connections of a process that stopped
            heartbeating are dropped (it heartbeats every third of it).
    """

    def __init__(self, *, namespace: str = "sagents", connection_ttl: float = 15.0) -> None:
        self._namespace = namespace
        self._ttl = connection_ttl
        self._process = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._board: Any = None
        self._callbacks: dict[str, dict[int, Callable[[int], None]]] = {}
        self._ids = itertools.count()
        self._poller: asyncio.Task[None] | None = None
        self._beater: asyncio.Task[None] | None = None
        self._known: dict[str, int] = {}  # topic -> the count its subscribers were given
        self._version = -1

    async def aclose(self) -> None:
        """Stop this process's polling and heartbeats (its tracked connections then expire
        after ``connection_ttl`` unless untracked)."""
        tasks = [task for task in (self._poller, self._beater) if task is not None]
        self._poller = self._beater = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_presence, (self._namespace, self._ttl))

    def _get_board(self) -> Any:
        if self._board is None:
            self._board = (
                ray.remote(PresenceBoard)
                .options(
                    name=BOARD_NAME,
                    namespace=self._namespace,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    max_concurrency=10_000,
                )
                .remote(self._ttl)
            )
        return self._board

    async def track(
        self, topic: str, key: str, meta: Mapping[str, Any] | None = None
    ) -> PresenceRef:
        connection = await self._get_board().track.remote(
            topic, key, dict(meta or {}), self._process
        )
        if self._beater is None:
            self._beater = asyncio.get_running_loop().create_task(self._beat())
        return PresenceRef(topic=topic, key=key, id=connection)

    async def untrack(self, topic: str, key: str, ref: PresenceRef | None = None) -> None:
        await self._get_board().untrack.remote(topic, key, None if ref is None else ref.id)

    async def list(self, topic: str) -> PresenceList:
        listed: PresenceList = await self._get_board().list.remote(topic)
        return listed

    async def count(self, topic: str) -> int:
        counted: int = await self._get_board().count.remote(topic)
        return counted

    def subscribe(self, topic: str, callback: Callable[[int], None]) -> Callable[[], None]:
        token = next(self._ids)
        new = topic not in self._callbacks
        self._callbacks.setdefault(topic, {})[token] = callback
        if new and self._poller is not None:
            self._poller.cancel()  # its long poll does not watch this topic: ask again
            self._poller = None
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

        def unsubscribe() -> None:
            callbacks = self._callbacks.get(topic)
            if callbacks is not None:
                callbacks.pop(token, None)
                if not callbacks:
                    del self._callbacks[topic]
                    self._known.pop(topic, None)

        return unsubscribe

    async def _poll(self) -> None:
        board = self._get_board()
        while self._callbacks:
            topics = builtins.list(self._callbacks)
            fresh = [topic for topic in topics if topic not in self._known]
            try:
                self._version, counts = await board.changes.remote(
                    self._version, topics, fresh, 5.0
                )
            except ray.exceptions.RayActorError:
                _log.error("the sagents presence board is unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            for topic, count in counts.items():
                if self._known.get(topic) == count:
                    continue
                self._known[topic] = count
                for callback in builtins.list(self._callbacks.get(topic, {}).values()):
                    try:
                        callback(count)
                    except Exception:
                        _log.exception("presence subscriber of %r raised", topic)
        if self._poller is asyncio.current_task():
            self._poller = None

    async def _beat(self) -> None:
        board = self._get_board()
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await board.heartbeat.remote(self._process)
            except ray.exceptions.RayActorError as exc:
                # Missed beats let the board drop this process's viewers: say so.
                _log.error("the sagents presence board missed a heartbeat: %s", exc)


def _presence(namespace: str, connection_ttl: float) -> RayPresence:
    return RayPresence(namespace=namespace, connection_ttl=connection_ttl)
