"""An agent server under faults of the code it runs (issue 16, item 1): whatever a tool raises —
``BaseException`` included — is that call's failure; the agent is never wedged "running", and
the process (every other agent) never notices."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import ToolMessage

from sagents import Status
from sagents.execution import Reply, ToolCall
from sagents.runtime import PendingSubscription, Runtime

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime


class Custom(BaseException):
    """Not an Exception: slips past every ``except Exception``."""


RAISED: dict[str, BaseException] = {
    "system_exit": SystemExit(3),
    "keyboard_interrupt": KeyboardInterrupt(),
    "generator_exit": GeneratorExit(),
    "custom": Custom("odd"),
    "cancelled": asyncio.CancelledError(),
}


@pytest.mark.parametrize("kind", sorted(RAISED))
async def test_a_tool_raising_a_base_exception_fails_its_call_and_the_agent_goes_on(
    runtime: Runtime, kind: str
) -> None:
    async def explode() -> str:
        """Explode."""
        raise RAISED[kind]

    agent = make_agent(
        [
            Reply(tool_calls=[ToolCall(name="explode", args={})]),
            Reply(text="the tool failed"),
            Reply(text="still here"),
        ],
        tools=[explode],
    )
    bystander = await runtime.start_agent(make_agent(agent_id="bystander"), user())
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE, Status.ERROR)
    state = await handle.get_state()
    results = [m for m in state.messages if isinstance(m, ToolMessage)]
    assert [r.status for r in results] == ["error"]
    assert await handle.get_status() is Status.IDLE
    await handle.add_message("again")
    await until_status(events, Status.IDLE)
    assert (await handle.get_state()).messages[-1].content == "still here"
    assert await bystander.get_status() is Status.IDLE
    assert sorted(runtime.list_running_agents()) == ["agent-1", "bystander"]


async def test_a_run_task_cancelled_by_someone_else_does_not_wedge_the_agent(
    runtime: Runtime,
) -> None:
    agent = make_agent([Reply(text="slow", delay=10.0), Reply(text="next")])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await asyncio.sleep(1)
    # Fault injection, not an assertion: no public call reaches the run's task (cancel() goes
    # through the agent), and it is not the only task the run has.
    server: Any = runtime._registry.get("agent-1")
    server._runner.task.cancel()  # not through cancel(): e.g. a library cancelling tasks it found
    await until_status(events, Status.CANCELLED)
    await handle.add_message("go on")
    await until_status(events, Status.IDLE)
    assert (await handle.get_state()).messages[-1].content == "next"
