"""A host's event feed for one client process (``sagents.ray._feed.Feed``), without a
cluster: the items it would stream, read here, and its end when the client is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("ray")

from sagents import AgentUnavailable, Status
from sagents.events import StatusChanged, SubscriptionOverflow
from sagents.ray import _wire
from sagents.ray._feed import Feed, FeedItem
from sagents.ray._host import Host
from sagents.runtime._publisher import Publisher


def status(publisher: Publisher, n: int = 1) -> None:
    for _ in range(n):
        publisher.publish(StatusChanged(status=Status.RUNNING))


async def settle() -> None:
    """Let every ready task run (the pumps, the feed)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def next_item(items: Any) -> FeedItem:
    item: FeedItem = _wire.loads(await anext(items))
    return item


async def test_each_item_carries_everything_pending() -> None:
    publisher = Publisher("a")
    feed = Feed(window=100, ahead=8)
    feed.attach(1, publisher.subscribe())
    items = feed.items()
    status(publisher, 3)
    await settle()
    [(sub_id, events, ended)] = await next_item(items)
    assert (sub_id, [e.seq for e in events], ended) == (1, [1, 2, 3], False)
    feed.close()


async def test_the_feed_sends_no_more_than_ahead_items_beyond_what_was_read() -> None:
    publisher = Publisher("a")
    feed = Feed(window=100, ahead=2)
    feed.attach(1, publisher.subscribe())
    items = feed.items()
    for seq in (1, 2):
        status(publisher)
        await settle()
        assert [e.seq for e in (await next_item(items))[0][1]] == [seq]
    status(publisher, 2)
    third = asyncio.ensure_future(next_item(items))
    await settle()
    assert not third.done()  # two items out, none said read
    feed.read(1)
    [(_, events, _)] = await third
    assert [e.seq for e in events] == [3, 4]  # what waited meanwhile, in one item
    feed.close()


async def test_a_client_that_stops_reading_makes_the_subscription_overflow_on_the_host() -> None:
    publisher = Publisher("a")
    feed = Feed(window=4, ahead=1)
    feed.attach(1, publisher.subscribe(queue_size=4))
    items = feed.items()
    status(publisher)
    await settle()
    await next_item(items)  # the one item allowed ahead, never said read
    sent = 1
    status(publisher, 20)  # the pump takes 4, stops; the in-process queue takes 4, overflows
    await settle()
    feed.read(1)
    received: list[Any] = []
    ended = False
    while not ended:
        await settle()
        for _, events, end in await next_item(items):
            received += events
            ended = ended or end
        sent += 1
        feed.read(sent)
    kept = [e.seq for e in received if not isinstance(e, SubscriptionOverflow)]
    assert kept == list(range(2, 2 + len(kept)))  # in order, without a gap
    overflow = received[-1]
    assert isinstance(overflow, SubscriptionOverflow)
    assert overflow.seq == kept[-1]
    assert overflow.dropped == 21 - kept[-1]
    feed.close()


async def test_the_feed_ends_when_its_owner_fails_and_closes_its_subscriptions() -> None:
    publisher = Publisher("a")
    feed = Feed(window=100, ahead=8)
    feed.attach(1, publisher.subscribe())
    await settle()
    assert publisher.subscriber_count == 1
    owner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    items = feed.items(owner)
    waiting = asyncio.ensure_future(anext(items))
    await settle()
    assert not waiting.done()  # nothing to send: parked
    owner.set_exception(RuntimeError("the owner died"))  # as Ray's OwnerDiedError
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert feed.closed
    await settle()
    assert publisher.subscriber_count == 0
    await feed.wait_closed()


async def test_a_closed_feed_ends_also_while_waiting_for_credit() -> None:
    publisher = Publisher("a")
    feed = Feed(window=100, ahead=1)
    feed.attach(1, publisher.subscribe())
    owner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    items = feed.items(owner)
    status(publisher)
    await settle()
    await next_item(items)  # the one item allowed ahead, never said read
    status(publisher)
    waiting = asyncio.ensure_future(anext(items))
    await settle()
    assert not waiting.done()
    feed.close()  # the client closed it (Ray cancels the stream: the same close)
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert publisher.subscriber_count == 0


async def test_an_owner_that_lives_keeps_the_feed_open() -> None:
    publisher = Publisher("a")
    feed = Feed(window=100, ahead=8)
    feed.attach(1, publisher.subscribe())
    owner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    items = feed.items(owner)
    for seq in (1, 2):
        status(publisher)
        await settle()
        assert [e.seq for e in (await next_item(items))[0][1]] == [seq]
    assert not feed.closed
    feed.close()
    with pytest.raises(StopAsyncIteration):
        await anext(items)


async def test_a_host_forgets_a_feed_that_ended_and_opens_it_no_more() -> None:
    # Calls to a host may start out of order: a late attach or feed_owner must not open the
    # feed again (nothing would ever close it).
    host = Host("h", directory=None, runtime_options={})
    owner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stream = host.feed("client", 100, 8, [owner])
    holding = asyncio.ensure_future(host.feed_owner("client"))
    waiting = asyncio.ensure_future(anext(stream))
    await settle()
    assert list(host._feeds) == ["client"]
    assert not holding.done()
    owner.set_exception(RuntimeError("the owner died"))
    with pytest.raises(StopAsyncIteration):
        await waiting
    await holding
    assert host._feeds == {}
    await host.feed_owner("client")  # at once
    with pytest.raises(AgentUnavailable):
        host.attach("client", 1, "a", "main", None)
    assert host._feeds == {}
