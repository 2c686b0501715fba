"""Timers and saving: inactivity (L20–L26), presence (L30–L36), auto-save (L45–L49), L14.

Every test runs on virtual time (looptime): timeouts are exact and take no real time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents import Status
from sagents.events import AgentShutdown, AgentStateUpdate, SaveFailed
from sagents.execution import Reply
from sagents.runtime import (
    AutoSave,
    LocalPresence,
    PendingSubscription,
    PresenceTracking,
    Runtime,
)

from .conftest import make_agent, tool_turn, until_status, user

pytestmark = pytest.mark.looptime


async def shutdown_of(events: Any) -> AgentShutdown:
    async for event in events:
        if isinstance(event, AgentShutdown):
            return event
    raise AssertionError("no AgentShutdown")


# -- inactivity ------------------------------------------------------------------------------


async def test_default_inactivity_timeout_is_300_seconds(runtime: Runtime) -> None:
    events = PendingSubscription()
    await runtime.start_agent(make_agent(), initial_subscribers=[events])
    loop = asyncio.get_running_loop()
    start = loop.time()
    shutdown = await shutdown_of(events)
    assert shutdown.reason == "inactivity"
    assert loop.time() - start == pytest.approx(300.0)
    assert runtime.list_running_agents() == []


async def test_activity_pushes_the_deadline_back(runtime: Runtime) -> None:
    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(), inactivity_timeout=10.0, initial_subscribers=[events]
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(8)
    await handle.get_state()  # a read is activity (L21)
    await asyncio.sleep(8)
    await handle.touch()
    await asyncio.sleep(8)
    await handle.export_state()
    info = await handle.info()
    assert info.inactivity_remaining == pytest.approx(10.0)
    await shutdown_of(events)
    assert loop.time() - start == pytest.approx(34.0)


async def test_a_long_run_is_never_shut_down_and_the_timer_restarts_after_it(
    runtime: Runtime,
) -> None:
    agent = make_agent([Reply(text="slow answer", chunk_size=1, delay=10.0)])
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent, user(), inactivity_timeout=30.0, initial_subscribers=[events]
    )
    loop = asyncio.get_running_loop()
    await handle.execute()
    assert (await handle.info()).inactivity_remaining is None  # a run is activity (L22)
    await until_status(events, Status.IDLE)
    finished = loop.time()
    assert finished > 100.0  # the run lasted longer than the timeout
    shutdown = await shutdown_of(events)
    assert shutdown.reason == "inactivity"
    assert loop.time() - finished == pytest.approx(30.0)


async def test_none_disables_the_inactivity_timeout(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), inactivity_timeout=None)
    await asyncio.sleep(100_000)
    assert await handle.get_status() is Status.IDLE
    assert (await handle.info()).inactivity_remaining is None


async def test_inactivity_shutdown_saves_then_the_agent_restarts_with_no_loss(
    runtime: Runtime,
) -> None:
    saved: dict[str, Any] = {}

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        saved[agent_id] = state

    agent = make_agent([Reply(text="first answer"), Reply(text="second answer")])
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent,
        user(),
        inactivity_timeout=60.0,
        auto_save=AutoSave(callback=save, interval=None, on_idle=False),
        initial_subscribers=[events],
    )
    await handle.execute()
    await until_status(events, Status.IDLE)
    assert (await shutdown_of(events)).reason == "inactivity"
    again = await runtime.start_agent(agent, saved["agent-1"])  # L24
    await again.add_message("more")
    state = await again.get_state()
    assert [m.content for m in state.messages[:2]] == ["hi", "first answer"]


# -- auto-save ---------------------------------------------------------------------------------


async def test_interval_saves_only_when_changed(runtime: Runtime) -> None:
    saves: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        saves.append((loop.time(), len(state["messages"])))

    start = loop.time()
    handle = await runtime.start_agent(
        make_agent(),
        user(),
        inactivity_timeout=None,
        auto_save=AutoSave(callback=save, interval=30.0, on_idle=False),
    )
    await asyncio.sleep(91)
    # The state it started with is what the application gave it (or restored): nothing
    # changed, so three interval ticks save nothing.
    assert saves == []
    await handle.add_message("change", run=False)
    await asyncio.sleep(30)
    assert [(round(t - start), n) for t, n in saves] == [(120, 2)]


async def test_on_idle_and_before_shutdown(runtime: Runtime) -> None:
    saves: list[int] = []

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        saves.append(len(state["messages"]))

    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(),
        user(),
        auto_save=AutoSave(callback=save, interval=None),
        initial_subscribers=[events],
    )
    await handle.execute()
    await until_status(events, Status.IDLE)
    await asyncio.sleep(0)
    assert saves == [2]
    await handle.stop()
    assert saves == [2, 2]


async def test_a_failing_save_is_reported_never_fatal_and_retried(runtime: Runtime) -> None:
    attempts: list[int] = []

    async def flaky(agent_id: str, state: dict[str, Any]) -> None:
        attempts.append(len(state["messages"]))
        if len(attempts) == 1:
            raise ConnectionError("database down")

    handle = await runtime.start_agent(
        make_agent(),
        user(),
        inactivity_timeout=None,
        auto_save=AutoSave(callback=flaky, interval=10.0, on_idle=False),
    )
    await handle.add_message("change", run=False)
    async with handle.subscribe("debug") as debug:
        await asyncio.sleep(10.5)
        event = await debug.__anext__()
        while not isinstance(event, SaveFailed):
            event = await debug.__anext__()
        assert "database down" in event.error
        assert await handle.get_status() is Status.IDLE
        await asyncio.sleep(10)
    assert attempts == [2, 2]  # retried at the next trigger, though nothing changed since


async def test_saves_never_overlap_and_never_go_backwards(runtime: Runtime) -> None:
    in_flight = 0
    seen: list[int] = []

    async def slow_save(agent_id: str, state: dict[str, Any]) -> None:
        nonlocal in_flight
        in_flight += 1
        assert in_flight == 1  # L48: never concurrent
        await asyncio.sleep(5)
        seen.append(len(state["messages"]))
        in_flight -= 1

    handle = await runtime.start_agent(
        make_agent(),
        inactivity_timeout=None,
        auto_save=AutoSave(callback=slow_save, interval=1.0, on_idle=False),
    )
    for i in range(20):
        await handle.add_message(f"m{i}", run=False)  # L49: not blocked by the slow saves
        await asyncio.sleep(0.7)
    await asyncio.sleep(30)
    await handle.stop()  # its final save happens here, on virtual time
    assert seen == sorted(seen)
    assert seen[-1] == 20
    assert len(seen) < 20  # bursts coalesce into the newest state


# -- save_new_message ---------------------------------------------------------------------------


async def test_every_new_message_is_saved_once_in_order(runtime: Runtime) -> None:
    saved: list[tuple[str | None, BaseMessage]] = []

    async def save_message(conversation_id: str | None, message: BaseMessage) -> None:
        await asyncio.sleep(0.1)
        saved.append((conversation_id, message))

    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent([tool_turn(), Reply(text="done")]),
        conversation_id="c-1",
        save_new_message=save_message,
        initial_subscribers=[events],
    )
    await handle.add_message("hello")
    await until_status(events, Status.IDLE)
    await asyncio.sleep(1)
    assert [type(m) for _, m in saved] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert {c for c, _ in saved} == {"c-1"}


async def test_a_failing_message_save_never_loses_the_message(runtime: Runtime) -> None:
    async def broken(conversation_id: str | None, message: BaseMessage) -> None:
        raise RuntimeError("disk full")

    handle = await runtime.start_agent(make_agent(), save_new_message=broken)
    async with handle.subscribe("debug") as debug:
        await handle.add_message("keep me", run=False)
        event = await debug.__anext__()
        while not isinstance(event, SaveFailed):
            event = await debug.__anext__()
        assert event.operation == "save_new_message"
    state = await handle.get_state()
    assert state.messages[-1].content == "keep me"


# -- presence -------------------------------------------------------------------------------------


async def test_idle_with_no_viewers_shuts_down_after_the_grace_period(runtime: Runtime) -> None:
    presence = LocalPresence()
    events = PendingSubscription()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await runtime.start_agent(
        make_agent(),
        presence=PresenceTracking(presence=presence, topic="conversation:1"),
        initial_subscribers=[events],
    )
    shutdown = await shutdown_of(events)
    assert shutdown.reason == "no_viewers"
    assert loop.time() - start == pytest.approx(5.0)  # default grace period (L36)


async def test_viewers_keep_the_agent_and_a_returning_viewer_cancels_the_grace(
    runtime: Runtime,
) -> None:
    presence = LocalPresence()
    ref = await presence.track("conversation:1", "user-1", auto_untrack=False)
    handle = await runtime.start_agent(
        make_agent(),
        presence=PresenceTracking(presence=presence, topic="conversation:1", grace_period=5.0),
        inactivity_timeout=None,
    )
    await asyncio.sleep(60)
    assert (await handle.info()).viewer_count == 1
    await presence.untrack("conversation:1", "user-1", ref)
    await asyncio.sleep(3)
    await presence.track("conversation:1", "user-1", auto_untrack=False)  # page reload
    await asyncio.sleep(60)
    assert await handle.get_status() is Status.IDLE


async def test_no_viewers_never_stops_a_run_or_a_pending_approval(runtime: Runtime) -> None:
    from sagents.middleware import HumanInTheLoop

    def delete(path: str) -> str:
        """Delete."""
        return path

    agent = make_agent(
        [Reply(text="slow", chunk_size=1, delay=5.0), tool_turn("delete", path="/x")],
        tools=[delete],
        middleware=[HumanInTheLoop(interrupt_on={"delete": True})],
    )
    events = PendingSubscription()
    presence = LocalPresence()
    handle = await runtime.start_agent(
        agent,
        user(),
        presence=PresenceTracking(presence=presence, topic="t", grace_period=1.0),
        inactivity_timeout=None,
        initial_subscribers=[events],
    )
    await handle.execute()
    await until_status(events, Status.IDLE)  # a 20 s run with no viewers (L31)
    # The grace period starts when the run completes (L34): 1 s later it shuts down.
    assert (await shutdown_of(events)).reason == "no_viewers"

    events2 = PendingSubscription()
    handle = await runtime.start_agent(
        agent,
        user(),
        presence=PresenceTracking(presence=presence, topic="t", grace_period=1.0),
        inactivity_timeout=None,
        initial_subscribers=[events2],
    )
    await handle.execute()
    await until_status(events2, Status.INTERRUPTED)
    await asyncio.sleep(3600)
    assert await handle.get_status() is Status.INTERRUPTED


async def test_debug_events_only_flow_to_debug_subscribers(runtime: Runtime) -> None:
    handle = await runtime.start_agent(make_agent(), user())
    async with handle.subscribe("main") as main, handle.subscribe("debug") as debug:
        await handle.execute()
        seen = await until_status(main, Status.IDLE)
        assert not any(e.channel == "debug" for e in seen)
        first = await debug.__anext__()
        assert isinstance(first, AgentStateUpdate)
