"""Containment helpers (``_containment.py``): tool views, cancel requests, descriptions."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool

from sagents import Agent, Done, State
from sagents.execution import Reply, ScriptedChatModel, ToolCall
from sagents.execution._containment import (
    cancel_requests,
    contain_tool,
    describe,
    reraise_cancellation,
)


class Counter(BaseTool):
    name: str = "counter"
    description: str = "Counts its calls."
    hits: int = 0

    def _run(self) -> int:
        self.hits += 1
        return self.hits


def test_a_contained_tool_is_the_same_tool_seen_through_a_guarded_class() -> None:
    counter = Counter()
    view = contain_tool(counter)

    assert view is not counter
    assert type(counter) is Counter  # the tool and its class are left alone
    assert "_arun" not in Counter.__dict__
    assert isinstance(view, Counter)
    assert type(view).__name__ == "Counter"
    assert (view.name, view.description, view.args) == ("counter", "Counts its calls.", {})
    assert contain_tool(view) is view
    # One state: what the view's runs change, the tool the user holds sees, and back.
    assert view.invoke({}) == 1
    assert counter.hits == 1
    counter.hits = 10
    assert view.invoke({}) == 11


async def test_an_agent_keeps_the_tools_it_was_given_and_runs_them_contained() -> None:
    counter = Counter()
    model = ScriptedChatModel(
        script=[Reply(tool_calls=[ToolCall(name="counter", args={})]), Reply(text="done")]
    )
    agent = Agent(agent_id="a", model=model, tools=[counter])

    result = await agent.run(State(messages=[HumanMessage("count")]))

    assert isinstance(result, Done)
    assert agent.all_tools["counter"] is counter
    assert counter.hits == 1  # the run's view changed the tool the user holds


async def test_a_cancel_request_is_told_from_a_stray_cancelled_error() -> None:
    since = cancel_requests()
    reraise_cancellation(asyncio.CancelledError(), since)  # stray: returns

    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as raised:
        reraise_cancellation(KeyError("cleanup"), since)
    assert isinstance(raised.value.__cause__, KeyError)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(0)  # the request itself is still delivered
    task.uncancel()


def test_describe_never_raises() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe(ValueError("bad")) == "ValueError: bad"
    assert describe(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert describe(Broken()) == "Broken: <the exception's message could not be read>"
