"""The event feed from a host to a client process: every subscription of one process to the
agents of one host travels over one Ray stream.

A Ray streamed item costs the receiving process about half a millisecond of CPU whatever it
carries, and a turn publishes its events in three or four bursts. With a stream per
subscription, a process following many conversations spent more on Ray's machinery than a
whole turn costs in one process. Here a process opens one stream per host (the *feed*), the
host's subscriptions for it put their events into the feed, and each streamed item carries
everything pending for that process: under load, the events of many conversations per item.

- **Host side** (:class:`Feed`): one per client process. Each subscription has a pump task
  reading the agent's in-process subscription into the feed. A subscription whose events the
  client has not taken reach ``window`` stops being read, so its in-process queue fills and
  overflows by the in-process rule (the queued events, one ``SubscriptionOverflow``, the end).
- **Client side** (:class:`FeedLink`): one per host. A task reads the stream and hands each
  subscription its events; a subscription whose reader falls ``window`` events behind
  overflows here by the same rule, and is detached on the host.

Flow control: the host sends at most ``ahead`` items beyond what the client has read, and the
client says how far it has read every ``ahead // 2`` items (one call, not awaited). Ray's own
generator backpressure would do the same with an acknowledgement per item, which doubled the
CPU a streamed item costs both processes (measured: +250 µs each, +0.27 ms of latency).
Should the client stop reading (its loop is starved), the host stops sending, its
subscriptions stop being read and overflow by the in-process rule: nothing grows without bound.

Ordering: the events of one subscription arrive in order (one pump, one stream). A
subscription is attached by a call that returns once the host has subscribed it; its events may
arrive before that call's answer, and wait in the subscription.

A client process that dies (killed, out of memory, a web worker recycled) tells no one, and
Ray (2.60) neither cancels an actor's streaming generator whose caller died nor fails its
yields (their reports to the dead caller fail and are only logged): the feed would wait, its
subscriptions open, forever. So the client also calls the host's ``feed_owner``, pending for as
long as the feed lives, and hands its result (an object the client owns) to the feed, which
awaits it: Ray fails an object whose owner died with ``OwnerDiedError`` (measured: 2 s after a
SIGKILL), and the feed ends, its subscriptions closed. Nothing travels while the client lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import ray

from sagents._errors import AgentUnavailable
from sagents.events import Event
from sagents.ray import _wire as wire
from sagents.runtime._publisher import Subscription

__all__ = ["Feed", "FeedItem", "FeedLink", "FeedSubscriber"]

_log = logging.getLogger("sagents.ray")

#: One streamed item: ``(subscription id, events, ended)`` per subscription with news.
FeedItem = list[tuple[int, tuple[Event, ...], bool]]


class Feed:
    """A host's subscriptions for one client process (see the module docstring).

    Args:
        window: events a subscription may have waiting in the feed before its pump stops
            reading it (its in-process queue then overflows).
        ahead: items that may be sent beyond what the client said it has read.
    """

    def __init__(self, window: int, ahead: int = 8) -> None:
        self.window = window
        self.ahead = ahead
        self._sent = 0
        self._read = 0
        self._credit = asyncio.Event()
        self._pending: dict[int, list[Event]] = {}
        self._ended: set[int] = set()
        self._pumps: dict[int, asyncio.Task[None]] = {}
        self._room: dict[int, asyncio.Event] = {}
        self._news = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        """Whether the feed has ended (its client closed it, or is gone)."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Return once the feed has ended."""
        await self._closed.wait()

    def attach(self, sub_id: int, subscription: Subscription) -> None:
        """Start feeding ``subscription``'s events as ``sub_id``."""
        self._room[sub_id] = asyncio.Event()
        self._pumps[sub_id] = asyncio.get_running_loop().create_task(
            self._pump(sub_id, subscription)
        )

    def detach(self, sub_id: int) -> None:
        """The client closed ``sub_id``: stop reading it (its in-process subscription
        closes)."""
        pump = self._pumps.pop(sub_id, None)
        if pump is not None:
            pump.cancel()
        self._pending.pop(sub_id, None)
        self._ended.discard(sub_id)
        self._room.pop(sub_id, None)

    def read(self, count: int) -> None:
        """The client has read ``count`` items of this feed."""
        if count > self._read:
            self._read = count
            self._credit.set()

    def close(self) -> None:
        """The client is gone: stop every pump (their in-process subscriptions close), and
        end the stream."""
        for sub_id in list(self._pumps):
            self.detach(sub_id)
        self._closed.set()
        self._news.set()
        self._credit.set()

    async def _pump(self, sub_id: int, subscription: Subscription) -> None:
        room = self._room[sub_id]
        try:
            async with subscription:
                async for event in subscription:
                    pending = self._pending.setdefault(sub_id, [])
                    pending.append(event)
                    self._news.set()
                    while len(pending) >= self.window and sub_id in self._pumps:
                        room.clear()
                        await room.wait()
                        pending = self._pending.setdefault(sub_id, [])
        finally:
            if self._pumps.pop(sub_id, None) is not None:  # not detached: say it ended
                self._ended.add(sub_id)
                self._pending.setdefault(sub_id, [])
                self._news.set()
            self._room.pop(sub_id, None)

    async def items(self, owner: Awaitable[object] | None = None) -> AsyncIterator[bytes]:
        """The stream: each item everything pending, once there is something (a
        :data:`FeedItem`, pickled: :mod:`sagents.ray._wire`), until the feed is closed.

        Args:
            owner: pending for as long as the client lives (an object it owns, which Ray
                fails once it has died); the feed closes when it is done, whichever way.
        """
        watch = None
        if owner is not None:
            watch = asyncio.get_running_loop().create_task(self._watch(owner))
        try:
            while not self.closed:
                await self._news.wait()
                while self._sent - self._read >= self.ahead and not self.closed:
                    self._credit.clear()
                    await self._credit.wait()
                if self.closed:
                    break
                self._news.clear()
                item: FeedItem = []
                pending, self._pending = self._pending, {}
                for sub_id, events in pending.items():
                    ended = sub_id in self._ended
                    if ended:
                        self._ended.discard(sub_id)
                    item.append((sub_id, tuple(events), ended))
                    room = self._room.get(sub_id)
                    if room is not None:
                        room.set()
                if item:
                    self._sent += 1
                    yield wire.dumps(item)
        finally:
            if watch is not None:
                watch.cancel()
            self.close()

    async def _watch(self, owner: Awaitable[object]) -> None:
        try:
            await owner
        except Exception as exc:  # OwnerDiedError: the client process died
            _log.info("an event feed's client is gone (%s): its feed ends", type(exc).__name__)
        self.close()


class FeedLink:
    """A client process's end of one host's feed (see the module docstring).

    Args:
        host: the host's actor handle.
        host_name: its name, for errors.
        window: events a subscription may hold unread here before it overflows.
        ahead: feed items the host may send ahead of this process's reading.
    """

    _clients = itertools.count()

    def __init__(self, host: Any, host_name: str, window: int, ahead: int) -> None:
        self.host = host
        self.host_name = host_name
        self.client_id = f"{uuid.uuid4().hex}-{next(self._clients)}"
        self._window = window
        self._ids = itertools.count(1)
        self._subscriptions: dict[int, FeedSubscriber] = {}
        self._read_count = 0
        self._said = 0
        self._say_every = max(1, ahead // 2)
        # Pending while the feed lives; the feed awaits it, and Ray fails it once this
        # process has died (an object whose owner died): then the host ends the feed. In a
        # list: Ray passes it on without waiting for it.
        self._owner = host.feed_owner.remote(self.client_id)
        stream = host.feed.options(num_returns="streaming").remote(
            self.client_id, window, ahead, [self._owner]
        )
        self._stream = stream
        self._reader = asyncio.get_running_loop().create_task(
            self._read(stream), name=f"sagents feed from {host_name}"
        )
        self.on_lost: Callable[[FeedLink], None] | None = None

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    def add(self, subscriber: FeedSubscriber) -> int:
        sub_id = next(self._ids)
        self._subscriptions[sub_id] = subscriber
        return sub_id

    def remove(self, sub_id: int) -> None:
        """Stop ``sub_id``: forgotten here, detached on the host."""
        if self._subscriptions.pop(sub_id, None) is not None and self.alive:
            self.host.detach.remote(self.client_id, sub_id)

    async def _read(self, stream: Any) -> None:
        try:
            async for ref in stream:
                item: FeedItem = wire.loads(await ref)
                self._read_count += 1
                if self._read_count - self._said >= self._say_every:
                    self._said = self._read_count
                    self.host.feed_read.remote(self.client_id, self._read_count)
                for sub_id, events, ended in item:
                    subscriber = self._subscriptions.get(sub_id)
                    if subscriber is None:
                        continue  # closed here meanwhile
                    if not subscriber.deliver(events, ended, self._window):
                        self.remove(sub_id)  # it overflowed here, or it ended
            error: BaseException = AgentUnavailable(
                f"sagents host {self.host_name} ended its event feed"
            )
        except asyncio.CancelledError:
            raise
        except ray.exceptions.RayActorError as exc:
            error = AgentUnavailable(
                f"sagents host {self.host_name} stopped answering ({exc}); subscribe again "
                "with after_seq once the agent runs again (Session.ensure_running)"
            )
        except Exception as exc:  # a Ray failure of the stream itself
            _log.error("the event feed from sagents host %s failed: %r", self.host_name, exc)
            error = AgentUnavailable(f"the event feed from sagents host {self.host_name} failed")
        subscribers, self._subscriptions = self._subscriptions, {}
        for subscriber in subscribers.values():
            subscriber.fail(error)
        if self.on_lost is not None:
            self.on_lost(self)

    async def aclose(self) -> None:
        self._subscriptions.clear()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        ray.cancel(self._stream)


class FeedSubscriber(Protocol):
    """What a :class:`FeedLink` delivers to (a remote subscription)."""

    def deliver(self, events: tuple[Event, ...], ended: bool, window: int) -> bool:
        """Take ``events`` (then the end, if ``ended``); False once it has ended (it
        overflowed: more than ``window`` events unread)."""

    def fail(self, error: BaseException) -> None:
        """The feed is lost: end with ``error``."""
