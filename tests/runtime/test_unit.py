"""Agent units: restarts, sub-agents, stops and shutdown without a task per agent (L11, L50–L54).

What the light unit must guarantee is what the per-agent supervisor it replaced guaranteed; these
tests pin the parts the other runtime tests do not reach, plus the costs that made the change
(no task per idle agent, nothing left after an expiry).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import pytest

from sagents import AgentNotRunning, InvalidOption, State, Status
from sagents.events import AgentShutdown, Event
from sagents.execution import Middleware, Reply
from sagents.runtime import AutoSave, PendingSubscription, Runtime
from sagents.testing import crash_agent

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime


async def drain(events: PendingSubscription) -> list[Event]:
    return [event async for event in events]


async def test_idle_agents_cost_no_task_and_a_run_leaves_none(runtime: Runtime) -> None:
    before = asyncio.all_tasks()
    handles = [await runtime.start_agent(make_agent(agent_id=f"a{i}"), user()) for i in range(50)]
    assert asyncio.all_tasks() == before
    async with handles[0].subscribe() as events:
        await handles[0].execute()
        await until_status(events, Status.IDLE)
    await asyncio.sleep(0)  # the mailbox task ends with its last message
    assert asyncio.all_tasks() == before
    assert await handles[0].get_status() is Status.IDLE


async def test_a_start_needs_no_other_task_to_run(runtime: Runtime) -> None:
    ran: list[str] = []
    asyncio.get_running_loop().call_soon(ran.append, "other")
    handle = await runtime.start_agent(make_agent(), user())
    assert ran == []  # registered and usable before the loop ran anything else (L10)
    assert runtime.list_running_agents() == ["agent-1"]
    assert await handle.get_status() is Status.IDLE


async def test_an_inactivity_expiry_of_many_agents_leaves_nothing_behind(
    runtime: Runtime,
) -> None:
    before = asyncio.all_tasks()
    watched = PendingSubscription()
    await runtime.start_agent(
        make_agent(agent_id="a0"), user(), inactivity_timeout=10, initial_subscribers=[watched]
    )
    for i in range(1, 500):
        await runtime.start_agent(make_agent(agent_id=f"a{i}"), user(), inactivity_timeout=10)
    await asyncio.sleep(9)
    assert runtime.agent_count() == 500
    await asyncio.sleep(2)
    assert runtime.agent_count() == 0
    assert runtime.inventory()["units"] == []
    assert asyncio.all_tasks() == before
    last = (await drain(watched))[-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "inactivity"
    again = await runtime.start_agent(make_agent(agent_id="a7"), user())  # L24
    assert await again.get_status() is Status.IDLE


async def test_a_crash_restarts_the_server_and_ends_its_sub_agents(runtime: Runtime) -> None:
    parent = await runtime.start_agent(make_agent(agent_id="parent"), user())
    child_events = PendingSubscription()
    await runtime.start_sub_agent(
        "parent", make_agent(agent_id="child"), user(), initial_subscribers=[child_events]
    )
    supervisor = await runtime.sub_agents("parent")
    crash_agent(runtime, "parent")
    last = (await drain(child_events))[-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "shutdown"  # ended with its parent (rest_for_one)
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert sorted(runtime.list_running_agents()) == ["parent"]  # restarted alone (L52)
    assert await parent.get_status() is Status.IDLE
    assert not supervisor.running
    assert await runtime.sub_agents("parent") is not supervisor  # a fresh one, on demand


async def test_a_crashing_sub_agent_never_reaches_its_parent(runtime: Runtime) -> None:
    parent = await runtime.start_agent(make_agent(agent_id="parent"), user())
    await runtime.start_sub_agent("parent", make_agent(agent_id="child"), user())
    crash_agent(runtime, "child")
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert sorted(runtime.list_running_agents()) == ["child", "parent"]
    assert await parent.get_status() is Status.IDLE


async def test_stopping_the_parent_ends_its_sub_agents_and_frees_both_ids(
    runtime: Runtime,
) -> None:
    await runtime.start_agent(make_agent(agent_id="parent"), user())
    child_events = PendingSubscription()
    await runtime.start_sub_agent(
        "parent", make_agent(agent_id="child"), user(), initial_subscribers=[child_events]
    )
    await runtime.stop("parent")
    assert runtime.list_running_agents() == []
    assert isinstance((await drain(child_events))[-1], AgentShutdown)
    assert runtime.inventory()["units"] == []
    with pytest.raises(AgentNotRunning):
        await runtime.start_sub_agent("parent", make_agent(agent_id="child"))
    await runtime.start_agent(make_agent(agent_id="parent"), user())  # at once (L40)
    await runtime.start_sub_agent("parent", make_agent(agent_id="child"), user())


async def test_an_agent_stopping_by_itself_ends_its_sub_agents(runtime: Runtime) -> None:
    await runtime.start_agent(make_agent(agent_id="parent"), user(), inactivity_timeout=5)
    await runtime.start_sub_agent(
        "parent", make_agent(agent_id="child"), user(), inactivity_timeout=None
    )
    await asyncio.sleep(6)
    assert runtime.list_running_agents() == []
    assert runtime.inventory()["units"] == []


async def test_shutdown_stops_sub_agents_before_their_parent_and_saves() -> None:
    order: list[str] = []

    async def save(agent_id: str, state: dict[str, Any]) -> None:
        await asyncio.sleep(0.1)
        order.append(agent_id)

    async with Runtime() as runtime:
        await runtime.start_agent(make_agent(agent_id="idle"), user())
        await runtime.start_agent(
            make_agent(agent_id="parent"), user(), auto_save=AutoSave(callback=save)
        )
        await runtime.start_sub_agent(
            "parent", make_agent(agent_id="child"), user(), auto_save=AutoSave(callback=save)
        )
    assert order == ["child", "parent"]  # L54
    assert runtime.inventory()["units"] == []


class Stuck(Middleware):
    """Handles a message by waiting forever: a server that cannot stop gracefully."""

    key = "stuck"

    async def handle_message(self, message: Any, state: State) -> None:
        await asyncio.Event().wait()


async def test_a_server_that_does_not_stop_in_time_is_cancelled_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = PendingSubscription()
    async with Runtime() as runtime:
        handle = await runtime.start_agent(
            make_agent(middleware=[Stuck()]),
            user(),
            shutdown_timeout=2,
            initial_subscribers=[events],
        )
        stuck = asyncio.create_task(handle.send_to_middleware("stuck", "wait"))
        await asyncio.sleep(1)
        with caplog.at_level(logging.WARNING, logger="sagents.runtime"):
            await runtime.shutdown()
    last = (await drain(events))[-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "shutdown"
    assert any("did not stop within" in r.message for r in caplog.records)
    with pytest.raises(AgentNotRunning):
        await stuck


async def test_a_restart_starts_from_the_initial_state_and_context(runtime: Runtime) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[str] = []

    class Recorder(Middleware):
        async def on_server_start(self, state: State) -> None:
            seen.append(request_id.get())

    token = request_id.set("req-1")
    try:
        handle = await runtime.start_agent(make_agent(middleware=[Recorder()]), user())
    finally:
        request_id.reset(token)
    await handle.add_message("more", run=False)
    crash_agent(runtime, "agent-1")
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert seen == ["req-1", "req-1"]
    assert len((await handle.get_state()).messages) == 1  # in-memory state is lost (L52)


async def test_equal_start_options_are_shared_but_each_agent_keeps_its_own(
    runtime: Runtime,
) -> None:
    a = await runtime.start_agent(make_agent(agent_id="a"), inactivity_timeout=10)
    b = await runtime.start_agent(make_agent(agent_id="b"), inactivity_timeout=10)
    c = await runtime.start_agent(
        make_agent(agent_id="c"), inactivity_timeout=20, metadata={"tenant": "t1"}
    )
    assert await a.options() is await b.options()
    assert (await a.info()).inactivity_remaining == (await b.info()).inactivity_remaining == 10
    info = await c.info()
    assert info.inactivity_remaining == 20
    assert info.metadata == {"tenant": "t1"}


async def test_a_failing_on_server_start_fails_the_start_and_leaves_nothing(
    runtime: Runtime,
) -> None:
    class Broken(Middleware):
        async def on_server_start(self, state: State) -> None:
            raise RuntimeError("cannot start")

    before = asyncio.all_tasks()
    events = PendingSubscription()
    with pytest.raises(RuntimeError, match="cannot start"):
        await runtime.start_agent(
            make_agent(middleware=[Broken()]), user(), initial_subscribers=[events]
        )
    assert runtime.list_running_agents() == []
    assert runtime.inventory()["units"] == []
    assert await drain(events) == []  # ended, never left hanging
    assert asyncio.all_tasks() == before
    await runtime.start_agent(make_agent(), user())


async def test_many_crashes_give_up_and_reply_to_waiting_callers() -> None:
    async with Runtime(max_restarts=1, max_seconds=60.0) as runtime:
        handle = await runtime.start_agent(make_agent(), user())
        for _ in range(2):
            async with handle.subscribe() as events:
                crash_agent(runtime, "agent-1")
                async for _ in events:  # it ends with the server
                    pass
            await asyncio.sleep(0.01)
        assert runtime.list_running_agents() == []
        assert runtime.inventory()["units"] == []
        with pytest.raises(AgentNotRunning):
            await handle.execute()
        restarted = await runtime.start_agent(make_agent(), user())  # a new unit, a new budget
        assert await restarted.get_status() is Status.IDLE


async def test_a_reply_is_never_lost_between_bursts(runtime: Runtime) -> None:
    # Each burst of messages is drained by a task that ends when the mailbox is empty; calls
    # made right as one ends must start the next, in order.
    handle = await runtime.start_agent(make_agent([Reply(text="a")] * 50), user())
    for i in range(20):
        await asyncio.gather(*(handle.add_message(f"m{i}-{j}", run=False) for j in range(5)))
        await asyncio.sleep(0)
    texts = [m.content for m in (await handle.get_state()).messages[1:]]
    assert texts == [f"m{i}-{j}" for i in range(20) for j in range(5)]


async def test_shared_options_never_skip_validation(runtime: Runtime) -> None:
    await runtime.start_agent(make_agent(agent_id="a"), max_follow_ups=1, replay_size=1)
    with pytest.raises(InvalidOption):
        await runtime.start_agent(make_agent(agent_id="b"), max_follow_ups=True)  # == 1
    with pytest.raises(InvalidOption):
        await runtime.start_agent(make_agent(agent_id="c"), replay_size=1.0)  # == 1
    assert runtime.list_running_agents() == ["a"]


async def test_a_broken_initial_subscriber_fails_the_start_and_ends_the_others(
    runtime: Runtime,
) -> None:
    class Broken:
        def attach(self, publisher: object) -> None:
            raise RuntimeError("cannot attach")

    events = PendingSubscription()
    with pytest.raises(RuntimeError, match="cannot attach"):
        await runtime.start_agent(make_agent(), user(), initial_subscribers=[events, Broken()])
    assert await drain(events) == []
    assert runtime.list_running_agents() == []
    await runtime.start_agent(make_agent(), user())
