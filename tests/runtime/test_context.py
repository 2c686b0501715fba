"""Context propagation: the starter's contextvars reach runs, tools and hooks."""

from __future__ import annotations

import contextvars

import pytest

from sagents import InvalidOption, Middleware, State, Status
from sagents.execution import Reply, ToolCall
from sagents.runtime import PendingSubscription, Runtime

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
seen: list[tuple[str, str]] = []


def whoami() -> str:
    """Which request is this?"""
    seen.append(("tool", request_id.get()))
    return request_id.get()


class Recorder(Middleware):
    async def before_model(self, state: State) -> None:
        seen.append(("before_model", request_id.get()))

    async def on_server_start(self, state: State) -> None:
        seen.append(("on_server_start", request_id.get()))


def two_tool_turns() -> list[Reply]:
    calls = [ToolCall(name="whoami", args={}), ToolCall(name="whoami", args={})]
    return [
        Reply(tool_calls=calls),
        Reply(text="done"),
        Reply(tool_calls=calls[:1]),
        Reply(text="ok"),
    ]


@pytest.fixture(autouse=True)
def _clear() -> None:
    seen.clear()


async def test_runs_tools_and_hooks_see_the_starters_context(runtime: Runtime) -> None:
    agent = make_agent(two_tool_turns(), tools=[whoami], middleware=[Recorder()])
    token = request_id.set("req-1")
    try:
        events = PendingSubscription()
        handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    finally:
        request_id.reset(token)
    assert request_id.get() == "none"
    await handle.execute()  # called from a context without the request id
    await until_status(events, Status.IDLE)
    assert seen == [
        ("on_server_start", "req-1"),
        ("before_model", "req-1"),
        ("tool", "req-1"),
        ("tool", "req-1"),
        ("before_model", "req-1"),
    ]
    state = await handle.get_state()
    assert [m.content for m in state.messages if m.type == "tool"] == ["req-1", "req-1"]


async def test_update_context_replaces_the_snapshot_for_the_next_run(runtime: Runtime) -> None:
    agent = make_agent(two_tool_turns(), tools=[whoami])
    token = request_id.set("req-1")
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    request_id.set("req-2")
    await handle.update_context()
    request_id.reset(token)
    await handle.add_message("again")
    await until_status(events, Status.IDLE)
    assert [value for where, value in seen if where == "tool"] == ["req-1", "req-1", "req-2"]


async def test_an_explicit_context_option_wins(runtime: Runtime) -> None:
    context = contextvars.copy_context()
    context.run(request_id.set, "from-option")
    agent = make_agent(two_tool_turns(), tools=[whoami])
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), context=context, initial_subscribers=[events])
    await handle.execute()
    await until_status(events, Status.IDLE)
    assert {value for _, value in seen} == {"from-option"}
    with pytest.raises(InvalidOption, match="contextvars.Context"):
        await handle.update_context("nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="contextvars.Context"):
        await runtime.start_agent(make_agent(agent_id="other"), context={"a": 1})
