"""The publisher (E1–E4, E40, L83, L84): stamping, fan-out, replay, overflow, close, detaching."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagents import Status
from sagents._errors import ConfigurationError
from sagents.events import (
    AgentShutdown,
    Channel,
    Event,
    MiddlewareAction,
    StatusChanged,
    SubscriptionOverflow,
    event_types,
)
from sagents.runtime._publisher import Publisher, Subscription


def main_event() -> Event:
    return StatusChanged(status=Status.RUNNING)


def debug_event() -> Event:
    return MiddlewareAction(middleware="m")


def event_of(channel: Channel) -> Event:
    return main_event() if channel == "main" else debug_event()


def drain(sub: Subscription) -> list[Event]:
    """Everything ready right now, without waiting."""
    out: list[Event] = []
    while (event := sub.get_nowait()) is not None:
        out.append(event)
    return out


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


async def collect(sub: Subscription) -> list[Event]:
    return [event async for event in sub]


# -- stamping and ordering ---------------------------------------------------------------------


def test_publish_stamps_agent_id_and_one_seq_counter_shared_by_both_channels() -> None:
    pub = Publisher("agent-1")
    assert pub.last_seq == 0
    original = StatusChanged(agent_id="someone-else", seq=42, status=Status.RUNNING)
    first = pub.publish(original)
    second = pub.publish(debug_event())
    third = pub.publish(main_event())
    assert (first.agent_id, first.seq, first.status) == ("agent-1", 1, Status.RUNNING)
    assert isinstance(first, StatusChanged)
    assert (second.seq, third.seq) == (2, 3)
    assert {second.agent_id, third.agent_id} == {"agent-1"}
    assert original.seq == 42  # events are immutable: publish stamps a copy
    assert pub.last_seq == 3


def sample(cls: type[Event]) -> Event:
    """An instance of ``cls`` whose every field holds a distinct value (events do not check the
    types of their fields, so plain markers tell a swapped or dropped field apart)."""
    values = {f.name: f"{cls.__name__}.{f.name}" for f in fields(cls) if f.init}
    return cls(**{**values, "agent_id": "loop", "seq": 0})


@pytest.mark.parametrize("cls", sorted(event_types().values(), key=lambda c: c.__name__))
def test_stamping_copies_every_event_class_exactly_as_replace_does(cls: type[Event]) -> None:
    pub = Publisher("agent-1")
    pub.publish(main_event())
    event = sample(cls)
    stamped = pub.publish(event)
    expected = replace(event, agent_id="agent-1", seq=2)
    assert type(stamped) is cls
    assert stamped == expected
    assert [getattr(stamped, f.name) for f in fields(cls)] == [
        getattr(expected, f.name) for f in fields(cls)
    ]
    # A new object: the caller (e.g. a collecting sink) may still hold the original.
    assert stamped is not event
    assert (event.agent_id, event.seq) == ("loop", 0)
    assert all(getattr(stamped, f.name) is getattr(event, f.name) for f in fields(cls)[2:])


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked(Event):
    """An event class with a ``__post_init__``: stamping must run it, as ``replace`` does."""

    type: ClassVar[str] = "checked"
    value: int
    doubled: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doubled", self.value * 2)


@dataclass(frozen=True, kw_only=True)
class Unslotted(Event):
    type: ClassVar[str] = "unslotted"
    value: int


@pytest.mark.parametrize("event", [Checked(value=3), Unslotted(value=3)])
def test_stamping_event_classes_it_cannot_copy_slot_by_slot_falls_back_to_replace(
    event: Event,
) -> None:
    pub = Publisher("agent-1")
    stamped = pub.publish(event)
    assert stamped == replace(event, agent_id="agent-1", seq=1)
    assert stamped is not event
    assert event.seq == 0


def test_several_subscribers_receive_every_event_in_order() -> None:
    pub = Publisher("a")
    subs = [pub.subscribe() for _ in range(3)]
    published = [pub.publish(main_event()) for _ in range(10)]
    for sub in subs:
        received = drain(sub)
        assert received == published
        assert all(got is sent for got, sent in zip(received, published, strict=True))
        assert sub.dropped == 0


async def test_parked_consumers_are_woken_in_order_without_gaps() -> None:
    pub = Publisher("a")
    subs = [pub.subscribe() for _ in range(3)]
    consumers = [asyncio.create_task(collect(sub)) for sub in subs]
    for round_ in range(5):
        for _ in range(round_):
            pub.publish(main_event())
        await asyncio.sleep(0)  # let the consumers run (and park again)
    pub.close()
    for received in await asyncio.gather(*consumers):
        assert seqs(received) == list(range(1, 11))


def test_debug_events_never_reach_main_subscribers() -> None:
    pub = Publisher("a")
    main = pub.subscribe()
    debug = pub.subscribe("debug")
    for channel in ("main", "debug", "debug", "main", "debug"):
        pub.publish(event_of(channel))
    assert seqs(drain(main)) == [1, 4]
    assert seqs(drain(debug)) == [2, 3, 5]
    assert main.channel == "main"
    assert debug.channel == "debug"


async def test_wants_debug_is_true_only_while_a_debug_subscriber_is_attached() -> None:
    pub = Publisher("a")
    assert not pub.wants_debug()
    main = pub.subscribe()
    assert not pub.wants_debug()
    first = pub.subscribe("debug")
    second = pub.subscribe("debug")
    assert pub.wants_debug()
    await first.aclose()
    assert pub.wants_debug()
    await second.aclose()
    assert not pub.wants_debug()
    assert (pub.count("main"), pub.count("debug"), pub.subscriber_count) == (1, 0, 1)
    await main.aclose()


async def test_an_event_published_right_after_subscribe_is_never_missed() -> None:
    pub = Publisher("a")
    sub = pub.subscribe()
    pub.publish(main_event())  # before the consumer ever runs
    consumer = asyncio.create_task(collect(sub))
    pub.close()
    assert seqs(await consumer) == [1]


# -- replay (E40) ------------------------------------------------------------------------------


def test_replay_after_seq_with_everything_still_buffered() -> None:
    pub = Publisher("a")
    for channel in ("main", "debug", "main", "main"):
        pub.publish(event_of(channel))
    sub = pub.subscribe(after_seq=1)
    pub.publish(main_event())
    assert seqs(drain(sub)) == [3, 4, 5]
    assert sub.dropped == 0
    assert seqs(drain(pub.subscribe(after_seq=0))) == [1, 3, 4, 5]


def test_replay_of_a_partially_evicted_range_reports_the_gap_first() -> None:
    pub = Publisher("a", replay_size=3)
    for _ in range(10):
        pub.publish(main_event())
    sub = pub.subscribe(after_seq=2)
    pub.publish(main_event())
    received = drain(sub)
    marker = received[0]
    assert isinstance(marker, SubscriptionOverflow)
    # Events 3..7 are gone; resuming after 7 replays what is still buffered.
    assert (marker.agent_id, marker.seq, marker.dropped) == ("a", 7, 5)
    assert seqs(received[1:]) == [8, 9, 10, 11]
    assert sub.dropped == 5
    assert pub.last_seq == 11  # the marker took no seq number
    assert seqs(drain(pub.subscribe(after_seq=marker.seq))) == [8, 9, 10, 11]


def test_deltas_leave_the_replay_buffer_once_their_message_is_complete() -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk

    from sagents.events import LLMDeltas, LLMMessage, ToolCallIdentified

    def deltas(text: str) -> LLMDeltas:
        return LLMDeltas(deltas=[AIMessageChunk(content=text)])

    pub = Publisher("a")
    live = pub.subscribe()
    pub.publish(main_event())  # 1 running
    pub.publish(deltas("Hel"))  # 2
    pub.publish(ToolCallIdentified(tool_call_id="c", name="t", display_text="T"))  # 3
    pub.publish(deltas("lo"))  # 4
    mid_message = pub.subscribe(after_seq=1)  # a tab reconnecting while it streams
    pub.publish(LLMMessage(message=AIMessage("Hello")))  # 5
    pub.publish(deltas("Bye"))  # 6: the next message, still streaming
    # Live subscribers and a replay taken mid-message get every delta.
    assert seqs(drain(live)) == [1, 2, 3, 4, 5, 6]
    assert seqs(drain(mid_message)) == [2, 3, 4, 5, 6]
    # Replays taken afterwards skip the completed message's deltas, and lose nothing else.
    replayed = drain(pub.subscribe(after_seq=0))
    assert seqs(replayed) == [1, 3, 5, 6]
    assert not any(isinstance(e, SubscriptionOverflow) for e in replayed)
    pub.publish(LLMMessage(message=AIMessage("Bye")))  # 7
    assert seqs(drain(pub.subscribe(after_seq=2))) == [3, 5, 7]


def test_compaction_keeps_the_eviction_count_exact() -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk

    from sagents.events import LLMDeltas, LLMMessage

    pub = Publisher("a", replay_size=3)
    for _ in range(3):
        pub.publish(LLMDeltas(deltas=[AIMessageChunk(content="x")]))
    pub.publish(LLMMessage(message=AIMessage("xxx")))  # 4; buffer: [4]
    for _ in range(4):
        pub.publish(main_event())  # 5..8; buffer: [6, 7, 8] (4 and 5 evicted)
    received = drain(pub.subscribe(after_seq=3))
    marker = received[0]
    assert isinstance(marker, SubscriptionOverflow)
    assert (marker.seq, marker.dropped) == (5, 2)
    assert seqs(received[1:]) == [6, 7, 8]


def test_replay_after_the_last_seq_replays_nothing() -> None:
    pub = Publisher("a", replay_size=3)
    for _ in range(5):
        pub.publish(main_event())
    up_to_date = pub.subscribe(after_seq=pub.last_seq)
    ahead = pub.subscribe(after_seq=99)  # filters the replay only
    pub.publish(main_event())
    assert seqs(drain(up_to_date)) == [6]
    assert seqs(drain(ahead)) == [6]


def test_without_a_replay_buffer_everything_missed_is_reported() -> None:
    pub = Publisher("a", replay_size=0)
    for _ in range(4):
        pub.publish(main_event())
    received = drain(pub.subscribe(after_seq=1))
    assert len(received) == 1
    assert isinstance(received[0], SubscriptionOverflow)
    assert (received[0].seq, received[0].dropped) == (4, 3)


def test_replayed_events_do_not_count_against_the_queue_bound() -> None:
    pub = Publisher("a", queue_size=2)
    for _ in range(10):
        pub.publish(main_event())
    sub = pub.subscribe(after_seq=0)
    pub.publish(main_event())
    pub.publish(main_event())
    assert seqs(drain(sub)) == list(range(1, 13))
    assert pub.count("main") == 1


# -- overflow (L84) ----------------------------------------------------------------------------


async def test_a_slow_subscriber_is_detached_told_and_can_reconnect_without_a_gap() -> None:
    pub = Publisher("a")
    fast = pub.subscribe()
    slow = pub.subscribe(queue_size=3)
    fast_seen = asyncio.create_task(collect(fast))
    for n in range(10):
        pub.publish(main_event())
        if n == 3:
            # The 4th event found 3 undelivered ones: detached at once, the fast one unaffected.
            assert pub.count("main") == 1
        await asyncio.sleep(0)
    assert slow.dropped == 7

    received = await collect(slow)
    assert seqs(received[:3]) == [1, 2, 3]
    marker = received[3]
    assert isinstance(marker, SubscriptionOverflow)
    assert (marker.agent_id, marker.seq, marker.dropped) == ("a", 3, 7)
    assert len(received) == 4
    assert slow.finished
    assert slow.get_nowait() is None

    again = pub.subscribe(after_seq=marker.seq)
    pub.close(AgentShutdown(reason="manual"))
    assert seqs(await collect(again)) == list(range(4, 12))
    assert seqs(await fast_seen) == list(range(1, 12))
    assert pub.last_seq == 11


async def test_the_overflow_count_keeps_growing_until_the_marker_is_taken() -> None:
    pub = Publisher("a")
    sub = pub.subscribe("debug", queue_size=1)
    pub.publish(debug_event())
    pub.publish(debug_event())
    pub.publish(main_event())  # another channel: not lost to this subscriber
    assert sub.dropped == 1
    pub.publish(debug_event())
    assert sub.dropped == 2
    assert not pub.wants_debug()
    assert seqs(drain(sub)) == [1, 1]
    pub.publish(debug_event())
    assert sub.dropped == 2  # frozen once reported


# -- close (E3) --------------------------------------------------------------------------------


async def test_close_delivers_the_final_event_last_and_ends_every_iterator() -> None:
    pub = Publisher("a")
    subs = [pub.subscribe(), pub.subscribe(), pub.subscribe("debug")]
    consumers = [asyncio.create_task(collect(sub)) for sub in subs]
    await asyncio.sleep(0)  # all parked
    pub.publish(main_event())
    pub.publish(debug_event())
    pub.close(AgentShutdown(reason="manual"))
    assert pub.subscriber_count == 0
    assert pub.closed
    main_1, main_2, debug = await asyncio.gather(*consumers)
    for received in (main_1, main_2):
        assert seqs(received) == [1, 3]
        assert isinstance(received[-1], AgentShutdown)
    assert seqs(debug) == [2]
    assert all(sub.finished for sub in subs)


async def test_close_twice_does_nothing_and_publishing_after_close_is_refused() -> None:
    pub = Publisher("a")
    pub.close(AgentShutdown(reason="manual"))
    pub.close(AgentShutdown(reason="again"))
    assert pub.last_seq == 1
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish(main_event())


async def test_subscribing_after_close_gives_an_ended_subscription_after_the_replay() -> None:
    pub = Publisher("a")
    pub.publish(main_event())
    pub.close(AgentShutdown(reason="inactivity"))
    late = pub.subscribe(after_seq=0)
    received = await collect(late)
    assert seqs(received) == [1, 2]
    assert isinstance(received[-1], AgentShutdown)
    assert await collect(pub.subscribe()) == []
    assert await collect(pub.subscribe("debug")) == []
    assert pub.subscriber_count == 0


# -- detaching (L83) ---------------------------------------------------------------------------


async def test_aclose_detaches_at_once_and_ends_iteration() -> None:
    pub = Publisher("a")
    sub = pub.subscribe()
    pub.publish(main_event())
    await sub.aclose()
    await sub.aclose()
    assert pub.subscriber_count == 0
    assert sub.finished
    assert await collect(sub) == []  # what was queued is discarded
    pub.publish(main_event())
    assert sub.get_nowait() is None


async def test_aclose_wakes_a_parked_consumer() -> None:
    pub = Publisher("a")
    sub = pub.subscribe()
    consumer = asyncio.create_task(collect(sub))
    await asyncio.sleep(0)
    await sub.aclose()
    assert await consumer == []


async def test_leaving_async_with_detaches() -> None:
    pub = Publisher("a")
    async with pub.subscribe() as sub:
        assert pub.subscriber_count == 1
        pub.publish(main_event())
        assert seqs([await anext(sub)]) == [1]
    assert pub.subscriber_count == 0


async def test_cancelling_a_consumer_task_detaches_its_subscription() -> None:
    pub = Publisher("a")

    async def consume() -> None:
        async with pub.subscribe() as sub:
            async for _ in sub:
                pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0)
    assert pub.subscriber_count == 1
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert pub.subscriber_count == 0
    pub.publish(main_event())


async def test_a_subscription_dropped_without_closing_is_detached() -> None:
    pub = Publisher("a")

    async def consume_bare() -> None:
        async for _ in pub.subscribe():  # no async with: relies on the finalizer
            pass

    consumer = asyncio.create_task(consume_bare())
    await asyncio.sleep(0)
    assert pub.subscriber_count == 1
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    del consumer
    # The loop and the cancellation's traceback hold the task's frame a little longer.
    await asyncio.sleep(0)
    gc.collect()
    assert pub.subscriber_count == 0

    pub.publish(main_event())
    async for _ in pub.subscribe(after_seq=0):
        break
    sub = pub.subscribe("debug")
    del sub
    assert pub.subscriber_count == 0


@pytest.mark.looptime
async def test_a_timed_out_wait_leaves_the_subscription_usable() -> None:
    pub = Publisher("a")
    sub = pub.subscribe()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5):
            await anext(sub)
    assert pub.subscriber_count == 1
    pub.publish(main_event())
    assert seqs([await anext(sub)]) == [1]
    await sub.aclose()


async def test_publishing_to_a_consumer_cancelled_while_parked_does_not_raise() -> None:
    pub = Publisher("a")
    sub = pub.subscribe()
    consumer = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    consumer.cancel()
    pub.publish(main_event())  # the waiter is cancelled but its task has not run yet
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert seqs(drain(sub)) == [1]


async def test_only_one_task_may_wait_at_a_time() -> None:
    pub = Publisher("a")
    sub = pub.subscribe()
    first = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await anext(sub)
    pub.publish(main_event())
    assert (await first).seq == 1


def test_invalid_arguments_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="queue_size"):
        Publisher("a", queue_size=0)
    with pytest.raises(ConfigurationError, match="replay_size"):
        Publisher("a", replay_size=-1)
    pub = Publisher("a")
    with pytest.raises(ConfigurationError, match="queue_size"):
        pub.subscribe(queue_size=0)
    with pytest.raises(ConfigurationError, match="main channel only"):
        pub.subscribe("debug", after_seq=0)
    with pytest.raises(ConfigurationError, match="0 or more"):
        pub.subscribe(after_seq=-1)
    with pytest.raises(ConfigurationError, match="unknown channel"):
        pub.subscribe("audit")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown channel"):
        pub.count("audit")  # type: ignore[arg-type]
    assert pub.subscriber_count == 0


# -- random interleavings (E1) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    channel: Channel
    count: int  # a burst, so that queues fill up and the replay buffer evicts


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    channel: Channel
    after_seq: int | None
    queue_size: int | None
    by_task: bool  # consumed by a task iterating it, else by get_nowait in Take


@dataclass(frozen=True, slots=True, kw_only=True)
class Take:
    index: int
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Yield:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Aclose:
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    with_final: bool


Op = Publish | Subscribe | Take | Yield | Aclose | Close
channels = st.sampled_from(["main", "debug"])
publish = st.builds(Publish, channel=channels, count=st.integers(1, 6))
subscribe = st.builds(
    Subscribe,
    channel=channels,
    after_seq=st.none() | st.integers(0, 12),
    queue_size=st.none() | st.integers(1, 4),
    by_task=st.booleans(),
)
take = st.builds(Take, index=st.integers(0, 20), n=st.integers(1, 4))
by_kind: dict[str, st.SearchStrategy[Op]] = {
    "publish": publish,
    "subscribe": subscribe,
    "take": take,
    "yield": st.builds(Yield),
    "aclose": st.builds(Aclose, index=st.integers(0, 20)),
    "close": st.builds(Close, with_final=st.booleans()),
}
# Weighted: publishing often fills queues and evicts replayed events; closing is rare, because
# nothing much happens after it.
kinds = ["publish"] * 4 + ["subscribe"] * 3 + ["take"] * 3 + ["yield"] * 2 + ["aclose", "close"]
ops = st.sampled_from(kinds).flatmap(by_kind.__getitem__)
programs = st.lists(ops, min_size=10, max_size=60)

DEFAULT_QUEUE_SIZE = 3


@dataclass(kw_only=True)
class Probe:
    """One subscription and what the model knows of it."""

    sub: Subscription
    channel: Channel
    limit: int
    live_from: int  # last_seq when it subscribed: later events arrive live
    replay_after: int  # replayed events have replay_after < seq <= live_from
    gap_marker: tuple[int, int] | None = None  # expected replay-gap marker (seq, dropped)
    task: asyncio.Task[None] | None = None
    attached: bool = True
    overflowed: bool = False
    user_closed: bool = False
    live_queued: int = 0  # the model of the subscriber's bounded queue
    received: list[Event] = field(default_factory=list)
    lost_at_read: int | None = None  # channel events after the overflow marker's seq, when read


@dataclass(kw_only=True)
class Model:
    pub: Publisher
    replay_size: int
    published: list[Event] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)

    def channel_events(self, channel: Channel) -> list[Event]:
        return [e for e in self.published if e.channel == channel]

    def record(self, probe: Probe, event: Event) -> None:
        is_gap_marker = probe.gap_marker is not None and not probe.received
        if isinstance(event, SubscriptionOverflow) and not is_gap_marker:
            lost = [e for e in self.channel_events(probe.channel) if e.seq > event.seq]
            probe.lost_at_read = len(lost)
        probe.received.append(event)
        if not isinstance(event, SubscriptionOverflow) and event.seq > probe.live_from:
            probe.live_queued -= 1

    def delivered(self, event: Event) -> None:
        """Mirror one publish: who gets it, who overflows."""
        self.published.append(event)
        for probe in self.probes:
            if probe.attached and probe.channel == event.channel:
                if probe.live_queued >= probe.limit:
                    probe.attached = False
                    probe.overflowed = True
                else:
                    probe.live_queued += 1

    def subscribe(self, op: Subscribe) -> None:
        after_seq = op.after_seq if op.channel == "main" else None
        sub = self.pub.subscribe(op.channel, after_seq=after_seq, queue_size=op.queue_size)
        last_seq = self.pub.last_seq
        probe = Probe(
            sub=sub,
            channel=op.channel,
            limit=op.queue_size or DEFAULT_QUEUE_SIZE,
            live_from=last_seq,
            replay_after=last_seq if after_seq is None else after_seq,
            attached=not self.pub.closed,
        )
        if after_seq is not None:
            mains = self.channel_events("main")
            evicted = mains[: len(mains) - min(self.replay_size, len(mains))]
            last_evicted = evicted[-1].seq if evicted else 0
            if after_seq < last_evicted:
                exact = len([e for e in evicted if e.seq > after_seq])
                reported = min(len(evicted), last_evicted - after_seq)
                assert reported >= exact
                if not any(
                    e.channel == "debug" and after_seq < e.seq < last_evicted
                    for e in self.published
                ):
                    assert reported == exact
                probe.gap_marker = (last_evicted, reported)
                probe.replay_after = last_evicted
        assert sub.dropped == (probe.gap_marker[1] if probe.gap_marker else 0)
        self.probes.append(probe)
        if op.by_task:
            probe.task = asyncio.create_task(self.consume(probe))

    async def consume(self, probe: Probe) -> None:
        async for event in probe.sub:
            self.record(probe, event)

    def check_counts(self) -> None:
        main = [p for p in self.probes if p.attached and p.channel == "main"]
        debug = [p for p in self.probes if p.attached and p.channel == "debug"]
        assert (self.pub.count("main"), self.pub.count("debug")) == (len(main), len(debug))
        assert self.pub.subscriber_count == len(main) + len(debug)
        assert self.pub.wants_debug() == bool(debug)

    def check_stream(self, probe: Probe) -> None:
        """E1: the replay, then every live event of its channel in order, unless it overflowed."""
        received = list(probe.received)
        reported = 0
        if probe.gap_marker is not None and received:
            gap = received.pop(0)
            assert isinstance(gap, SubscriptionOverflow)
            assert (gap.agent_id, gap.seq, gap.dropped) == ("a", *probe.gap_marker)
            reported += gap.dropped
        overflow = received[-1] if received else None
        if isinstance(overflow, SubscriptionOverflow):
            received.pop()
            assert probe.overflowed
            reported += overflow.dropped
            assert overflow.dropped == probe.lost_at_read
        assert not any(isinstance(e, SubscriptionOverflow) for e in received)
        expected = [
            e
            for e in self.channel_events(probe.channel)
            if e.seq > probe.live_from or probe.replay_after < e.seq <= probe.live_from
        ]
        assert received == expected[: len(received)]
        assert probe.sub.finished
        if probe.user_closed:
            return
        assert probe.sub.dropped == reported
        hypothesis.event("overflowed" if probe.overflowed else "did not overflow")
        if probe.gap_marker is not None:
            hypothesis.event("a replay gap was reported")
        if probe.overflowed:
            assert isinstance(overflow, SubscriptionOverflow)
            assert overflow.seq == expected[len(received)].seq - 1
            assert overflow.dropped >= 1
        else:
            assert received == expected


async def run_ops(program: list[Op], replay_size: int) -> None:
    pub = Publisher("a", replay_size=replay_size, queue_size=DEFAULT_QUEUE_SIZE)
    model = Model(pub=pub, replay_size=replay_size)
    for op in program:
        match op:
            case Publish(channel=channel, count=count):
                if pub.closed:
                    with pytest.raises(RuntimeError, match="closed"):
                        pub.publish(event_of(channel))
                else:
                    for _ in range(count):
                        model.delivered(pub.publish(event_of(channel)))
            case Subscribe():
                model.subscribe(op)
            case Take(index=index, n=n):
                manual = [p for p in model.probes if p.task is None]
                if manual:
                    probe = manual[index % len(manual)]
                    for _ in range(n):
                        if (event := probe.sub.get_nowait()) is not None:
                            model.record(probe, event)
            case Yield():
                for _ in range(3):
                    await asyncio.sleep(0)
            case Aclose(index=index):
                if model.probes:
                    probe = model.probes[index % len(model.probes)]
                    await probe.sub.aclose()
                    probe.attached = False
                    probe.user_closed = True
            case Close(with_final=with_final):
                if not pub.closed:
                    final = AgentShutdown(reason="manual")
                    pub.close(final if with_final else None)
                    if with_final:
                        model.delivered(replace(final, agent_id="a", seq=pub.last_seq))
                    for probe in model.probes:
                        probe.attached = False
        model.check_counts()

    pub.close()
    for probe in model.probes:
        probe.attached = False
    model.check_counts()
    await asyncio.gather(*(p.task for p in model.probes if p.task is not None))
    for probe in model.probes:
        if probe.task is None:
            for event in drain(probe.sub):
                model.record(probe, event)
    assert seqs(model.published) == list(range(1, pub.last_seq + 1))
    for probe in model.probes:
        model.check_stream(probe)


@settings(max_examples=300, deadline=None)
@given(program=programs, replay_size=st.integers(0, 6))
def test_random_interleavings_keep_every_stream_gap_free(
    program: list[Op], replay_size: int
) -> None:
    asyncio.run(run_ops(program, replay_size))


# -- scale -------------------------------------------------------------------------------------


async def test_a_thousand_subscribers_get_a_thousand_events_each() -> None:
    pub = Publisher("a")
    subs = [pub.subscribe() for _ in range(1000)]

    async def count(sub: Subscription) -> tuple[int, bool]:
        n, last, ordered = 0, 0, True
        async for event in sub:
            ordered = ordered and event.seq == last + 1
            last = event.seq
            n += 1
        return n, ordered

    consumers = [asyncio.create_task(count(sub)) for sub in subs]
    for n in range(1000):
        pub.publish(main_event())
        if n % 100 == 99:
            await asyncio.sleep(0)
    pub.close()
    assert await asyncio.gather(*consumers) == [(1000, True)] * 1000
    assert pub.subscriber_count == 0
