"""The runtime: registry, health checks, options, supervision (L10–L16, L50–L63)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from sagents import (
    AgentAlreadyRunning,
    AgentNotRunning,
    InvalidOption,
    RegistryUnavailable,
    Status,
    telemetry,
)
from sagents.events import AgentShutdown, StatusChanged
from sagents.execution import Reply
from sagents.runtime import AgentInfo, AutoSave, PendingSubscription, Runtime
from sagents.testing import crash_agent

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime


async def test_duplicate_start_is_refused_even_when_concurrent(runtime: Runtime) -> None:
    results = await asyncio.gather(
        *(runtime.start_agent(make_agent()) for _ in range(20)), return_exceptions=True
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AgentAlreadyRunning)]
    assert len(started) == 1
    assert len(refused) == 19
    assert runtime.agent_count() == 1


async def test_health_checks(runtime: Runtime) -> None:
    for i in range(3):
        await runtime.start_agent(make_agent(agent_id=f"conversation-{i}"), conversation_id=str(i))
    await runtime.start_agent(make_agent(agent_id="other"))
    assert sorted(runtime.list_running_agents()) == [
        "conversation-0",
        "conversation-1",
        "conversation-2",
        "other",
    ]
    assert runtime.agent_count() == 4
    assert sorted(runtime.list_agents_matching("conversation-*")) == [
        "conversation-0",
        "conversation-1",
        "conversation-2",
    ]
    assert runtime.list_agents_matching("*-1") == ["conversation-1"]
    assert runtime.list_agents_matching("other") == ["other"]
    assert runtime.list_agents_matching("conv.*") == []  # only * is special
    assert await runtime.get_status("other") is Status.IDLE
    assert await runtime.get_status("missing") is None
    assert await runtime.agent_info("missing") is None
    await asyncio.sleep(12)
    info = await runtime.agent_info("conversation-1")
    assert isinstance(info, AgentInfo)
    assert info.agent_id == "conversation-1"
    assert info.conversation_id == "1"
    assert info.status is Status.IDLE
    assert info.message_count == 0
    assert info.has_interrupt is False
    assert info.uptime == pytest.approx(12.0)
    assert info.inactivity_remaining == pytest.approx(288.0)
    assert info.subscriber_count == 0
    assert info.viewer_count == 0


async def test_lookups_of_a_missing_agent(runtime: Runtime) -> None:
    with pytest.raises(AgentNotRunning):
        runtime.agent("nope")
    with pytest.raises(AgentNotRunning):
        await runtime.export_state("nope")


async def test_the_registry_is_unavailable_outside_the_runtime_life() -> None:
    runtime = Runtime()
    assert not runtime.ready()
    with pytest.raises(RegistryUnavailable):
        runtime.list_running_agents()
    with pytest.raises(RegistryUnavailable):
        await runtime.start_agent(make_agent())
    async with runtime:
        assert runtime.ready()
        handle = await runtime.start_agent(make_agent())
    assert not runtime.ready()
    with pytest.raises(RegistryUnavailable):  # never "not running" (L55)
        await runtime.get_status("agent-1")
    with pytest.raises(RegistryUnavailable):
        await handle.get_state()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"inactivity_timout": 5}, "unknown start option.*inactivity_timout"),
        ({"inactivity_timeout": -1}, "inactivity_timeout"),
        ({"inactivity_timeout": "5"}, "inactivity_timeout"),
        ({"auto_save": print}, "auto_save"),
        ({"conversation_id": 3}, "conversation_id"),
        ({"presence": "conversation:1"}, "presence"),
        ({"initial_subscribers": "x"}, "initial_subscribers"),
        ({"max_follow_ups": -1}, "max_follow_ups"),
        ({"save_new_message": 42}, "save_new_message"),
    ],
)
async def test_options_are_validated_at_start(
    runtime: Runtime, options: Mapping[str, Any], match: str
) -> None:
    with pytest.raises(InvalidOption, match=match):
        await runtime.start_agent(make_agent(), **options)
    assert runtime.agent_count() == 0


async def test_shutdown_stops_every_agent_gracefully_with_saves() -> None:
    saved: list[str] = []

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        await asyncio.sleep(1)
        saved.append(agent_id)

    watches = []
    async with Runtime() as runtime:
        for i in range(5):
            events = PendingSubscription()
            watches.append(events)
            await runtime.start_agent(
                make_agent(agent_id=f"a{i}"),
                auto_save=AutoSave(callback=save),
                initial_subscribers=[events],
            )
    assert sorted(saved) == [f"a{i}" for i in range(5)]
    for events in watches:
        last = [e async for e in events][-1]
        assert isinstance(last, AgentShutdown)
        assert last.reason == "shutdown"


async def test_a_crash_is_isolated_restarts_the_server_and_reaches_subscribers(
    runtime: Runtime,
) -> None:
    crashes: list[Mapping[str, Any]] = []
    telemetry.attach(
        "crashes", ("sagents", "agent", "crash"), lambda e, m, meta, c: crashes.append(meta)
    )
    victim = PendingSubscription()
    await runtime.start_agent(make_agent(agent_id="victim"), user(), initial_subscribers=[victim])
    bystander = await runtime.start_agent(make_agent(agent_id="bystander"), user())
    async with runtime.watch("victim") as watch:
        crash_agent(runtime, "victim")
        shutdown = [e async for e in victim][-1]
        assert isinstance(shutdown, AgentShutdown)
        assert shutdown.reason == "crash"  # L16
        assert [m["agent_id"] for m in crashes] == ["victim"]
        # The transient server is restarted from its initial state (L52); the watch follows.
        first = await watch.__anext__()
        assert isinstance(first, AgentShutdown)
        for _ in range(100):  # the supervisor restarts it from its own task
            if await runtime.get_status("victim") is not None:
                break
            await asyncio.sleep(0.01)
        assert await runtime.get_status("victim") is Status.IDLE
        restarted = runtime.agent("victim")
        assert len((await restarted.get_state()).messages) == 1
    assert await bystander.get_status() is Status.IDLE
    await bystander.execute()


async def test_a_server_crashing_in_a_loop_gives_up_without_touching_others() -> None:
    async with Runtime(max_restarts=2, max_seconds=60.0) as runtime:
        bystander = await runtime.start_agent(make_agent(agent_id="bystander"))
        await runtime.start_agent(make_agent(agent_id="victim"))
        for _ in range(3):
            async with runtime.agent("victim").subscribe() as events:
                crash_agent(runtime, "victim")
                async for _ in events:  # it ends with the server
                    pass
            await asyncio.sleep(0.1)
        assert runtime.list_running_agents() == ["bystander"]
        assert await bystander.get_status() is Status.IDLE


async def test_watch_is_pending_before_start_and_survives_restarts(runtime: Runtime) -> None:
    async with runtime.watch("agent-1") as watch:
        assert watch.pending
        handle = await runtime.start_agent(make_agent(), user())
        assert not watch.pending
        await handle.execute()
        seen = await until_status(watch, Status.IDLE)
        assert [e.status for e in seen if isinstance(e, StatusChanged)] == [
            Status.RUNNING,
            Status.IDLE,
        ]
        await runtime.stop("agent-1")
        shutdown = await watch.__anext__()
        assert isinstance(shutdown, AgentShutdown)
        again = await runtime.start_agent(make_agent([Reply(text="second life")]), user())
        await again.execute()
        seen = await until_status(watch, Status.IDLE)
        assert seen[0].seq == 1  # a new instance numbers its events from 1


async def test_replay_after_seq_for_a_reconnecting_client(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), user())
    async with handle.subscribe() as first:
        await handle.execute()
        seen = await until_status(first, Status.IDLE)
    middle = seen[len(seen) // 2].seq
    async with handle.subscribe(after_seq=middle) as again:
        replayed = [again.get_nowait() for _ in range(len(seen) - middle)]
    assert [e.seq for e in replayed if e is not None] == [e.seq for e in seen[middle:]]


async def test_telemetry_agent_start_and_stop(runtime: Runtime) -> None:
    seen: list[tuple[tuple[str, ...], Mapping[str, Any]]] = []
    telemetry.attach_many(
        "agent",
        [("sagents", "agent", "start"), ("sagents", "agent", "stop")],
        lambda event, measurements, metadata, config: seen.append((event, metadata)),
    )
    await runtime.start_agent(make_agent(), conversation_id="c9")
    await runtime.stop("agent-1", reason="done")
    assert [e[-1] for e, _ in seen] == ["start", "stop"]
    assert seen[1][1]["reason"] == "done"
    assert seen[1][1]["conversation_id"] == "c9"


async def test_a_thousand_agents_start_run_and_stop_with_nothing_left(runtime: Runtime) -> None:
    before = len(asyncio.all_tasks())
    handles = await asyncio.gather(
        *(runtime.start_agent(make_agent(agent_id=f"a{i}"), user()) for i in range(1000))
    )
    subscriptions = [h.subscribe() for h in handles]
    await asyncio.gather(*(h.execute() for h in handles))
    await asyncio.gather(*(until_status(s, Status.IDLE) for s in subscriptions))
    await asyncio.gather(*(runtime.stop(h.agent_id) for h in handles))
    for subscription in subscriptions:
        assert [type(e) for e in [e async for e in subscription]][-1] is AgentShutdown
    assert runtime.agent_count() == 0
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) <= before


class _Worker:
    """A minimal supervised child that records its life."""

    def __init__(self, log: list[str], crash: asyncio.Event | None = None) -> None:
        self.log = log
        self.crash = crash
        self.stopped = asyncio.Event()

    async def run(self, ready: Any) -> None:
        self.log.append("start")
        ready.started(self)
        waits = [asyncio.ensure_future(self.stopped.wait())]
        if self.crash is not None:
            waits.append(asyncio.ensure_future(self.crash.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if self.crash is not None and self.crash.is_set():
            self.crash.clear()
            raise RuntimeError("sub-agent crashed")
        self.log.append("stop")

    async def stop(self) -> None:
        self.stopped.set()


async def test_sub_agents_live_and_die_with_their_parent(runtime: Runtime) -> None:
    from sagents.runtime import ChildSpec

    handle = await runtime.start_agent(make_agent(), user())
    supervisor = await runtime.sub_agents("agent-1")
    assert await runtime.sub_agents("agent-1") is supervisor  # started once
    log: list[str] = []
    crash = asyncio.Event()
    await supervisor.start_child(ChildSpec(id="sub-1", start=lambda: _Worker(log, crash)))
    crash.set()  # a crashing sub-agent is restarted and never reaches the parent (L53)
    for _ in range(100):
        if log.count("start") == 2:
            break
        await asyncio.sleep(0.01)
    assert log == ["start", "start"]
    assert await handle.get_status() is Status.IDLE
    await runtime.stop("agent-1")  # the whole unit goes, sub-agents included
    assert log[-1] == "stop"
    with pytest.raises(AgentNotRunning):
        await runtime.sub_agents("agent-1")


async def test_every_server_instance_has_its_own_instance_id(runtime: Runtime) -> None:
    agent = make_agent(agent_id="again")
    await runtime.start_agent(agent)
    first = await runtime.agent_info("again")
    await runtime.stop("again")
    await runtime.start_agent(agent)
    second = await runtime.agent_info("again")
    other = await runtime.start_agent(make_agent(agent_id="other-one"))
    third = await other.info()
    assert first is not None
    assert second is not None
    assert len({first.instance, second.instance, third.instance}) == 3
    assert (await runtime.agent_info("again")) == second


async def test_get_agent_answers_the_configuration_the_server_runs(runtime: Runtime) -> None:
    first = make_agent([Reply(text="one")], base_system_prompt="You are terse.")
    handle = await runtime.start_agent(first, inactivity_timeout=None)
    assert await handle.get_agent() is first
    second = make_agent([Reply(text="two")], base_system_prompt="You are verbose.")
    await handle.update_agent_and_state(second, user("again"))
    assert await handle.get_agent() is second
    async with handle.subscribe() as events:
        await handle.execute()
        await until_status(events, Status.IDLE)
    assert (await handle.get_state()).messages[-1].content == "two"
    await handle.stop()
    with pytest.raises(AgentNotRunning):
        await handle.get_agent()
