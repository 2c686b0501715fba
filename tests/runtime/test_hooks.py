"""``on_server_stop``: the middleware hook every ending of an agent server runs (runtime/_hooks.py).

Whatever ends a server — a stop, inactivity, no viewers, a crash, the runtime's shutdown, a
failed start — its middleware hear of it once, with the reason, so that what they opened at the
start (connections, processes) is released. A hook that fails or hangs is logged and bounded:
the server ends anyway.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from sagents import LocalPresence, Middleware, PresenceTracking, SagentsError, State
from sagents.events import AgentShutdown, Event
from sagents.execution import get_middleware_context
from sagents.runtime import PendingSubscription, Runtime
from sagents.testing import crash_agent

from .conftest import make_agent, user

pytestmark = pytest.mark.looptime


class StopLog(Middleware):
    """Records each ``on_server_stop`` call as (name, reason, agent id)."""

    def __init__(self, log: list[tuple[str, str, str]], name: str = "log") -> None:
        self.log = log
        self.label = name
        self.key = f"stop_log_{name}"  # several in one agent

    async def on_server_stop(self, reason: str) -> None:
        self.log.append((self.label, reason, get_middleware_context().agent_id))


class Holder(StopLog):
    """Opens something at the start (a background task) and closes it at the stop."""

    def __init__(self, log: list[tuple[str, str, str]]) -> None:
        super().__init__(log, "holder")
        self.open: set[str] = set()

    async def on_server_start(self, state: State) -> None:
        ctx = get_middleware_context()
        self.open.add(ctx.agent_id)

    async def on_server_stop(self, reason: str) -> None:
        await super().on_server_stop(reason)
        self.open.discard(get_middleware_context().agent_id)


async def drain(events: PendingSubscription) -> list[Event]:
    return [event async for event in events]


async def shutdown_reason(events: PendingSubscription) -> str:
    last = (await drain(events))[-1]
    assert isinstance(last, AgentShutdown)
    return last.reason


@pytest.mark.parametrize("reason", ["manual", "user_left"])
async def test_a_stop_runs_the_hook_once_with_its_reason(runtime: Runtime, reason: str) -> None:
    log: list[tuple[str, str, str]] = []
    holder = Holder(log)
    await runtime.start_agent(make_agent(middleware=[holder]), user())
    assert holder.open == {"agent-1"}
    await runtime.stop("agent-1", reason=reason)
    assert log == [("holder", reason, "agent-1")]
    assert holder.open == set()


async def test_inactivity_runs_the_hook_even_for_an_agent_that_never_ran(
    runtime: Runtime,
) -> None:
    # No start hook and no run: the stop hook alone keeps the server off the task-free ending,
    # which would skip it.
    log: list[tuple[str, str, str]] = []
    events = PendingSubscription()
    await runtime.start_agent(
        make_agent(middleware=[StopLog(log)]),
        user(),
        inactivity_timeout=60.0,
        initial_subscribers=[events],
    )
    await asyncio.sleep(61)
    assert await shutdown_reason(events) == "inactivity"
    assert log == [("log", "inactivity", "agent-1")]


async def test_no_viewers_runs_the_hook(runtime: Runtime) -> None:
    log: list[tuple[str, str, str]] = []
    events = PendingSubscription()
    presence = LocalPresence()
    await runtime.start_agent(
        make_agent(middleware=[StopLog(log)]),
        user(),
        presence=PresenceTracking(presence=presence, topic="conversation:1", grace_period=5.0),
        initial_subscribers=[events],
    )
    await asyncio.sleep(6)
    assert await shutdown_reason(events) == "no_viewers"
    assert log == [("log", "no_viewers", "agent-1")]


async def test_a_crash_runs_the_hook_and_the_restart_starts_afresh(runtime: Runtime) -> None:
    log: list[tuple[str, str, str]] = []
    holder = Holder(log)
    events = PendingSubscription()
    await runtime.start_agent(make_agent(middleware=[holder]), user(), initial_subscribers=[events])
    crash_agent(runtime, "agent-1")
    assert await shutdown_reason(events) == "crash"
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert runtime.list_running_agents() == ["agent-1"]
    assert log == [("holder", "crash", "agent-1")]
    assert holder.open == {"agent-1"}  # the restarted server's start hook ran
    await runtime.shutdown()
    assert log[-1] == ("holder", "shutdown", "agent-1")
    assert holder.open == set()


async def test_the_runtime_shutdown_runs_every_agents_hook() -> None:
    log: list[tuple[str, str, str]] = []
    async with Runtime() as runtime:
        for i in range(3):
            await runtime.start_agent(make_agent(agent_id=f"a{i}", middleware=[StopLog(log)]))
    assert sorted(log) == [("log", "shutdown", f"a{i}") for i in range(3)]


async def test_hooks_run_in_reverse_order_and_a_failing_one_is_logged(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[tuple[str, str, str]] = []

    class Broken(Middleware):
        async def on_server_stop(self, reason: str) -> None:
            log.append(("broken", reason, "agent-1"))
            raise RuntimeError("cannot close")

    events = PendingSubscription()
    agent = make_agent(middleware=[StopLog(log, "first"), Broken(), StopLog(log, "last")])
    await runtime.start_agent(agent, user(), initial_subscribers=[events])
    with caplog.at_level(logging.ERROR, logger="sagents.server"):
        await runtime.stop("agent-1")
    assert [name for name, _, _ in log] == ["last", "broken", "first"]
    assert await shutdown_reason(events) == "manual"
    assert "Broken.on_server_stop failed" in caplog.text
    assert runtime.list_running_agents() == []


async def test_a_hook_that_hangs_is_cut_at_the_shutdown_timeout_and_its_tasks_end(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled: list[str] = []

    class Hangs(Middleware):
        async def on_server_start(self, state: State) -> None:
            async def background() -> None:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    cancelled.append("background")
                    raise

            get_middleware_context().spawn(background())

        async def on_server_stop(self, reason: str) -> None:
            await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    await runtime.start_agent(make_agent(middleware=[Hangs()]), user(), shutdown_timeout=10.0)
    started = loop.time()
    with caplog.at_level(logging.ERROR, logger="sagents.server"):
        await runtime.stop("agent-1")
    assert loop.time() - started == pytest.approx(10.0)
    assert "Hangs.on_server_stop did not finish within 10.0 s" in caplog.text
    assert cancelled == ["background"]
    assert runtime.list_running_agents() == []


async def test_a_failed_start_runs_the_hooks_and_leaves_no_context_behind(
    runtime: Runtime,
) -> None:
    log: list[tuple[str, str, str]] = []
    holder = Holder(log)

    class FailsToStart(Middleware):
        async def on_server_start(self, state: State) -> None:
            raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        await runtime.start_agent(make_agent(middleware=[holder, FailsToStart()]), user())
    assert log == [("holder", "start failed", "agent-1")]
    assert holder.open == set()  # what the first start hook opened is closed again
    with pytest.raises(SagentsError):
        get_middleware_context()  # the hook's context stayed with the hook
