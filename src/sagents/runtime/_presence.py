"""Presence: who is viewing a topic, and shutting an idle agent down when nobody is.

A *viewer* is one connection (a browser tab, a websocket) tracked on a *topic* under a *key*,
usually the user id. As in ``Phoenix.Presence``, viewers are counted per key: the same user in two
tabs is two connections but **one** viewer, and :meth:`Presence.list` returns
``key -> [meta of each connection]``. The plug point is the :class:`Presence` protocol, with the
in-process :class:`LocalPresence`; a shared implementation (e.g. on Redis) can serve several
worker processes later, which is why the protocol's methods are ``async``.

:class:`ViewerWatch` is the piece the agent server uses. It knows nothing about the server: it is
told the agent's status and hears the viewer count, and calls ``on_no_viewers`` once the agent
has been *idle-like* with zero viewers for a continuous ``grace_period``:

======================================  =======  ==============================
status                                  viewers  action
======================================  =======  ==============================
``running``                             any      keep
``interrupted``                         any      keep (awaiting approval)
``paused``                              any      keep (see below)
``idle`` / ``cancelled`` / ``error``    > 0      keep
``idle`` / ``cancelled`` / ``error``    0        grace period, then shut down
======================================  =======  ==============================

``cancelled`` and ``error`` count as idle because the agent is doing nothing and waits for the
next message exactly as an idle one does (both can start a new run). ``paused`` is kept: a
paused run is pending work whose lifetime belongs to the drain that paused it, not to the
viewers.

Invariants:

- ``count(topic)`` is the number of distinct keys with at least one live connection; a topic with
  no connections and no subscribers holds no memory.
- A connection tracked inside an asyncio task is removed when that task ends, however it ends
  (return, exception, cancellation), so a viewer whose connection dies disappears.
- Subscribers hear every change of the distinct-key count; one that raises is logged and never
  breaks ``track``/``untrack`` (observers never break the observed).
- ``ViewerWatch`` calls ``on_no_viewers`` at most once, exactly ``grace_period`` seconds after the
  condition "idle-like and no viewers" last became true, and only if it held for all that time.

Choices: the viewer count is *pushed* to the watch by a subscription rather than polled, and the
grace period is one ``loop.call_at`` handle rather than a sleeping task — arming and cancelling
are O(1), there is no task to own or to cancel on shutdown, and the deadline follows the loop's
clock, so tests run it in virtual time. Tying a connection to the task that tracked it (instead
of requiring an explicit ``untrack``) is what makes a crashed connection leave no ghost viewer.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, Self, TypeAlias

from sagents._errors import InvalidOption
from sagents._resource import AsyncResource
from sagents._status import Status

__all__ = [
    "IDLE_LIKE",
    "LocalPresence",
    "Presence",
    "PresenceList",
    "PresenceRef",
    "PresenceTracking",
    "ViewerWatch",
]

_log = logging.getLogger(__name__)

# Module-level aliases because a class that defines a method named ``list`` shadows the builtin
# in its own body, which would make ``list[...]`` in later annotations mean that method.
_Metas: TypeAlias = builtins.list[dict[str, Any]]
PresenceList: TypeAlias = dict[str, _Metas]
"""What :meth:`Presence.list` returns: viewer key -> the meta of each of its connections."""

IDLE_LIKE: frozenset[Status] = frozenset({Status.IDLE, Status.CANCELLED, Status.ERROR})
"""Statuses in which an agent with no viewers may be shut down after the grace period."""

_PROTOCOL_METHODS = ("track", "untrack", "list", "count", "subscribe")


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceRef:
    """Identifies one tracked connection, as returned by :meth:`Presence.track`.

    Attributes:
        topic: the topic it was tracked on.
        key: the viewer key it was tracked under.
        id: unique among the connections of a presence object (a string, so a shared
            implementation can use the same type).
    """

    topic: str
    key: str
    id: str


class Presence(Protocol):
    """Tracks viewers of topics; the plug point behind :class:`PresenceTracking`.

    Implementations must count viewers per key, remove a connection that dies (the in-process one
    when the tracking task ends; a shared one, for instance, when a heartbeat expires), and call
    subscribers when a topic's distinct-key count changes, never letting a subscriber's exception
    reach ``track`` or ``untrack``.
    """

    async def track(
        self, topic: str, key: str, meta: Mapping[str, Any] | None = None
    ) -> PresenceRef:
        """Track one connection of viewer ``key`` on ``topic``.

        Args:
            topic: what is being viewed, e.g. ``"conversation:123"``.
            key: who is viewing, e.g. the user id; several connections may share a key.
            meta: data about this connection, returned by :meth:`list`.

        Returns:
            The reference of this connection, for :meth:`untrack`.
        """
        ...

    async def untrack(self, topic: str, key: str, ref: PresenceRef | None = None) -> None:
        """Stop tracking connection ``ref`` of ``key``, or every connection of ``key`` if None.

        Untracking something that is not tracked (any more) does nothing.
        """
        ...

    async def list(self, topic: str) -> PresenceList:
        """The viewers of ``topic``: key -> the meta of each of its connections."""
        ...

    async def count(self, topic: str) -> int:
        """The number of distinct viewer keys on ``topic``."""
        ...

    def subscribe(self, topic: str, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(count)`` whenever the distinct-key count of ``topic`` changes.

        Returns:
            A function that unsubscribes; calling it again does nothing.
        """
        ...


@dataclass(slots=True, kw_only=True)
class _Connection:
    meta: dict[str, Any]
    owner: asyncio.Future[Any] | None
    # The exact callable registered on ``owner``, kept so that it (and only it) can be removed.
    on_owner_done: Callable[[asyncio.Future[Any]], None] | None = None


class LocalPresence:
    """The in-process :class:`Presence`: dictionaries, O(1) per call, no I/O.

    A connection tracked from inside an asyncio task is tied to that task by default and removed
    when it ends (returns, raises or is cancelled). Pass ``owner=`` to tie it to another task or
    future (say, the websocket handler's), or ``auto_untrack=False`` to keep it until
    :meth:`untrack`. Outside any task (a plain callback) nothing owns the connection.

    Not thread-safe: use it from its event loop's thread, like the rest of asyncio.
    """

    __slots__ = ("_ids", "_subscribers", "_topics")

    def __init__(self) -> None:
        # topic -> key -> connection id -> connection. Empty levels are deleted, so the number of
        # keys of a topic is its viewer count and a quiet topic costs nothing.
        self._topics: dict[str, dict[str, dict[str, _Connection]]] = {}
        self._subscribers: dict[str, dict[int, Callable[[int], None]]] = {}
        self._ids = itertools.count(1)

    async def track(
        self,
        topic: str,
        key: str,
        meta: Mapping[str, Any] | None = None,
        *,
        auto_untrack: bool = True,
        owner: asyncio.Future[Any] | None = None,
    ) -> PresenceRef:
        """Track one connection; see :meth:`track_nowait`."""
        return self.track_nowait(topic, key, meta, auto_untrack=auto_untrack, owner=owner)

    def track_nowait(
        self,
        topic: str,
        key: str,
        meta: Mapping[str, Any] | None = None,
        *,
        auto_untrack: bool = True,
        owner: asyncio.Future[Any] | None = None,
    ) -> PresenceRef:
        """Track one connection of viewer ``key`` on ``topic``.

        Args:
            topic: what is being viewed.
            key: who is viewing; further connections with the same key do not add a viewer.
            meta: data about this connection (copied), returned by :meth:`list`.
            auto_untrack: remove the connection when its owner ends.
            owner: the task or future whose end removes the connection; defaults to the current
                task. A connection whose owner has already ended is not tracked at all.

        Returns:
            The reference of this connection.

        Raises:
            ValueError: ``owner`` was given together with ``auto_untrack=False``.
        """
        if owner is not None and not auto_untrack:
            raise ValueError("LocalPresence.track: owner= requires auto_untrack=True")
        if auto_untrack and owner is None:
            owner = _current_task()
        ref = PresenceRef(topic=topic, key=key, id=str(next(self._ids)))
        if owner is not None and owner.done():
            return ref
        connection = _Connection(meta=dict(meta or {}), owner=owner)
        if owner is not None:
            connection.on_owner_done = partial(self._owner_done, ref)
            owner.add_done_callback(connection.on_owner_done)
        keys = self._topics.setdefault(topic, {})
        new_key = key not in keys
        keys.setdefault(key, {})[ref.id] = connection
        if new_key:
            self._notify(topic)
        return ref

    async def untrack(self, topic: str, key: str, ref: PresenceRef | None = None) -> None:
        """Stop tracking a connection; see :meth:`untrack_nowait`."""
        self.untrack_nowait(topic, key, ref)

    def untrack_nowait(self, topic: str, key: str, ref: PresenceRef | None = None) -> None:
        """Stop tracking connection ``ref`` of ``key``, or all of ``key``'s connections if None.

        Untracking what is not tracked (any more, e.g. after its task ended) does nothing.

        Raises:
            ValueError: ``ref`` belongs to another topic or key.
        """
        if ref is not None and (ref.topic, ref.key) != (topic, key):
            raise ValueError(
                f"LocalPresence.untrack: ref {ref.id} was tracked as ({ref.topic!r}, {ref.key!r}),"
                f" not ({topic!r}, {key!r})"
            )
        keys = self._topics.get(topic)
        if keys is None or key not in keys:
            return
        connections = keys[key]
        if ref is None:
            removed = list(connections.values())
            connections.clear()
        else:
            one = connections.pop(ref.id, None)
            removed = [] if one is None else [one]
        for connection in removed:
            if connection.owner is not None and connection.on_owner_done is not None:
                # Long-lived owners (a websocket task tracking and untracking many topics) would
                # otherwise accumulate dead callbacks.
                connection.owner.remove_done_callback(connection.on_owner_done)
        if connections:
            return
        del keys[key]
        if not keys:
            del self._topics[topic]
        self._notify(topic)

    async def list(self, topic: str) -> PresenceList:
        """The viewers of ``topic``: key -> copies of the meta of each of its connections."""
        return self.list_nowait(topic)

    def list_nowait(self, topic: str) -> PresenceList:
        """Same as :meth:`list`, without awaiting."""
        keys = self._topics.get(topic, {})
        return {key: [dict(c.meta) for c in conns.values()] for key, conns in keys.items()}

    async def count(self, topic: str) -> int:
        """The number of distinct viewer keys on ``topic``."""
        return self.count_nowait(topic)

    def count_nowait(self, topic: str) -> int:
        """Same as :meth:`count`, without awaiting."""
        return len(self._topics.get(topic, ()))

    def topics(self) -> builtins.list[str]:
        """The topics this presence holds anything for (a tracked connection or a subscriber),
        sorted. A topic is forgotten with its last connection and its last subscriber, so a
        presence keeps no memory for the topics it no longer serves."""
        return sorted(self._topics.keys() | self._subscribers.keys())

    def subscribe(self, topic: str, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(count)`` synchronously whenever ``topic``'s viewer count changes.

        Each call passes the count at that moment, so a subscriber never sees a stale count, but
        may see the same count twice when another subscriber changes the topic from its callback.

        Returns:
            A function that unsubscribes; calling it again does nothing.
        """
        token = next(self._ids)
        self._subscribers.setdefault(topic, {})[token] = callback

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(topic)
            if callbacks is None:
                return
            callbacks.pop(token, None)
            if not callbacks:
                del self._subscribers[topic]

        return unsubscribe

    def _owner_done(self, ref: PresenceRef, _owner: asyncio.Future[Any]) -> None:
        self.untrack_nowait(ref.topic, ref.key, ref)

    def _notify(self, topic: str) -> None:
        callbacks = self._subscribers.get(topic)
        if not callbacks:
            return
        # A copy, because a callback may unsubscribe (itself or another) while we iterate.
        for callback in tuple(callbacks.values()):
            try:
                callback(self.count_nowait(topic))
            except Exception:
                _log.exception("presence subscriber %r of topic %r raised", callback, topic)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop: nothing can own the connection
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceTracking:
    """Start option: shut the agent down when nobody has viewed it for a while.

    Attributes:
        presence: where viewers are tracked (e.g. a :class:`LocalPresence` shared by the app).
        topic: the topic viewers of this agent are tracked on, e.g. ``"conversation:123"``.
        grace_period: seconds the agent must stay idle with no viewers before it shuts down;
            it absorbs page reloads (5 s by default).
        enabled: set False to keep the option in configuration while switching it off.

    Raises:
        InvalidOption: a field has the wrong type or value (the message names it).
    """

    presence: Presence
    topic: str
    grace_period: float = 5.0
    enabled: bool = True

    def __post_init__(self) -> None:
        missing = [m for m in _PROTOCOL_METHODS if not callable(getattr(self.presence, m, None))]
        if missing:
            raise InvalidOption(
                f"PresenceTracking.presence: {type(self.presence).__name__} is not a Presence"
                f" (missing {', '.join(missing)}); pass e.g. sagents.LocalPresence()"
            )
        if not isinstance(self.topic, str) or not self.topic:
            raise InvalidOption(
                f"PresenceTracking.topic: must be a non-empty string, got {self.topic!r}"
            )
        grace = self.grace_period
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not math.isfinite(grace)
            or grace < 0
        ):
            raise InvalidOption(
                "PresenceTracking.grace_period: must be a finite number of seconds >= 0,"
                f" got {grace!r}"
            )
        if not isinstance(self.enabled, bool):
            raise InvalidOption(f"PresenceTracking.enabled: must be a bool, got {self.enabled!r}")


@dataclass(slots=True, eq=False)
class _Timer:
    handle: asyncio.TimerHandle
    deadline: float


class ViewerWatch(AsyncResource):
    """Decides when an agent with no viewers shuts down; the server supplies status and action.

    Usage by the agent server::

        watch = ViewerWatch(tracking, on_no_viewers=request_shutdown)
        await watch.start()                         # subscribes, reads the count, may arm
        watch.agent_status_changed(Status.RUNNING)  # on every status change
        ...
        await watch.aclose()                        # on shutdown; cancels the grace timer

    ``on_no_viewers`` is called from the event loop (never from inside ``start`` or a status
    change), at most once, when the agent has been idle-like (see :data:`IDLE_LIKE`) with zero
    viewers for a continuous ``grace_period``; it should only *request* the shutdown, and an
    exception it raises is logged. With ``enabled=False`` the watch does nothing and never calls
    it.

    Args:
        tracking: the presence option of the agent.
        on_no_viewers: what to do when the grace period expires.
        status: the agent's status when the watch starts (a new server is idle).
    """

    __slots__ = (
        "_closed",
        "_fired",
        "_heard",
        "_loop",
        "_on_no_viewers",
        "_status",
        "_timer",
        "_tracking",
        "_unsubscribe",
        "_viewers",
    )

    def __init__(
        self,
        tracking: PresenceTracking,
        on_no_viewers: Callable[[], None],
        *,
        status: Status = Status.IDLE,
    ) -> None:
        self._tracking = tracking
        self._on_no_viewers = on_no_viewers
        self._status = Status(status)
        self._viewers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._timer: _Timer | None = None
        self._heard = False  # a count arrived by subscription (newer than a concurrent read)
        self._fired = False
        self._closed = False

    @property
    def tracking(self) -> PresenceTracking:
        """The presence option being applied."""
        return self._tracking

    @property
    def status(self) -> Status:
        """The agent status last reported."""
        return self._status

    @property
    def viewer_count(self) -> int:
        """Distinct viewers last heard of (0 before :meth:`start` or when disabled)."""
        return self._viewers

    @property
    def grace_remaining(self) -> float | None:
        """Seconds left before ``on_no_viewers`` is called, or None if no grace period runs."""
        if self._timer is None or self._loop is None:
            return None
        return max(0.0, self._timer.deadline - self._loop.time())

    @property
    def fired(self) -> bool:
        """Whether ``on_no_viewers`` has been called (it never will be again)."""
        return self._fired

    async def start(self) -> None:
        """Subscribe to the topic, read the current count and start the grace period if due.

        Raises:
            RuntimeError: the watch was already started or closed.
            Exception: whatever the presence's ``count`` raised (the watch is then closed).
        """
        if self._loop is not None or self._closed:
            raise RuntimeError("ViewerWatch.start: a watch can be started only once")
        self._loop = asyncio.get_running_loop()
        if not self._tracking.enabled:
            return
        presence, topic = self._tracking.presence, self._tracking.topic
        # Subscribe before reading, so that no change between the two is missed.
        self._unsubscribe = presence.subscribe(topic, self._on_count)
        try:
            count = await presence.count(topic)
        except BaseException:
            await self.aclose()
            raise
        if self._closed:
            return
        if not self._heard:
            # With a remote presence a notification may arrive while the read is in flight; it
            # was sent after a change, so it wins over the read.
            self._viewers = count
        self._evaluate()

    def agent_status_changed(self, status: Status) -> None:
        """Tell the watch the agent's new status (cheap and idempotent: call it on every change).

        Leaving the idle-like statuses cancels a running grace period; entering one with no
        viewers starts a fresh one. Moving between idle-like statuses keeps it running.
        """
        self._status = Status(status)
        self._evaluate()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def aclose(self) -> None:
        """Cancel the grace timer and unsubscribe; the watch never fires afterwards. Idempotent."""
        self._closed = True
        self._disarm()
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            unsubscribe()

    def _on_count(self, count: int) -> None:
        if self._closed:
            return
        self._heard = True
        self._viewers = count
        self._evaluate()

    def _evaluate(self) -> None:
        if self._loop is None or self._closed or self._fired or not self._tracking.enabled:
            return
        due = self._status in IDLE_LIKE and self._viewers == 0
        if due and self._timer is None:
            deadline = self._loop.time() + self._tracking.grace_period
            handle = self._loop.call_at(deadline, self._expire)
            self._timer = _Timer(handle=handle, deadline=deadline)
        elif not due:
            self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.handle.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        # Cancelling the handle whenever the condition stops holding already guarantees this;
        # checking again keeps "at most once, only when due" local to this method.
        if self._closed or self._fired or self._status not in IDLE_LIKE or self._viewers != 0:
            return
        self._fired = True
        try:
            self._on_no_viewers()
        except Exception:
            _log.exception(
                "on_no_viewers callback of presence topic %r raised", self._tracking.topic
            )
