"""Tests of runtime/_presence.py: LocalPresence, PresenceTracking and ViewerWatch (L30–L36)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import looptime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagents import InvalidOption, Status
from sagents.runtime._presence import (
    IDLE_LIKE,
    LocalPresence,
    Presence,
    PresenceRef,
    PresenceTracking,
    ViewerWatch,
)

TOPIC = "conversation:1"


async def settle() -> None:
    """Let done-callbacks scheduled with call_soon run (no time passes)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def hold(ready: asyncio.Event, presence: LocalPresence, key: str, **meta: Any) -> None:
    """A viewer connection: tracked by the task itself, alive until the task ends."""
    await presence.track(TOPIC, key, meta)
    ready.set()
    await asyncio.Event().wait()


async def open_tab(presence: LocalPresence, key: str, **meta: Any) -> asyncio.Task[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(hold(ready, presence, key, **meta))
    await ready.wait()
    return task


async def close_tab(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle()


# --- LocalPresence ------------------------------------------------------------------------------


def test_local_presence_satisfies_the_protocol() -> None:
    presence: Presence = LocalPresence()
    assert PresenceTracking(presence=presence, topic=TOPIC).presence is presence


async def test_viewers_are_counted_per_key() -> None:
    presence = LocalPresence()
    assert await presence.count(TOPIC) == 0
    assert await presence.list(TOPIC) == {}
    await presence.track(TOPIC, "alice", {"tab": 1}, auto_untrack=False)
    await presence.track(TOPIC, "bob", auto_untrack=False)
    await presence.track("other", "carol", auto_untrack=False)
    assert await presence.count(TOPIC) == 2
    assert await presence.list(TOPIC) == {"alice": [{"tab": 1}], "bob": [{}]}
    assert await presence.count("other") == 1


async def test_two_tabs_of_one_user_count_once() -> None:
    presence = LocalPresence()
    first = await presence.track(TOPIC, "alice", {"tab": 1}, auto_untrack=False)
    second = await presence.track(TOPIC, "alice", {"tab": 2}, auto_untrack=False)
    assert first != second
    assert (first.topic, first.key) == (TOPIC, "alice")
    assert await presence.count(TOPIC) == 1
    assert await presence.list(TOPIC) == {"alice": [{"tab": 1}, {"tab": 2}]}


async def test_untrack_by_ref_removes_one_connection() -> None:
    presence = LocalPresence()
    first = await presence.track(TOPIC, "alice", {"tab": 1}, auto_untrack=False)
    second = await presence.track(TOPIC, "alice", {"tab": 2}, auto_untrack=False)
    await presence.untrack(TOPIC, "alice", first)
    assert await presence.list(TOPIC) == {"alice": [{"tab": 2}]}
    await presence.untrack(TOPIC, "alice", first)  # already gone: nothing happens
    assert await presence.count(TOPIC) == 1
    await presence.untrack(TOPIC, "alice", second)
    assert await presence.count(TOPIC) == 0


async def test_untrack_by_key_removes_every_connection() -> None:
    presence = LocalPresence()
    await presence.track(TOPIC, "alice", auto_untrack=False)
    await presence.track(TOPIC, "alice", auto_untrack=False)
    await presence.track(TOPIC, "bob", auto_untrack=False)
    await presence.untrack(TOPIC, "alice")
    assert await presence.list(TOPIC) == {"bob": [{}]}
    await presence.untrack(TOPIC, "nobody")
    await presence.untrack("no-such-topic", "bob")
    assert await presence.count(TOPIC) == 1


async def test_untrack_with_a_ref_of_another_key_is_refused() -> None:
    presence = LocalPresence()
    ref = await presence.track(TOPIC, "alice", auto_untrack=False)
    with pytest.raises(ValueError, match="tracked as"):
        await presence.untrack(TOPIC, "bob", ref)
    assert await presence.count(TOPIC) == 1


async def test_meta_is_copied_in_and_out() -> None:
    presence = LocalPresence()
    meta = {"tab": 1}
    await presence.track(TOPIC, "alice", meta, auto_untrack=False)
    meta["tab"] = 99
    listed = await presence.list(TOPIC)
    listed["alice"][0]["tab"] = 42
    assert await presence.list(TOPIC) == {"alice": [{"tab": 1}]}


async def test_empty_topics_hold_no_memory() -> None:
    presence = LocalPresence()
    ref = await presence.track(TOPIC, "alice", auto_untrack=False)
    unsubscribe = presence.subscribe(TOPIC, lambda count: None)
    await presence.untrack(TOPIC, "alice", ref)
    unsubscribe()
    unsubscribe()  # idempotent
    assert presence.topics() == []


async def test_a_connection_is_removed_when_its_task_ends() -> None:
    presence = LocalPresence()

    async def visit() -> None:
        await presence.track(TOPIC, "alice")
        assert await presence.count(TOPIC) == 1

    await asyncio.create_task(visit())
    await settle()
    assert await presence.count(TOPIC) == 0
    assert presence.topics() == []


async def test_a_connection_is_removed_when_its_task_is_cancelled() -> None:
    presence = LocalPresence()
    tab1 = await open_tab(presence, "alice", tab=1)
    tab2 = await open_tab(presence, "alice", tab=2)
    assert await presence.count(TOPIC) == 1
    await close_tab(tab1)
    assert await presence.list(TOPIC) == {"alice": [{"tab": 2}]}
    await close_tab(tab2)
    assert await presence.count(TOPIC) == 0


async def test_a_connection_is_removed_when_its_task_crashes() -> None:
    presence = LocalPresence()

    async def crash() -> None:
        await presence.track(TOPIC, "alice")
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await asyncio.create_task(crash())
    await settle()
    assert await presence.count(TOPIC) == 0


async def test_an_explicit_owner_overrides_the_current_task() -> None:
    presence = LocalPresence()
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await presence.track(TOPIC, "alice", owner=closed)
    await settle()
    assert await presence.count(TOPIC) == 1  # the current task still runs, but does not own it
    closed.set_result(None)
    await settle()
    assert await presence.count(TOPIC) == 0


async def test_an_owner_that_already_ended_tracks_nothing() -> None:
    presence = LocalPresence()
    closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    closed.set_result(None)
    calls: list[int] = []
    presence.subscribe(TOPIC, calls.append)
    ref = await presence.track(TOPIC, "alice", owner=closed)
    assert isinstance(ref, PresenceRef)
    assert await presence.count(TOPIC) == 0
    assert calls == []


async def test_owner_and_auto_untrack_false_contradict() -> None:
    presence = LocalPresence()
    owner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(ValueError, match="auto_untrack"):
        await presence.track(TOPIC, "alice", owner=owner, auto_untrack=False)


async def test_auto_untrack_false_outlives_the_task() -> None:
    presence = LocalPresence()

    async def visit() -> None:
        await presence.track(TOPIC, "alice", auto_untrack=False)

    await asyncio.create_task(visit())
    await settle()
    assert await presence.count(TOPIC) == 1


class CountingFuture(asyncio.Future[None]):
    """A future that knows how many done-callbacks are attached to it."""

    attached = 0

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        self.attached += 1
        super().add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Any) -> int:
        removed = super().remove_done_callback(fn)
        self.attached -= removed
        return removed


async def test_untrack_detaches_the_owner_callback() -> None:
    presence = LocalPresence()
    owner = CountingFuture()
    refs = [await presence.track(TOPIC, "alice", owner=owner) for _ in range(3)]
    assert owner.attached == 3
    await presence.untrack(TOPIC, "alice", refs[0])
    assert owner.attached == 2  # exactly that connection's callback, not its siblings'
    await presence.untrack(TOPIC, "alice")
    # A long-lived connection task tracking many times must not accumulate callbacks.
    assert owner.attached == 0
    owner.cancel()


async def test_untracked_before_the_owner_callback_runs_is_harmless() -> None:
    presence = LocalPresence()
    owner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    old = await presence.track(TOPIC, "alice", owner=owner)
    owner.set_result(None)  # the removal is now scheduled, not yet run
    await presence.untrack(TOPIC, "alice", old)
    await presence.track(TOPIC, "alice", auto_untrack=False)
    await settle()
    assert await presence.count(TOPIC) == 1


def test_track_nowait_outside_a_loop_is_owned_by_nobody() -> None:
    presence = LocalPresence()
    ref = presence.track_nowait(TOPIC, "alice")
    assert presence.count_nowait(TOPIC) == 1
    assert presence.list_nowait(TOPIC) == {"alice": [{}]}
    presence.untrack_nowait(TOPIC, "alice", ref)
    assert presence.count_nowait(TOPIC) == 0


async def test_subscribers_hear_changes_of_the_distinct_key_count() -> None:
    presence = LocalPresence()
    calls: list[int] = []
    others: list[int] = []
    unsubscribe = presence.subscribe(TOPIC, calls.append)
    presence.subscribe("other", others.append)
    alice1 = await presence.track(TOPIC, "alice", auto_untrack=False)
    await presence.track(TOPIC, "alice", auto_untrack=False)  # same key: no change
    await presence.track(TOPIC, "bob", auto_untrack=False)
    await presence.untrack(TOPIC, "alice", alice1)  # alice still has a tab: no change
    await presence.untrack(TOPIC, "alice")
    await presence.untrack(TOPIC, "bob")
    assert calls == [1, 2, 1, 0]
    unsubscribe()
    await presence.track(TOPIC, "carol", auto_untrack=False)
    assert calls == [1, 2, 1, 0]
    assert others == []


async def test_a_raising_subscriber_is_logged_and_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    presence = LocalPresence()
    calls: list[int] = []

    def boom(count: int) -> None:
        raise RuntimeError("subscriber bug")

    presence.subscribe(TOPIC, boom)
    presence.subscribe(TOPIC, calls.append)
    with caplog.at_level(logging.ERROR, logger="sagents.runtime._presence"):
        ref = await presence.track(TOPIC, "alice", auto_untrack=False)
        await presence.untrack(TOPIC, "alice", ref)
    assert calls == [1, 0]
    assert await presence.count(TOPIC) == 0
    errors = [r for r in caplog.records if r.exc_info and "subscriber bug" in str(r.exc_info[1])]
    assert len(errors) == 2


async def test_a_subscriber_may_unsubscribe_while_notified() -> None:
    presence = LocalPresence()
    calls: list[str] = []
    unsubscribe_first: Callable[[], None] = lambda: None  # noqa: E731

    def first(count: int) -> None:
        calls.append("first")
        unsubscribe_first()

    unsubscribe_first = presence.subscribe(TOPIC, first)
    presence.subscribe(TOPIC, lambda count: calls.append("second"))
    await presence.track(TOPIC, "alice", auto_untrack=False)
    await presence.track(TOPIC, "bob", auto_untrack=False)
    assert calls == ["first", "second", "second"]


# --- PresenceTracking ---------------------------------------------------------------------------


def test_presence_tracking_defaults() -> None:
    tracking = PresenceTracking(presence=LocalPresence(), topic=TOPIC)
    assert tracking.grace_period == 5.0  # L36
    assert tracking.enabled is True


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"topic": ""}, "topic"),
        ({"topic": 123}, "topic"),
        ({"grace_period": -1.0}, "grace_period"),
        ({"grace_period": math.inf}, "grace_period"),
        ({"grace_period": math.nan}, "grace_period"),
        ({"grace_period": "5"}, "grace_period"),
        ({"grace_period": True}, "grace_period"),
        ({"enabled": "yes"}, "enabled"),
        ({"presence": object()}, "presence"),
        ({"presence": None}, "presence"),
    ],
)
def test_presence_tracking_validation(kwargs: dict[str, Any], field_name: str) -> None:
    options: dict[str, Any] = {"presence": LocalPresence(), "topic": TOPIC, **kwargs}
    with pytest.raises(InvalidOption, match=f"PresenceTracking.{field_name}"):
        PresenceTracking(**options)


def test_presence_tracking_names_missing_methods() -> None:
    class Half:
        async def track(self, topic: str, key: str) -> None: ...

    with pytest.raises(InvalidOption, match="missing untrack, list, count, subscribe"):
        PresenceTracking(presence=Half(), topic=TOPIC)  # type: ignore[arg-type]


def test_presence_tracking_accepts_integer_and_zero_grace() -> None:
    assert PresenceTracking(presence=LocalPresence(), topic=TOPIC, grace_period=0).grace_period == 0
    assert PresenceTracking(presence=LocalPresence(), topic=TOPIC, grace_period=3).grace_period == 3


def test_presence_tracking_is_frozen() -> None:
    tracking = PresenceTracking(presence=LocalPresence(), topic=TOPIC)
    with pytest.raises(AttributeError):
        tracking.topic = "x"  # type: ignore[misc]


# --- ViewerWatch --------------------------------------------------------------------------------


@dataclass
class Fixture:
    presence: LocalPresence
    watch: ViewerWatch
    fired_at: list[float] = field(default_factory=list)


def make_watch(
    *, grace_period: float = 5.0, status: Status = Status.IDLE, enabled: bool = True
) -> Fixture:
    presence = LocalPresence()
    tracking = PresenceTracking(
        presence=presence, topic=TOPIC, grace_period=grace_period, enabled=enabled
    )
    fired_at: list[float] = []
    watch = ViewerWatch(
        tracking,
        on_no_viewers=lambda: fired_at.append(asyncio.get_running_loop().time()),
        status=status,
    )
    return Fixture(presence=presence, watch=watch, fired_at=fired_at)


def now() -> float:
    return asyncio.get_running_loop().time()


def test_idle_like_statuses() -> None:
    assert {Status.IDLE, Status.CANCELLED, Status.ERROR} == IDLE_LIKE


@pytest.mark.looptime
async def test_idle_with_no_viewers_fires_exactly_at_the_grace_period() -> None:
    f = make_watch()
    start = now()
    await f.watch.start()
    assert f.watch.viewer_count == 0
    assert f.watch.grace_remaining == pytest.approx(5.0)
    await asyncio.sleep(2.0)
    assert f.watch.grace_remaining == pytest.approx(3.0)
    await asyncio.sleep(10.0)
    assert f.fired_at == [pytest.approx(start + 5.0)]
    assert f.watch.fired
    assert f.watch.grace_remaining is None
    await f.watch.aclose()


@pytest.mark.looptime
async def test_default_grace_period_is_five_seconds() -> None:
    presence = LocalPresence()
    fired_at: list[float] = []
    watch = ViewerWatch(
        PresenceTracking(presence=presence, topic=TOPIC),
        on_no_viewers=lambda: fired_at.append(now()),
    )
    start = now()
    async with watch:
        await asyncio.sleep(60)
    assert fired_at == [pytest.approx(start + 5.0)]


@pytest.mark.looptime
async def test_idle_with_viewers_keeps_running() -> None:
    f = make_watch()
    tab = await open_tab(f.presence, "alice")
    await f.watch.start()
    assert f.watch.viewer_count == 1
    assert f.watch.grace_remaining is None
    await asyncio.sleep(3600)
    assert f.fired_at == []
    await close_tab(tab)
    await f.watch.aclose()


@pytest.mark.looptime
async def test_running_never_fires_with_or_without_viewers() -> None:
    f = make_watch(status=Status.RUNNING)
    await f.watch.start()
    await asyncio.sleep(3600)  # running, no viewers
    tab = await open_tab(f.presence, "alice")
    await asyncio.sleep(3600)  # running, viewers
    await close_tab(tab)
    await asyncio.sleep(3600)
    assert f.fired_at == []
    assert f.watch.grace_remaining is None
    await f.watch.aclose()


@pytest.mark.looptime
@pytest.mark.parametrize("viewers", [0, 1])
async def test_interrupted_keeps_running_waiting_for_approval(viewers: int) -> None:
    f = make_watch(status=Status.INTERRUPTED)
    tabs = [await open_tab(f.presence, f"user{i}") for i in range(viewers)]
    await f.watch.start()
    await asyncio.sleep(3600)
    assert f.fired_at == []
    assert f.watch.grace_remaining is None
    for tab in tabs:
        await close_tab(tab)
    await asyncio.sleep(3600)
    assert f.fired_at == []
    await f.watch.aclose()


@pytest.mark.looptime
async def test_paused_keeps_running() -> None:
    f = make_watch(status=Status.PAUSED)
    await f.watch.start()
    await asyncio.sleep(3600)
    assert f.fired_at == []
    await f.watch.aclose()


@pytest.mark.looptime
@pytest.mark.parametrize("status", [Status.CANCELLED, Status.ERROR])
async def test_cancelled_and_error_count_as_idle(status: Status) -> None:
    f = make_watch(status=Status.RUNNING)
    await f.watch.start()
    await asyncio.sleep(100)
    f.watch.agent_status_changed(status)
    start = now()
    await asyncio.sleep(100)
    assert f.fired_at == [pytest.approx(start + 5.0)]
    await f.watch.aclose()


@pytest.mark.looptime
async def test_a_viewer_appearing_during_the_grace_period_cancels_it() -> None:
    f = make_watch()
    await f.watch.start()
    await asyncio.sleep(4.0)
    tab = await open_tab(f.presence, "alice")
    assert f.watch.grace_remaining is None
    await asyncio.sleep(100)
    assert f.fired_at == []
    # Leaving again starts a fresh, full grace period.
    await close_tab(tab)
    left = now()
    assert f.watch.grace_remaining == pytest.approx(5.0)
    await asyncio.sleep(100)
    assert f.fired_at == [pytest.approx(left + 5.0)]
    await f.watch.aclose()


@pytest.mark.looptime
async def test_a_page_reload_within_the_grace_period_keeps_the_agent() -> None:
    f = make_watch()
    tab = await open_tab(f.presence, "alice")
    await f.watch.start()
    await close_tab(tab)
    await asyncio.sleep(1.0)
    tab = await open_tab(f.presence, "alice")
    await asyncio.sleep(100)
    assert f.fired_at == []
    await close_tab(tab)
    await f.watch.aclose()


@pytest.mark.looptime
async def test_a_run_completing_with_no_viewers_starts_the_grace_period_then() -> None:
    f = make_watch(status=Status.RUNNING)
    await f.watch.start()
    await asyncio.sleep(30)
    f.watch.agent_status_changed(Status.IDLE)
    done = now()
    await asyncio.sleep(100)
    assert f.fired_at == [pytest.approx(done + 5.0)]
    await f.watch.aclose()


@pytest.mark.looptime
async def test_a_run_starting_during_the_grace_period_cancels_it() -> None:
    f = make_watch()
    await f.watch.start()
    await asyncio.sleep(4.9)
    f.watch.agent_status_changed(Status.RUNNING)
    assert f.watch.grace_remaining is None
    await asyncio.sleep(100)
    assert f.fired_at == []
    f.watch.agent_status_changed(Status.IDLE)
    done = now()
    await asyncio.sleep(100)
    assert f.fired_at == [pytest.approx(done + 5.0)]
    await f.watch.aclose()


@pytest.mark.looptime
async def test_moving_between_idle_like_statuses_keeps_the_grace_period() -> None:
    f = make_watch()
    start = now()
    await f.watch.start()
    await asyncio.sleep(3)
    f.watch.agent_status_changed(Status.IDLE)
    f.watch.agent_status_changed(Status.ERROR)
    await asyncio.sleep(100)
    assert f.fired_at == [pytest.approx(start + 5.0)]
    await f.watch.aclose()


@pytest.mark.looptime
async def test_on_no_viewers_is_called_at_most_once() -> None:
    f = make_watch()
    await f.watch.start()
    await asyncio.sleep(10)
    f.watch.agent_status_changed(Status.RUNNING)
    f.watch.agent_status_changed(Status.IDLE)
    tab = await open_tab(f.presence, "alice")
    await close_tab(tab)
    await asyncio.sleep(100)
    assert len(f.fired_at) == 1
    assert f.watch.grace_remaining is None
    await f.watch.aclose()


@pytest.mark.looptime
async def test_aclose_cancels_the_timer_and_unsubscribes() -> None:
    f = make_watch()
    await f.watch.start()
    await asyncio.sleep(4)
    await f.watch.aclose()
    await f.watch.aclose()  # idempotent
    assert f.watch.grace_remaining is None
    assert f.presence.topics() == []
    await asyncio.sleep(100)
    f.watch.agent_status_changed(Status.IDLE)
    await asyncio.sleep(100)
    assert f.fired_at == []


@pytest.mark.looptime
async def test_grace_period_zero_fires_on_the_next_loop_iteration() -> None:
    f = make_watch(grace_period=0)
    start = now()
    await f.watch.start()
    assert f.fired_at == []  # never from inside start()
    await settle()
    assert f.fired_at == [start]
    await f.watch.aclose()


@pytest.mark.looptime
async def test_disabled_tracking_never_fires() -> None:
    f = make_watch(enabled=False)
    await f.watch.start()
    assert f.presence.topics() == []
    await asyncio.sleep(3600)
    f.watch.agent_status_changed(Status.IDLE)
    await asyncio.sleep(3600)
    assert f.fired_at == []
    assert f.watch.viewer_count == 0
    await f.watch.aclose()


async def test_start_twice_is_refused() -> None:
    f = make_watch(status=Status.RUNNING)
    await f.watch.start()
    with pytest.raises(RuntimeError, match="only once"):
        await f.watch.start()
    await f.watch.aclose()
    with pytest.raises(RuntimeError, match="only once"):
        await f.watch.start()


async def test_status_before_start_is_remembered() -> None:
    f = make_watch()
    f.watch.agent_status_changed(Status.RUNNING)
    assert f.watch.status == "running"
    await f.watch.start()
    assert f.watch.grace_remaining is None
    f.watch.agent_status_changed("idle")  # type: ignore[arg-type]
    assert f.watch.status is Status.IDLE
    assert f.watch.grace_remaining is not None
    await f.watch.aclose()


@pytest.mark.looptime
async def test_a_raising_on_no_viewers_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("shutdown bug")

    watch = ViewerWatch(PresenceTracking(presence=LocalPresence(), topic=TOPIC), boom)
    with caplog.at_level(logging.ERROR, logger="sagents.runtime._presence"):
        await watch.start()
        await asyncio.sleep(10)
    assert "shutdown bug" in caplog.text
    assert watch.fired
    await watch.aclose()


class SlowPresence(LocalPresence):
    """A presence whose count read is slow, like a remote one, and can fail."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    async def count(self, topic: str) -> int:
        value = self.count_nowait(topic)
        await asyncio.sleep(1.0)
        if self.fail:
            raise ConnectionError("presence backend down")
        return value


@pytest.mark.looptime
async def test_a_notification_during_the_start_read_wins_over_the_read() -> None:
    presence = SlowPresence()
    fired: list[float] = []
    watch = ViewerWatch(PresenceTracking(presence=presence, topic=TOPIC), lambda: fired.append(1))
    starting = asyncio.create_task(watch.start())
    await asyncio.sleep(0.5)
    ref = await presence.track(TOPIC, "alice", auto_untrack=False)  # the read said 0
    await starting
    assert watch.viewer_count == 1
    await asyncio.sleep(100)
    assert fired == []
    await presence.untrack(TOPIC, "alice", ref)
    await asyncio.sleep(100)
    assert fired == [1]
    await watch.aclose()


@pytest.mark.looptime
async def test_a_failing_start_read_is_raised_and_leaves_no_subscription() -> None:
    presence = SlowPresence(fail=True)
    watch = ViewerWatch(PresenceTracking(presence=presence, topic=TOPIC), lambda: None)
    with pytest.raises(ConnectionError):
        await watch.start()
    assert presence.topics() == []


# --- the decision table as a property ----------------------------------------------------------

GRACE = 5.0
# The model's own table, not the module's constant, so a wrong constant is caught.
MODEL_IDLE_LIKE = {Status.IDLE, Status.CANCELLED, Status.ERROR}
KEYS = ("alice", "bob")

step = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(KEYS)),
    st.tuples(st.just("leave"), st.integers(min_value=0, max_value=5), st.booleans()),
    st.tuples(st.just("status"), st.sampled_from(list(Status))),
    # Multiples of 0.5 s are exact in binary, so "exactly at the deadline" is well defined.
    st.tuples(st.just("wait"), st.integers(min_value=0, max_value=16).map(lambda n: n / 2)),
)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.sampled_from(list(Status)),
    early_viewers=st.lists(st.sampled_from(KEYS), max_size=2),
    steps=st.lists(step, min_size=10, max_size=40),
)
def test_fires_iff_idle_with_no_viewers_for_a_whole_grace_period(
    initial: Status, early_viewers: list[str], steps: list[tuple[Any, ...]]
) -> None:
    # Each example gets its own virtual-time loop starting at 0 (the looptime marker would share
    # one loop across all of hypothesis' examples).
    with asyncio.Runner(loop_factory=looptime.new_event_loop) as runner:
        runner.run(_scenario(initial, early_viewers, steps))


async def _scenario(
    initial: Status, early_viewers: list[str], steps: list[tuple[Any, ...]]
) -> None:
    presence = LocalPresence()
    fired_at: list[float] = []
    watch = ViewerWatch(
        PresenceTracking(presence=presence, topic=TOPIC, grace_period=GRACE),
        on_no_viewers=lambda: fired_at.append(now()),
        status=initial,
    )
    tabs: list[tuple[str, asyncio.Task[None]]] = []
    for key in early_viewers:
        tabs.append((key, await open_tab(presence, key)))

    # The model: when did "idle-like and no viewers" last become true (None: it does not hold).
    status = initial
    since: float | None = None
    expected: list[float] = []

    def observe() -> None:
        nonlocal since
        holds = status in MODEL_IDLE_LIKE and not {key for key, _ in tabs}
        if not holds:
            since = None
        elif since is None:
            since = now()

    await watch.start()
    observe()
    for action, *args in steps:
        if action == "join":
            tabs.append((args[0], await open_tab(presence, args[0])))
        elif action == "leave" and tabs:
            key, task = tabs.pop(args[0] % len(tabs))
            if args[1]:
                await close_tab(task)  # the connection dies
            else:
                # Every tab of that user leaves explicitly; then their tasks end quietly.
                await presence.untrack(TOPIC, key)
                gone = [task] + [t for k, t in tabs if k == key]
                tabs = [(k, t) for k, t in tabs if k != key]
                for t in gone:
                    await close_tab(t)
        elif action == "status":
            status = args[0]
            watch.agent_status_changed(status)
        elif action == "wait":
            if since is not None and not expected and now() + args[0] >= since + GRACE:
                expected.append(since + GRACE)
            await asyncio.sleep(args[0])
        observe()
        assert watch.viewer_count == len({key for key, _ in tabs})
        assert fired_at == expected
        if since is not None and not expected:
            assert watch.grace_remaining == pytest.approx(since + GRACE - now())
        else:
            assert watch.grace_remaining is None
    await watch.aclose()
    for _, task in tabs:
        await close_tab(task)
