"""The inactivity deadline counts from the end of the start (runtime/_server.py, ``started``).

A start may take a while: the ``on_server_start`` hooks run before the server is registered
(``MCPTools`` waits up to its ``connect_timeout`` for its servers). Counted from the server's
creation, an inactivity timeout shorter than the start would stop the agent as soon as it is
up. These tests run on virtual time (looptime): a hook that takes ten seconds takes none.
"""

from __future__ import annotations

import asyncio

import pytest

from sagents import Middleware, State
from sagents.events import AgentShutdown
from sagents.runtime import AgentHandle, PendingSubscription, Runtime
from sagents.runtime._publisher import Subscription
from sagents.testing import crash_agent

from .conftest import make_agent, user

pytestmark = pytest.mark.looptime

START = 10.0  # seconds the start hook takes
TIMEOUT = 4.0  # the inactivity timeout, shorter than the start


class SlowStart(Middleware):
    """An ``on_server_start`` hook that takes ``START`` seconds; records when each ended."""

    key = "slow_start"

    def __init__(self) -> None:
        self.done: list[float] = []
        self._changed = asyncio.Condition()

    async def on_server_start(self, state: State) -> None:
        await asyncio.sleep(START)
        async with self._changed:
            self.done.append(asyncio.get_running_loop().time())
            self._changed.notify_all()

    async def ended(self, count: int) -> None:
        """Return once ``count`` starts have run the hook."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.done) >= count)


async def shutdown_time(events: PendingSubscription | Subscription) -> tuple[str, float]:
    """The reason of the ``AgentShutdown`` that ends ``events``, and when it came."""
    async with asyncio.timeout(600):
        seen = [event async for event in events]
    last = seen[-1]
    assert isinstance(last, AgentShutdown)
    return last.reason, asyncio.get_running_loop().time()


async def timeout_counts_from(handle: AgentHandle, started: float) -> None:
    """The agent's inactivity deadline is ``TIMEOUT`` after ``started``."""
    info = await handle.info()
    left = started + TIMEOUT - asyncio.get_running_loop().time()
    assert info.inactivity_remaining == pytest.approx(left, abs=0.01)


async def test_a_slow_start_hook_does_not_count_against_the_inactivity_timeout(
    runtime: Runtime,
) -> None:
    slow = SlowStart()
    events = PendingSubscription()
    loop = asyncio.get_running_loop()
    begun = loop.time()
    handle = await runtime.start_agent(
        make_agent(middleware=[slow]),
        user(),
        inactivity_timeout=TIMEOUT,
        initial_subscribers=[events],
    )
    assert slow.done == [pytest.approx(begun + START, abs=0.01)]
    await timeout_counts_from(handle, slow.done[0])
    await asyncio.sleep(TIMEOUT - 1)
    assert runtime.list_running_agents() == ["agent-1"]
    reason, when = await shutdown_time(events)
    assert reason == "inactivity"
    assert when == pytest.approx(slow.done[0] + TIMEOUT, abs=0.01)


async def test_the_restart_after_a_crash_gets_the_whole_timeout_too(runtime: Runtime) -> None:
    slow = SlowStart()
    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(middleware=[slow]),
        user(),
        inactivity_timeout=TIMEOUT,
        initial_subscribers=[events],
    )
    crash_agent(runtime, "agent-1")
    reason, _ = await shutdown_time(events)
    assert reason == "crash"
    async with asyncio.timeout(START * 2):  # the restart's hook takes START
        await slow.ended(2)
    await asyncio.sleep(0.01)  # then the restarted server is registered
    assert runtime.list_running_agents() == ["agent-1"]
    await timeout_counts_from(handle, slow.done[1])
    async with handle.subscribe() as restarted:
        reason, when = await shutdown_time(restarted)
    assert reason == "inactivity"
    assert when == pytest.approx(slow.done[1] + TIMEOUT, abs=0.01)
