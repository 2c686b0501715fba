"""Tests for ``sagents.runtime._supervisor`` (rules L50–L54)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Collection
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagents._errors import ConfigurationError
from sagents.runtime._supervisor import (
    Child,
    ChildAlreadyStarted,
    ChildExited,
    ChildExitedBeforeReady,
    ChildInfo,
    ChildNotFound,
    ChildRestarted,
    ChildSpec,
    ChildStarted,
    ExitReason,
    GaveUp,
    Ready,
    RestartType,
    Strategy,
    Supervisor,
    SupervisorAlreadyStarted,
    SupervisorEvent,
    SupervisorGaveUp,
    SupervisorNotRunning,
)

PERMANENT, TRANSIENT, TEMPORARY = RestartType


class Boom(Exception):
    """A crash the test asked for."""


class Probe:
    """A controllable child that writes its life into a journal shared by the test."""

    def __init__(
        self,
        name: str,
        log: Callable[[str], None],
        *,
        fail: BaseException | None = None,
        return_early: bool = False,
        ignore_stop: bool = False,
        never_ready: bool = False,
        value: Any = None,
    ) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.return_early = return_early
        self.ignore_stop = ignore_stop
        self.never_ready = never_ready
        self.value = value
        self._exit = asyncio.Event()
        self._error: BaseException | None = None

    async def run(self, ready: Ready) -> None:
        self.log(f"start {self.name}")
        if self.fail is not None:
            raise self.fail
        if self.return_early:
            return
        if not self.never_ready:
            ready.started(self if self.value is None else self.value)
        try:
            await self._exit.wait()
        except asyncio.CancelledError:
            self.log(f"cancelled {self.name}")
            raise
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        self.log(f"stop {self.name}")
        if not self.ignore_stop:
            self._exit.set()

    def crash(self) -> None:
        self._error = Boom(self.name)
        self._exit.set()

    def finish(self) -> None:
        self._exit.set()


class World:
    """Child specs building Probes, the live incarnation of each, and the events seen."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.live: dict[str, Probe] = {}
        self.events: list[SupervisorEvent] = []
        self._changed = asyncio.Event()

    def spec(
        self,
        name: str,
        *,
        restart: RestartType = PERMANENT,
        shutdown_timeout: float | None = 5.0,
        fail_at: Collection[int] = (),
        **options: Any,
    ) -> ChildSpec:
        """A spec whose incarnation number ``n`` (from 1) raises before ready if in fail_at."""
        incarnations = 0

        def start() -> Probe:
            nonlocal incarnations
            incarnations += 1
            fail = Boom(f"{name} init") if incarnations in fail_at else None
            probe = Probe(name, self.note, fail=fail, **options)
            self.live[name] = probe
            return probe

        return ChildSpec(id=name, start=start, restart=restart, shutdown_timeout=shutdown_timeout)

    def supervisor(self, *names: str, **options: Any) -> Supervisor:
        children = [self.spec(name) for name in names]
        return Supervisor(name="sup", children=children, on_event=self.on_event, **options)

    def note(self, line: str) -> None:
        self.journal.append(line)
        self._changed.set()

    def on_event(self, event: SupervisorEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def until_noted(self, line: str) -> None:
        """Wait until a probe writes ``line`` (lines already in the journal do not count)."""
        seen = len(self.journal)
        async with asyncio.timeout(5):
            while line not in self.journal[seen:]:
                self._changed.clear()
                await self._changed.wait()

    async def until(self, predicate: Callable[[SupervisorEvent], bool]) -> SupervisorEvent:
        """Wait for the next event matching ``predicate`` (events already seen do not count)."""
        seen = len(self.events)
        async with asyncio.timeout(5):  # a hang fails fast (at once on virtual time)
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

    def since(self, mark: int) -> list[str]:
        return self.journal[mark:]


def restarted(id: str) -> Callable[[SupervisorEvent], bool]:
    return lambda event: isinstance(event, ChildRestarted) and event.id == id


def exited(id: str) -> Callable[[SupervisorEvent], bool]:
    return lambda event: isinstance(event, ChildExited) and event.id == id


def gave_up(event: SupervisorEvent) -> bool:
    return isinstance(event, GaveUp)


def assert_no_orphans() -> None:
    assert asyncio.all_tasks() == {asyncio.current_task()}


def info(sup: Supervisor) -> dict[object, tuple[bool, int]]:
    return {child.id: (child.running, child.restarts) for child in sup.which_children()}


# -- starting ----------------------------------------------------------------------------------


async def test_run_starts_children_in_order_and_reports_itself_ready() -> None:
    world = World()
    async with world.supervisor("a", "b", "c") as sup:
        assert sup.running
        assert world.journal == ["start a", "start b", "start c"]
        assert sup.count_children() == 3
        assert sup.which_children() == [
            ChildInfo(id=name, restart=PERMANENT, running=True, restarts=0) for name in "abc"
        ]
        assert [e.id for e in world.events if isinstance(e, ChildStarted)] == ["a", "b", "c"]
    assert not sup.running
    assert_no_orphans()


async def test_start_child_returns_the_ready_value() -> None:
    world = World()
    async with world.supervisor() as sup:
        assert await sup.start_child(world.spec("x", value="handle-x")) == "handle-x"
        assert sup.which_children() == [
            ChildInfo(id="x", restart=PERMANENT, running=True, restarts=0)
        ]
        assert ChildStarted(supervisor="sup", id="x", value="handle-x") in world.events


async def test_a_child_raising_before_ready_raises_to_the_caller_and_leaves_nothing() -> None:
    world = World()
    async with world.supervisor("a") as sup:
        error = Boom("bad config")
        with pytest.raises(Boom) as caught:
            await sup.start_child(
                ChildSpec(id="bad", start=lambda: Probe("bad", world.note, fail=error))
            )
        assert caught.value is error
        assert error.__context__ is None
        assert [child.id for child in sup.which_children()] == ["a"]
        assert not [t for t in asyncio.all_tasks() if "bad" in t.get_name()]
        # The id is free again, and the supervisor carries on.
        assert await sup.start_child(world.spec("bad", value=1)) == 1
        assert sup.running


async def test_a_child_returning_before_ready_is_a_failed_start() -> None:
    world = World()
    async with world.supervisor() as sup:
        with pytest.raises(ChildExitedBeforeReady, match="returned before"):
            await sup.start_child(world.spec("quitter", return_early=True))
        assert sup.count_children() == 0
        assert not [t for t in asyncio.all_tasks() if "quitter" in t.get_name()]


async def test_a_factory_that_raises_is_a_failed_start() -> None:
    def broken() -> Child:
        raise Boom("factory")

    async with Supervisor() as sup:
        with pytest.raises(Boom, match="factory"):
            await sup.start_child(ChildSpec(id="x", start=broken))
        assert sup.count_children() == 0


async def test_calling_started_twice_is_a_crash_of_that_child() -> None:
    class Eager(Probe):
        async def run(self, ready: Ready) -> None:
            ready.started()
            ready.started()

    world = World()
    async with world.supervisor() as sup:
        eager = ChildSpec(id="eager", start=lambda: Eager("eager", world.note), restart=TEMPORARY)
        await sup.start_child(eager)
        event = await world.until(exited("eager"))
        assert isinstance(event, ChildExited)
        assert isinstance(event.error, RuntimeError)
        assert "twice" in str(event.error)


async def test_an_initial_child_failing_stops_the_others_and_fails_the_supervisor() -> None:
    world = World()
    sup = Supervisor(
        children=[world.spec("a"), world.spec("b"), world.spec("c", fail_at={1}), world.spec("d")]
    )
    with pytest.raises(Boom, match="c init") as caught:
        async with sup:
            pytest.fail("never ready")
    assert caught.value.__context__ is None  # the child's error, untouched by the machinery
    assert world.journal == ["start a", "start b", "start c", "stop b", "stop a"]
    with pytest.raises(Boom):
        await sup.wait()
    assert_no_orphans()


async def test_duplicate_ids_are_refused() -> None:
    world = World()
    async with world.supervisor("a") as sup:
        with pytest.raises(ChildAlreadyStarted, match="'a'"):
            await sup.start_child(world.spec("a"))
        assert world.journal == ["start a"]
    with pytest.raises(ConfigurationError, match="duplicate child ids 'a'"):
        Supervisor(children=[world.spec("a"), world.spec("a")])


def test_invalid_configuration_is_refused() -> None:
    def start() -> Child:
        raise NotImplementedError

    with pytest.raises(ConfigurationError, match="max_restarts"):
        Supervisor(max_restarts=-1)
    with pytest.raises(ConfigurationError, match="max_seconds"):
        Supervisor(max_seconds=0)
    with pytest.raises(ConfigurationError, match="strategy"):
        Supervisor(strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="shutdown_timeout"):
        ChildSpec(id="x", start=start, shutdown_timeout=-1)
    with pytest.raises(ConfigurationError, match="hashable"):
        ChildSpec(id=["x"], start=start)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="restart"):
        ChildSpec(id="x", start=start, restart="sometimes")  # type: ignore[arg-type]
    assert ChildSpec(id="x", start=start, restart="transient").restart is TRANSIENT  # type: ignore[arg-type]
    assert ChildSpec(id="x", start=start, shutdown_timeout=float("inf")).shutdown_timeout is None


async def test_a_supervisor_runs_once() -> None:
    sup = Supervisor()
    async with sup:
        pass
    with pytest.raises(SupervisorAlreadyStarted):
        async with sup:
            pass


async def test_calls_on_a_supervisor_that_is_not_running_fail_clearly() -> None:
    world = World()
    sup = world.supervisor("a")
    with pytest.raises(SupervisorNotRunning):
        await sup.start_child(world.spec("x"))
    await sup.stop()  # a no-op before start
    async with sup:
        pass
    with pytest.raises(SupervisorNotRunning):
        await sup.terminate_child("a")
    with pytest.raises(SupervisorNotRunning):
        await sup.restart_child("a")


# -- restart types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "crash", "comes_back", "listed"),
    [
        (PERMANENT, False, True, True),
        (PERMANENT, True, True, True),
        (TRANSIENT, False, False, True),
        (TRANSIENT, True, True, True),
        (TEMPORARY, False, False, False),
        (TEMPORARY, True, False, False),
    ],
)
async def test_restart_types(
    restart: RestartType, crash: bool, comes_back: bool, listed: bool
) -> None:
    world = World()
    async with world.supervisor() as sup:
        await sup.start_child(world.spec("x", restart=restart))
        mark = len(world.journal)
        (world.live["x"].crash if crash else world.live["x"].finish)()
        exit_event = await world.until(exited("x"))
        assert isinstance(exit_event, ChildExited)
        assert exit_event.reason == ("crash" if crash else "normal")
        assert isinstance(exit_event.error, Boom) if crash else exit_event.error is None
        if comes_back:
            await world.until(restarted("x"))
            assert world.since(mark) == ["start x"]
            assert info(sup) == {"x": (True, 1)}
        else:
            await asyncio.sleep(0)  # give a wrong restart the chance to show up
            assert world.since(mark) == []
            assert info(sup) == ({"x": (False, 0)} if listed else {})


async def test_a_child_cancelled_by_someone_else_counts_as_a_crash() -> None:
    world = World()
    async with world.supervisor("x"):
        [task] = [t for t in asyncio.all_tasks() if t.get_name() == "sup/'x'"]
        task.cancel()
        event = await world.until(exited("x"))
        assert isinstance(event, ChildExited)
        assert event.reason is ExitReason.CRASH
        assert isinstance(event.error, asyncio.CancelledError)
        await world.until(restarted("x"))


# -- strategies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "crashing", "expected"),
    [
        (Strategy.ONE_FOR_ONE, "b", ["start b"]),
        (Strategy.REST_FOR_ONE, "b", ["stop c", "start b", "start c"]),
        (Strategy.REST_FOR_ONE, "a", ["stop c", "stop b", "start a", "start b", "start c"]),
        (Strategy.REST_FOR_ONE, "c", ["start c"]),
        (Strategy.ONE_FOR_ALL, "b", ["stop c", "stop a", "start a", "start b", "start c"]),
        (Strategy.ONE_FOR_ALL, "c", ["stop b", "stop a", "start a", "start b", "start c"]),
    ],
)
async def test_strategies_restart_the_right_children_in_order(
    strategy: Strategy, crashing: str, expected: list[str]
) -> None:
    world = World()
    async with world.supervisor("a", "b", "c", strategy=strategy) as sup:
        mark = len(world.journal)
        world.live[crashing].crash()
        await world.until(restarted(expected[-1].split()[-1]))
        assert world.since(mark) == expected
        assert all(child.running for child in sup.which_children())
        # Siblings stopped by the supervisor exit with "shutdown", never as a crash.
        reasons = {e.id: e.reason for e in world.events if isinstance(e, ChildExited)}
        assert reasons.pop(crashing) is ExitReason.CRASH
        assert set(reasons.values()) <= {ExitReason.SHUTDOWN}


async def test_a_temporary_sibling_stopped_by_a_group_restart_is_removed() -> None:
    world = World()
    specs = [world.spec("a"), world.spec("tmp", restart=TEMPORARY), world.spec("c")]
    async with Supervisor(
        strategy=Strategy.ONE_FOR_ALL, children=specs, on_event=world.on_event
    ) as sup:
        mark = len(world.journal)
        world.live["a"].crash()
        await world.until(restarted("c"))
        assert world.since(mark) == ["stop c", "stop tmp", "start a", "start c"]
        assert [child.id for child in sup.which_children()] == ["a", "c"]


async def test_a_crash_under_one_for_one_never_touches_the_siblings() -> None:
    world = World()
    async with world.supervisor("a", "b", "c") as sup:
        before = {name: world.live[name] for name in "ac"}
        world.live["b"].crash()
        await world.until(restarted("b"))
        assert {name: world.live[name] for name in "ac"} == before
        assert info(sup) == {"a": (True, 0), "b": (True, 1), "c": (True, 0)}


# -- restart intensity --------------------------------------------------------------------------


@pytest.mark.looptime
async def test_more_than_max_restarts_within_max_seconds_gives_up() -> None:
    world = World()
    sup = world.supervisor("a", "b", max_restarts=2, max_seconds=5)

    async def crash_a_thrice_within_three_seconds() -> None:
        async with sup:
            for _ in range(2):
                await asyncio.sleep(1)
                world.live["a"].crash()
                await world.until(restarted("a"))
            await asyncio.sleep(1)
            world.live["a"].crash()
            await sup.wait()

    with pytest.raises(SupervisorGaveUp, match="more than 2 restarts within 5") as caught:
        await crash_a_thrice_within_three_seconds()
    assert not sup.running
    assert isinstance(caught.value.__cause__, Boom)
    [event] = [e for e in world.events if isinstance(e, GaveUp)]
    assert event == GaveUp(supervisor="sup", max_restarts=2, max_seconds=5, error=event.error)
    assert event.error is caught.value.__cause__
    assert world.journal.count("start a") == 3
    assert world.journal[-1] == "stop b"
    assert sup.which_children() == [
        ChildInfo(id="a", restart=PERMANENT, running=False, restarts=2),
        ChildInfo(id="b", restart=PERMANENT, running=False, restarts=0),
    ]
    assert_no_orphans()


@pytest.mark.looptime
async def test_crashes_spaced_beyond_max_seconds_never_give_up() -> None:
    world = World()
    async with world.supervisor("a", max_restarts=2, max_seconds=5) as sup:
        for _ in range(20):
            await asyncio.sleep(2.6)  # at most 2 restarts in any 5 s window
            world.live["a"].crash()
            await world.until(restarted("a"))
        assert sup.running
        assert info(sup) == {"a": (True, 20)}
    assert not any(isinstance(event, GaveUp) for event in world.events)


@pytest.mark.looptime
async def test_exits_of_permanent_children_count_even_when_normal() -> None:
    world = World()
    sup = world.supervisor("a", max_restarts=0)

    async def finish_a() -> None:
        async with sup:
            world.live["a"].finish()
            await sup.wait()

    with pytest.raises(SupervisorGaveUp) as caught:
        await finish_a()
    assert caught.value.__cause__ is None


async def test_max_restarts_zero_gives_up_at_the_first_crash() -> None:
    world = World()

    async def crash_b_and_carry_on() -> None:
        async with world.supervisor("a", "b", max_restarts=0):
            world.live["b"].crash()
            await world.until(gave_up)
            # Leaving the block normally: __aexit__ is where the caller hears of it.

    with pytest.raises(SupervisorGaveUp):
        await crash_b_and_carry_on()
    assert world.journal == ["start a", "start b", "stop a"]


async def test_a_child_failing_during_its_restart_counts_as_another_crash() -> None:
    world = World()
    spec = world.spec("a", fail_at={2, 3, 4, 5, 6})
    sup = Supervisor(children=[spec], max_restarts=3, on_event=world.on_event)

    async def crash_a() -> None:
        async with sup:
            world.live["a"].crash()
            await sup.wait()

    with pytest.raises(SupervisorGaveUp) as caught:
        await crash_a()
    # The crash, then three failed restarts; the fourth restart is one too many.
    assert world.journal == ["start a"] * 4
    assert isinstance(caught.value.__cause__, Boom)
    assert str(caught.value.__cause__) == "a init"
    crashes = [e for e in world.events if isinstance(e, ChildExited) and e.reason == "crash"]
    assert len(crashes) == 4


async def test_a_restart_that_fails_once_then_succeeds_keeps_going() -> None:
    world = World()
    spec = world.spec("a", fail_at={2})
    async with Supervisor(children=[spec], max_restarts=3, on_event=world.on_event) as sup:
        world.live["a"].crash()
        await world.until(restarted("a"))
        assert world.journal == ["start a"] * 3
        assert info(sup) == {"a": (True, 1)}


async def test_a_failing_restart_under_rest_for_one_retries_from_the_failed_child() -> None:
    world = World()
    specs = [world.spec("a"), world.spec("b"), world.spec("c", fail_at={2})]
    async with Supervisor(
        strategy=Strategy.REST_FOR_ONE, children=specs, max_restarts=5, on_event=world.on_event
    ) as sup:
        mark = len(world.journal)
        world.live["b"].crash()
        await world.until(restarted("c"))
        assert world.since(mark) == ["stop c", "start b", "start c", "start c"]
        assert info(sup) == {"a": (True, 0), "b": (True, 1), "c": (True, 1)}


async def test_escalation_through_a_nested_supervisor() -> None:
    world = World()

    def inner() -> Supervisor:
        return Supervisor(
            name="inner", max_restarts=0, children=[world.spec("leaf")], on_event=world.on_event
        )

    inner_spec = ChildSpec(id="inner", start=inner, shutdown_timeout=None)
    outer = Supervisor(
        name="outer", children=[world.spec("a"), inner_spec], on_event=world.on_event
    )
    async with outer:
        world.live["leaf"].crash()
        event = await world.until(lambda e: isinstance(e, ChildExited) and e.id == "inner")
        assert isinstance(event, ChildExited)
        assert event.supervisor == "outer"
        assert event.reason is ExitReason.CRASH
        assert isinstance(event.error, SupervisorGaveUp)
        await world.until(lambda e: isinstance(e, ChildRestarted) and e.id == "inner")
        assert world.journal == ["start a", "start leaf", "start leaf"]
        assert info(outer) == {"a": (True, 0), "inner": (True, 1)}
    # Stopping the root stops the nested tree too, leaves first.
    assert world.journal[-2:] == ["stop leaf", "stop a"]
    assert_no_orphans()


# -- shutdown -----------------------------------------------------------------------------------


async def test_graceful_shutdown_stops_children_in_reverse_start_order() -> None:
    world = World()
    sup = world.supervisor("a", "b")
    async with sup:
        await sup.start_child(world.spec("c"))
        # A restarted child keeps its position, so dependency order survives restarts.
        world.live["a"].crash()
        await world.until(restarted("a"))
        mark = len(world.journal)
    assert world.since(mark) == ["stop c", "stop b", "stop a"]
    reasons = [e.reason for e in world.events if isinstance(e, ChildExited)][-3:]
    assert reasons == [ExitReason.SHUTDOWN] * 3
    await sup.stop()  # idempotent
    await sup.wait()
    assert_no_orphans()


@pytest.mark.looptime
async def test_a_child_that_ignores_stop_is_cancelled_after_its_shutdown_timeout() -> None:
    world = World()
    spec = world.spec("stubborn", ignore_stop=True, shutdown_timeout=3)
    loop = asyncio.get_running_loop()
    async with Supervisor(children=[world.spec("a"), spec]):
        started = loop.time()
    assert loop.time() - started == pytest.approx(3)
    assert world.journal == [
        "start a",
        "start stubborn",
        "stop stubborn",
        "cancelled stubborn",
        "stop a",
    ]
    assert_no_orphans()


@pytest.mark.looptime
async def test_shutdown_timeout_zero_cancels_without_asking() -> None:
    world = World()
    loop = asyncio.get_running_loop()
    async with Supervisor(children=[world.spec("a", shutdown_timeout=0)]):
        started = loop.time()
    assert loop.time() == started
    assert world.journal == ["start a", "cancelled a"]


async def test_stop_while_a_child_is_starting_interrupts_it_and_fails_queued_calls() -> None:
    world = World()
    async with world.supervisor("a") as sup:
        starting = asyncio.create_task(sup.start_child(world.spec("slow", never_ready=True)))
        await world.until_noted("start slow")
        # The supervisor is busy waiting for "slow": this call stays in the mailbox.
        queued = asyncio.create_task(sup.terminate_child("a"))
        await asyncio.sleep(0)
        await sup.stop()
        with pytest.raises(SupervisorNotRunning, match="stopping"):
            await starting
        with pytest.raises(SupervisorNotRunning, match="ended"):
            await queued
    assert world.journal == ["start a", "start slow", "stop slow", "stop a"]
    assert_no_orphans()


async def test_cancelling_run_kills_every_child_and_propagates() -> None:
    world = World()
    inner_spec = ChildSpec(
        id="inner",
        start=lambda: Supervisor(children=[world.spec("leaf")]),
        shutdown_timeout=None,
    )
    sup = Supervisor(children=[world.spec("a"), inner_spec])
    await sup.__aenter__()
    [root] = [t for t in asyncio.all_tasks() if t.get_name() == "supervisor supervisor"]
    root.cancel()
    with pytest.raises(asyncio.CancelledError):
        await root
    assert sorted(world.journal) == ["cancelled a", "cancelled leaf", "start a", "start leaf"]
    await sup.__aexit__(None, None, None)
    assert_no_orphans()


# -- terminate and restart a child ---------------------------------------------------------------


async def test_terminate_child_stops_and_removes_it_without_restart() -> None:
    world = World()
    async with world.supervisor("a", "b") as sup:
        await sup.terminate_child("a")
        await asyncio.sleep(0)
        assert world.journal == ["start a", "start b", "stop a"]
        assert [child.id for child in sup.which_children()] == ["b"]
        event = world.events[-1]
        assert isinstance(event, ChildExited)
        assert event.reason is ExitReason.SHUTDOWN
        with pytest.raises(ChildNotFound, match="'a'"):
            await sup.terminate_child("a")
        with pytest.raises(ChildNotFound):
            await sup.restart_child("nope")


async def test_restart_child_starts_a_fresh_incarnation() -> None:
    world = World()
    async with world.supervisor("a", "b", strategy=Strategy.ONE_FOR_ALL) as sup:
        old = world.live["a"]
        new = await sup.restart_child("a")
        assert new is world.live["a"]
        assert new is not old
        # Manual restarts apply to that child only, whatever the strategy.
        assert world.journal == ["start a", "start b", "stop a", "start a"]
        assert info(sup) == {"a": (True, 1), "b": (True, 0)}


async def test_restart_child_brings_back_a_finished_transient_child() -> None:
    world = World()
    async with world.supervisor() as sup:
        await sup.start_child(world.spec("t", restart=TRANSIENT))
        world.live["t"].finish()
        await world.until(exited("t"))
        assert info(sup) == {"t": (False, 0)}
        await sup.restart_child("t")
        assert info(sup) == {"t": (True, 1)}


async def test_restart_child_failing_raises_and_leaves_it_stopped() -> None:
    world = World()
    async with Supervisor(children=[world.spec("a", fail_at={2})]) as sup:
        with pytest.raises(Boom, match="a init"):
            await sup.restart_child("a")
        assert info(sup) == {"a": (False, 0)}
        await sup.restart_child("a")
        assert info(sup) == {"a": (True, 1)}


# -- observers ----------------------------------------------------------------------------------


async def test_a_raising_on_event_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    world = World()

    def broken(event: SupervisorEvent) -> None:
        raise RuntimeError("observer bug")

    async with Supervisor(children=[world.spec("a")], on_event=broken) as sup:
        world.live["a"].crash()
        await world.until_noted("start a")
        assert sup.running
    assert any("on_event raised" in r.getMessage() for r in caplog.records)


async def test_crashes_are_logged_with_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    async with world.supervisor("a"):
        world.live["a"].crash()
        await world.until(restarted("a"))
    [record] = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert record.name == "sagents.supervisor"
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


def test_a_supervisor_is_a_child() -> None:
    child: Child = Supervisor()  # checked by mypy: supervisors nest
    assert callable(child.run)


# -- scale and properties -----------------------------------------------------------------------


async def test_a_thousand_children_start_and_stop_cleanly() -> None:
    journal: list[str] = []
    specs = [
        ChildSpec(id=i, start=functools.partial(Probe, str(i), journal.append)) for i in range(1000)
    ]
    async with Supervisor(children=specs) as sup:
        assert sup.count_children() == 1000
        assert len(asyncio.all_tasks()) == 1000 + 2  # children, the supervisor, this test
    starts = [int(line.split()[1]) for line in journal if line.startswith("start")]
    stops = [int(line.split()[1]) for line in journal if line.startswith("stop")]
    assert starts == list(range(1000))
    assert stops == list(reversed(range(1000)))
    assert_no_orphans()


_ACTIONS = st.lists(
    st.tuples(
        st.integers(0, 2),  # which child
        st.booleans(),  # crash (True) or normal exit
        st.sampled_from([0, 1, 2, 6]),  # virtual seconds before it
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.looptime
@settings(max_examples=30, deadline=None)
@given(
    restarts=st.lists(st.sampled_from(list(RestartType)), min_size=3, max_size=3),
    strategy=st.sampled_from(list(Strategy)),
    max_restarts=st.integers(0, 3),
    actions=_ACTIONS,
)
async def test_random_exits_follow_the_model_and_leave_no_orphans(
    restarts: list[RestartType],
    strategy: Strategy,
    max_restarts: int,
    actions: list[tuple[int, bool, int]],
) -> None:
    # Integer delays and a 5.5 s window: no restart ever sits exactly on the window's edge.
    max_seconds = 5.5
    names = ["a", "b", "c"]
    world = World()
    specs = [world.spec(n, restart=r) for n, r in zip(names, restarts, strict=True)]
    sup = Supervisor(
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=max_seconds,
        children=specs,
        on_event=world.on_event,
    )
    loop = asyncio.get_running_loop()
    # The model: which children are listed and running, and when restarts happened.
    listed, running = list(names), set(names)
    restart_times: list[float] = []
    expect_give_up = False
    try:
        async with sup:
            for index, crash, delay in actions:
                await asyncio.sleep(delay)
                name = names[index]
                if name not in running:
                    continue
                kind = restarts[index]
                (world.live[name].crash if crash else world.live[name].finish)()
                if kind is TEMPORARY or (kind is TRANSIENT and not crash):
                    running.discard(name)
                    if kind is TEMPORARY:
                        listed.remove(name)
                    await world.until(exited(name))
                    continue
                now = loop.time()
                restart_times = [t for t in restart_times if now - t <= max_seconds] + [now]
                if len(restart_times) > max_restarts:
                    expect_give_up = True
                    await world.until(gave_up)
                    break
                if strategy is Strategy.ONE_FOR_ONE:
                    group = [name]
                elif strategy is Strategy.REST_FOR_ONE:
                    group = listed[listed.index(name) :]
                else:
                    group = list(listed)
                for sibling in group:
                    if (
                        sibling != name
                        and sibling in running
                        and restarts[names.index(sibling)] is TEMPORARY
                    ):
                        running.discard(sibling)
                        listed.remove(sibling)
                back = [n for n in group if n == name or n in running]
                await world.until(restarted(back[-1]))
                assert [c.id for c in sup.which_children()] == listed
                assert {c.id for c in sup.which_children() if c.running} == running
    except SupervisorGaveUp:
        assert expect_give_up
    else:
        assert not expect_give_up
        assert not any(isinstance(event, GaveUp) for event in world.events)
    assert_no_orphans()
    # Every incarnation that started has ended: as many exits as starts.
    starts = [e for e in world.events if isinstance(e, ChildStarted | ChildRestarted)]
    exits = [e for e in world.events if isinstance(e, ChildExited)]
    assert len(exits) == len(starts)
