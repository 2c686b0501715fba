"""The publisher: one agent's fan-out of events to its subscribers.

The agent server owns one :class:`Publisher`. Everything the agent emits goes through
:meth:`Publisher.publish`, which stamps the event with the agent id and the next sequence number and
hands it to every :class:`Subscription` of the event's channel. A subscription is an async iterator
(and an async context manager); a reconnecting client passes the last ``seq`` it saw as
``after_seq`` and first receives what the bounded replay buffer still holds::

    async with publisher.subscribe(after_seq=last_seen) as events:
        async for event in events:
            ...

Invariants:

- ``seq`` starts at 1 and grows by one for *every* published event; ``main`` and ``debug`` share
  the counter, so the order across channels is total. Nothing else consumes a number.
- Each subscriber receives its channel's events in publication order, with no gaps, until it
  overflows. Debug events reach only ``debug`` subscribers; while there are none,
  :meth:`Publisher.wants_debug` is false and the execution loop does not even build them.
- :meth:`Publisher.publish` never awaits, never blocks and never raises because of a subscriber.
  Memory per subscriber is bounded by its ``queue_size`` (plus, right after a replay, at most
  ``replay_size`` references to buffered events).
- A subscriber that holds ``queue_size`` undelivered events when the next one arrives is detached
  at once. It keeps what it had queued, then receives one :class:`SubscriptionOverflow`, then
  its iterator ends. It is never silently skipped, and others never notice.
- :meth:`Publisher.close` publishes the final event (``AgentShutdown`` is the last one), then
  ends every subscription; each still receives what was already queued.
- A subscription that is closed, leaves its ``async with``, or is garbage-collected is detached
  from the publisher.

Overflow markers do not consume a sequence number. ``SubscriptionOverflow.seq`` is *the seq to
resume after*: reconnecting with ``after_seq=marker.seq`` replays exactly the first event that was
missed (for a replay gap: the first event still buffered). A client that simply remembers the last
``seq`` it saw, markers included, therefore always reconnects at the right place; the marker's
``seq`` may equal the ``seq`` of the event before it. ``dropped`` counts the events of the
subscriber's channel it did not get: after a live overflow, those published from the first missed
one up to the moment the marker is taken (the publisher does not wait for the slow reader to find
out); after a replay gap, the evicted main events after ``after_seq``. The latter is exact unless
debug events were published inside the gap: the publisher keeps no record of evicted events, and
as debug events share the seq counter the count is then an upper bound.

Streamed deltas are kept in the replay buffer only until their message is complete: when an
``LLMMessage`` is published, the ``LLMDeltas`` since the previous one leave the buffer, because
the message carries them whole. A client replaying past them gets the message instead of its
pieces (a seq gap that loses nothing), and an idle conversation does not hold every chunk of its
recent replies (most of its replay buffer's memory).

Choices:

- A plain ``deque`` per subscriber and one waiter future, created only when its consumer is
  actually parked, rather than an ``asyncio.Queue`` each. With 1,000 subscribers, per-subscriber
  delivery *is* the cost of publishing; here it is a length check and an append, and a future is
  woken only for a consumer that is waiting. No locks are needed because everything runs on the
  event loop (the publisher is not thread-safe) and ``publish`` contains no ``await``.
- A subscriber that falls behind is *detached*, not made to drop old or new events: dropping would
  break in-order, gap-free delivery silently, while a detached subscriber knows exactly where it
  stopped and can fetch the rest from the replay buffer with ``after_seq``.
- ``publish`` iterates over a tuple of subscribers rebuilt lazily after the set changed, so
  detaching one in the middle of a fan-out (its overflow, or a garbage-collected subscription's
  finalizer running at an arbitrary allocation) never mutates what is being iterated.
- Cancelling a pending ``__anext__`` does *not* end the subscription, as with anyio and trio memory
  streams: ``asyncio.timeout`` around ``anext(sub)`` must leave the subscription usable. Detaching
  is the job of :meth:`Subscription.aclose`, so ``async with`` is the supported way to subscribe;
  a finalizer detaches a subscription dropped without closing (on CPython as soon as its last
  reference goes, e.g. after ``break`` out of ``async for``) as a safety net.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import fields, replace
from itertools import islice
from types import MemberDescriptorType
from typing import Any, TypeVar

from sagents._errors import ConfigurationError
from sagents._resource import AsyncResource
from sagents.events import Channel, Event, LLMDeltas, LLMMessage, SubscriptionOverflow

__all__ = ["Publisher", "Subscription"]

_E = TypeVar("_E", bound=Event)
_CHANNELS: tuple[Channel, ...] = ("main", "debug")


def _seq_of(event: Event) -> int:
    return event.seq


class _Subscriber:
    """One subscriber's side of the fan-out, held by the publisher.

    It holds no reference to its :class:`Subscription`, so that dropping the handle lets it be
    garbage-collected (and its finalizer detach this state).
    """

    __slots__ = (
        "attached",
        "channel",
        "drop_base",
        "dropped",
        "ended",
        "limit",
        "overflow_pending",
        "overflow_seq",
        "queue",
        "replay",
        "waiter",
    )

    def __init__(self, channel: Channel, limit: int) -> None:
        self.channel: Channel = channel
        self.limit = limit
        # Live events not yet taken; bounded by ``limit`` (the overflow check).
        self.queue: deque[Event] = deque()
        # Replayed events (and a gap marker) taken before ``queue``; not counted against ``limit``
        # so that a reconnecting client with a small queue is not overflowed by its own replay.
        self.replay: deque[Event] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.attached = False  # in the publisher's subscriber set
        self.ended = False  # no live event will ever be added again
        self.overflow_pending = False  # a live-overflow marker is still to be handed out
        self.overflow_seq = 0  # seq to resume after (the event before the first missed one)
        self.drop_base = 0  # channel count before the first missed event
        self.dropped = 0  # events reported lost so far

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            # A consumer cancelled while parked leaves a cancelled future behind until its
            # ``finally`` runs; setting a result on it would raise inside ``publish``.
            if not waiter.done():
                waiter.set_result(None)


class Publisher:
    """Per-agent fan-out of events to ``main`` and ``debug`` subscribers, with a replay buffer.

    Args:
        agent_id: stamped on every published event.
        replay_size: how many recent ``main`` events are kept for ``subscribe(after_seq=...)``;
            0 disables replay.
        queue_size: default bound of a subscriber's queue of undelivered events.

    Raises:
        ConfigurationError: ``replay_size`` is negative or ``queue_size`` is less than 1.
    """

    __slots__ = (
        "_agent_id",
        "_closed",
        "_compacted",
        "_debug",
        "_debug_count",
        "_debug_snapshot",
        "_evicted_seq",
        "_main",
        "_main_count",
        "_main_snapshot",
        "_pending_deltas",
        "_queue_size",
        "_replay",
        "_replay_size",
        "_seq",
    )

    def __init__(self, agent_id: str, *, replay_size: int = 1000, queue_size: int = 1000) -> None:
        if replay_size < 0:
            raise ConfigurationError(f"replay_size must be 0 or more, got {replay_size}")
        _check_queue_size(queue_size)
        self._agent_id = agent_id
        self._replay_size = replay_size
        self._queue_size = queue_size
        self._seq = 0
        self._closed = False
        # Allocated on first use: most agents of a large fleet sit idle, never publishing and
        # never watched, and must cost next to nothing (see docs/runtime.md, "Scale").
        self._replay: deque[Event] | None = None
        self._evicted_seq = 0  # seq of the newest main event evicted from the replay buffer
        self._main_count = 0  # main events published
        self._pending_deltas = 0  # LLMDeltas in the buffer since the last LLMMessage
        self._compacted = 0  # LLMDeltas removed from the buffer once their message was complete
        self._debug_count = 0  # debug events published
        # Dicts used as insertion-ordered sets, so delivery order among subscribers is stable.
        self._main: dict[_Subscriber, None] | None = None
        self._debug: dict[_Subscriber, None] | None = None
        # What ``publish`` iterates; None after the set changed, rebuilt on the next publish.
        self._main_snapshot: tuple[_Subscriber, ...] | None = ()
        self._debug_snapshot: tuple[_Subscriber, ...] | None = ()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Publisher {self._agent_id!r} {state} last_seq={self._seq} "
            f"main={len(self._main or ())} debug={len(self._debug or ())}>"
        )

    @property
    def agent_id(self) -> str:
        """The agent id stamped on every event."""
        return self._agent_id

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last published event (0 before the first)."""
        return self._seq

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def subscriber_count(self) -> int:
        """Attached subscribers on both channels."""
        return len(self._main or ()) + len(self._debug or ())

    def count(self, channel: Channel) -> int:
        """Attached subscribers on one channel.

        Raises:
            ConfigurationError: unknown channel.
        """
        return len(self._subscribers(channel) or ())

    def wants_debug(self) -> bool:
        """Whether any ``debug`` subscriber is attached, i.e. whether debug events are worth
        building."""
        return bool(self._debug)

    def publish(self, event: _E) -> _E:
        """Stamp ``event`` with the agent id and the next ``seq`` and deliver it.

        ``main`` events also enter the replay buffer. Never awaits, never blocks, and never raises
        because of a subscriber: one that has fallen behind is detached.

        Args:
            event: the event to publish; its ``agent_id`` and ``seq`` are replaced.

        Returns:
            The stamped copy, the very object subscribers receive.

        Raises:
            RuntimeError: the publisher is closed (a server bug: nothing may follow the final
                event).
        """
        if self._closed:
            raise RuntimeError(
                f"publisher of agent {self._agent_id!r} is closed; "
                f"nothing may be published after its final event ({event.type})"
            )
        seq = self._seq + 1
        self._seq = seq
        event = _stamp(event, self._agent_id, seq)
        if event.channel == "main":
            self._main_count += 1
            replay = self._replay
            if replay is None:
                replay = self._replay = deque()
            cls = type(event)
            if cls is LLMDeltas:
                self._pending_deltas += 1
            elif cls is LLMMessage and self._pending_deltas:
                self._compact(replay)
            replay.append(event)
            if len(replay) > self._replay_size:
                evicted = replay.popleft()
                self._evicted_seq = evicted.seq
                if type(evicted) is LLMDeltas and self._pending_deltas:
                    self._pending_deltas -= 1
            subscribers = self._main_snapshot
            if subscribers is None:
                subscribers = self._main_snapshot = tuple(self._main or ())
        else:
            self._debug_count += 1
            subscribers = self._debug_snapshot
            if subscribers is None:
                subscribers = self._debug_snapshot = tuple(self._debug or ())
        # The hot loop: 1,000 subscribers means 1,000 iterations per event, so it is inlined.
        for sub in subscribers:
            queue = sub.queue
            if len(queue) < sub.limit:
                queue.append(event)
                if sub.waiter is not None:
                    sub.wake()
            else:
                self._overflow(sub, event)
        return event

    def subscribe(
        self,
        channel: Channel = "main",
        *,
        after_seq: int | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Attach a subscriber, at once: no event published after this call is missed.

        Args:
            channel: ``"main"`` or ``"debug"``.
            after_seq: ``main`` only. First replay the buffered events with ``seq > after_seq``.
                If some of the events after ``after_seq`` were already evicted, a
                :class:`SubscriptionOverflow` saying how many comes first. It filters the replay
                only: live events are all delivered, whatever their ``seq``.
            queue_size: bound of this subscriber's queue; defaults to the publisher's.

        Returns:
            The subscription. After :meth:`close` it is already ended: it yields the replay,
            if any, then stops.

        Raises:
            ConfigurationError: unknown channel, ``queue_size`` < 1, a negative ``after_seq``, or
                ``after_seq`` on the debug channel (debug events are not kept).
        """
        subscribers = self._subscribers(channel)
        if subscribers is None:
            subscribers = {}
            if channel == "main":
                self._main = subscribers
            else:
                self._debug = subscribers
        limit = self._queue_size if queue_size is None else queue_size
        _check_queue_size(limit)
        sub = _Subscriber(channel, limit)
        if after_seq is not None:
            if channel != "main":
                raise ConfigurationError("after_seq applies to the main channel only")
            if after_seq < 0:
                raise ConfigurationError(f"after_seq must be 0 or more, got {after_seq}")
            self._replay_into(sub, after_seq)
        if self._closed:
            sub.ended = True
        else:
            sub.attached = True
            subscribers[sub] = None
            self._invalidate(channel)
        return Subscription(self, sub)

    def close(self, final: Event | None = None) -> None:
        """Publish ``final`` (if given) and end every subscription.

        Each subscriber still receives everything already queued, then its iterator stops.
        Closing again does nothing.

        Args:
            final: the last event, usually ``AgentShutdown``.
        """
        if self._closed:
            return
        if final is not None:
            self.publish(final)
        self._closed = True
        subscribers = [*(self._main or ()), *(self._debug or ())]
        self._main = self._debug = None
        self._main_snapshot = self._debug_snapshot = ()
        for sub in subscribers:
            sub.attached = False
            sub.ended = True
            sub.wake()

    # -- internals ---------------------------------------------------------------------------

    def _subscribers(self, channel: Channel) -> dict[_Subscriber, None] | None:
        if channel == "main":
            return self._main
        if channel == "debug":
            return self._debug
        raise ConfigurationError(f"unknown channel {channel!r}; use one of {_CHANNELS}")

    def _invalidate(self, channel: Channel) -> None:
        if channel == "main":
            self._main_snapshot = None
        else:
            self._debug_snapshot = None

    def _detach(self, sub: _Subscriber) -> None:
        # Idempotent, and ``pop`` rather than ``del``: a finalizer may run between any two lines.
        if sub.attached:
            sub.attached = False
            subscribers = self._subscribers(sub.channel)
            if subscribers is not None:
                subscribers.pop(sub, None)
            self._invalidate(sub.channel)

    def _published(self, channel: Channel) -> int:
        return self._main_count if channel == "main" else self._debug_count

    def _overflow(self, sub: _Subscriber, event: Event) -> None:
        if not sub.attached:
            # Already detached during this very fan-out (its finalizer ran); nobody will read it.
            return
        self._detach(sub)
        sub.ended = True
        sub.overflow_pending = True
        sub.overflow_seq = event.seq - 1
        # ``event`` is already counted and is the first one this subscriber misses.
        sub.drop_base = self._published(sub.channel) - 1
        sub.wake()

    def _compact(self, replay: deque[Event]) -> None:
        """Drop the buffered deltas of the message being published (they are all after the
        previous message, so only the tail is walked)."""
        kept: list[Event] = []
        remaining = self._pending_deltas
        while remaining and replay:
            event = replay.pop()
            if type(event) is LLMDeltas:
                remaining -= 1
            else:
                kept.append(event)
        replay.extend(reversed(kept))
        self._compacted += self._pending_deltas - remaining
        self._pending_deltas = 0

    def _replay_into(self, sub: _Subscriber, after_seq: int) -> None:
        replay = self._replay
        if replay is None:
            replay = deque()
        start = bisect_right(replay, after_seq, key=_seq_of)
        events: deque[Event] = deque(islice(replay, start, None))
        if after_seq < self._evicted_seq:
            evicted = self._main_count - len(replay) - self._compacted
            # Exact unless debug events sit in the gap (see the module docstring).
            missing = min(evicted, self._evicted_seq - after_seq)
            sub.dropped = missing
            events.appendleft(
                SubscriptionOverflow(
                    agent_id=self._agent_id, seq=self._evicted_seq, dropped=missing
                )
            )
        if events:
            sub.replay = events


def _stamp(event: _E, agent_id: str, seq: int) -> _E:
    """``replace(event, agent_id=..., seq=...)``, as cheaply as possible: a new object per
    published event is the hot path (about a dozen per turn)."""
    cls = type(event)
    stamper = _STAMPERS.get(cls)
    if stamper is None:
        stamper = _STAMPERS[cls] = _make_stamper(cls)
    return stamper(event, agent_id, seq)  # type: ignore[no-any-return]


_Stamper = Callable[[Any, str, int], Any]
_STAMPERS: dict[type[Any], _Stamper] = {}


def _make_stamper(cls: type[Event]) -> _Stamper:
    """A function copying an event of ``cls`` field by field onto a new instance, with the given
    ``agent_id`` and ``seq``, without re-running ``__init__``: the fields are already valid and
    events are immutable, so a shallow copy is what ``replace`` would build.

    Generated per class (as ``dataclasses`` generates ``__init__``) so that each field costs one
    attribute read and one slot write through its descriptor, with no name lookups or loops; a
    class this cannot copy exactly (a ``__post_init__``, a field that is no slot) gets ``replace``.
    """
    names = [f.name for f in fields(cls)]
    found = [getattr(cls, n, None) for n in names]
    descriptors = [d for d in found if isinstance(d, MemberDescriptorType)]
    if hasattr(cls, "__post_init__") or len(descriptors) != len(names):

        def stamp_by_replace(event: Any, agent_id: str, seq: int) -> Any:
            return replace(event, agent_id=agent_id, seq=seq)

        return stamp_by_replace
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = ["def stamp(event, agent_id, seq):", "    copy = new(cls)"]
    for i, (name, descriptor) in enumerate(zip(names, descriptors, strict=True)):
        namespace[f"set{i}"] = descriptor.__set__
        value = name if name in ("agent_id", "seq") else f"event.{name}"
        lines.append(f"    set{i}(copy, {value})")
    lines.append("    return copy")
    # Safe: the source holds only dataclass field names, which are identifiers.
    exec("\n".join(lines), namespace)
    stamper: _Stamper = namespace["stamp"]
    return stamper


def _check_queue_size(queue_size: int) -> None:
    if queue_size < 1:
        raise ConfigurationError(f"queue_size must be at least 1, got {queue_size}")


class Subscription(AsyncResource):
    """One subscriber's stream of events: an async iterator and an async context manager.

    Obtained from :meth:`Publisher.subscribe`, never built directly. Iteration ends after the
    publisher closes (everything queued is delivered first), after an overflow (the queued events,
    then one :class:`SubscriptionOverflow`), or at once after :meth:`aclose`. Only one task may
    wait on a subscription at a time.
    """

    __slots__ = ("_publisher", "_sub")

    def __init__(self, publisher: Publisher, sub: _Subscriber) -> None:
        self._publisher = publisher
        self._sub = sub

    def __repr__(self) -> str:
        state = "finished" if self.finished else "attached" if self._sub.attached else "ending"
        return f"<Subscription {self._publisher.agent_id!r} {self._sub.channel} {state}>"

    @property
    def channel(self) -> Channel:
        """The channel subscribed to."""
        return self._sub.channel

    @property
    def dropped(self) -> int:
        """Events this subscription lost: a replay gap, plus, after an overflow, the events of its
        channel published since (frozen once the overflow marker is taken or it is closed)."""
        sub = self._sub
        if sub.overflow_pending:
            return sub.dropped + self._publisher._published(sub.channel) - sub.drop_base
        return sub.dropped

    @property
    def finished(self) -> bool:
        """Whether iteration is over: nothing is left to take and nothing more will come."""
        sub = self._sub
        return sub.ended and not sub.replay and not sub.queue and not sub.overflow_pending

    @property
    def replay_pending(self) -> int:
        """Replayed events (and a gap marker) not taken yet: they come first, and do not count
        against the queue bound."""
        return len(self._sub.replay or ())

    def get_nowait(self) -> Event | None:
        """The next event if one is ready, else None (also once :attr:`finished`)."""
        sub = self._sub
        replay = sub.replay
        if replay is not None:
            event = replay.popleft()
            if not replay:
                sub.replay = None
            return event
        if sub.queue:
            return sub.queue.popleft()
        if sub.overflow_pending:
            dropped = self._freeze_overflow()
            sub.dropped += dropped
            return SubscriptionOverflow(
                agent_id=self._publisher.agent_id, seq=sub.overflow_seq, dropped=dropped
            )
        return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        sub = self._sub
        queue = sub.queue
        while True:
            # The common case, kept free of method calls: live events, no replay left.
            if queue and sub.replay is None:
                return queue.popleft()
            event = self.get_nowait()
            if event is not None:
                return event
            if sub.ended:
                raise StopAsyncIteration
            if sub.waiter is not None:
                raise RuntimeError("another task is already waiting on this subscription")
            waiter = asyncio.get_running_loop().create_future()
            sub.waiter = waiter
            try:
                await waiter
            finally:
                # Cancelled or woken: either way this future is spent. Cancellation leaves the
                # subscription usable (see the module docstring).
                if sub.waiter is waiter:
                    sub.waiter = None

    async def aclose(self) -> None:
        """Detach from the publisher and end iteration at once, discarding what is queued.

        Idempotent. A task waiting in ``__anext__`` wakes and stops.
        """
        self._close()

    def __del__(self) -> None:
        # Safety net for a subscription dropped without ``aclose``. It must not raise, and
        # ``_sub`` is unset if ``__init__`` never ran.
        sub: _Subscriber | None = getattr(self, "_sub", None)
        if sub is not None and sub.attached:
            self._publisher._detach(sub)

    def _freeze_overflow(self) -> int:
        sub = self._sub
        sub.overflow_pending = False
        return self._publisher._published(sub.channel) - sub.drop_base

    def _close(self) -> None:
        sub = self._sub
        self._publisher._detach(sub)
        if sub.overflow_pending:
            sub.dropped += self._freeze_overflow()
        sub.ended = True
        sub.queue.clear()
        sub.replay = None
        sub.wake()
