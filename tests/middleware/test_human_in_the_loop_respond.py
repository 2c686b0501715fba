"""The ``respond`` decision of ``HumanInTheLoop`` (issue 15, item 6): the human answers in place
of the tool, which does not run; its result is the human's text."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage

from sagents import (
    Agent,
    Approve,
    Done,
    Interrupted,
    InvalidDecision,
    InvalidMiddleware,
    Respond,
    RetryPolicy,
    State,
    Status,
)
from sagents.events import DisplayMessageUpdated, StatusChanged, ToolExecutionCompleted
from sagents.execution import CollectingSink
from sagents.middleware import HumanInTheLoop
from sagents.persistence import MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime
from sagents.testing import Reply, ScriptedChatModel, ToolCall


class Tools:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def tools(self) -> list[Any]:
        ran = self.ran

        def lookup(query: str) -> str:
            """Look something up."""
            ran.append(f"lookup {query}")
            return f"found {query}"

        def ping() -> str:
            """Ping."""
            ran.append("ping")
            return "pong"

        return [lookup, ping]


def agent(tools: Tools, interrupt_on: dict[str, Any] | None = None) -> Agent:
    policy = {"lookup": {"allowed_decisions": ["approve", "respond", "reject"]}}
    model = ScriptedChatModel(
        script=[
            Reply(
                tool_calls=[
                    ToolCall(name="lookup", args={"query": "weather"}, id="c1"),
                    ToolCall(name="ping", args={}, id="c2"),
                ]
            ),
            Reply(text="done"),
        ]
    )
    return Agent(
        agent_id="respond",
        model=model,
        tools=tools.tools(),
        middleware=[HumanInTheLoop(interrupt_on=interrupt_on or policy)],
        retry=RetryPolicy(max_attempts=1),
    )


def start() -> State:
    return State(messages=[HumanMessage("what is the weather?")])


def results(state: State) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in state.messages if isinstance(m, ToolMessage)}


async def test_respond_is_offered_only_when_the_policy_allows_it() -> None:
    tools = Tools()
    interrupted = await agent(tools).run(start())
    assert isinstance(interrupted, Interrupted)
    # In the canonical order, whatever order the policy listed them in.
    assert interrupted.interrupt.action_requests[0].allowed_decisions == (
        "approve",
        "reject",
        "respond",
    )

    default = await agent(Tools(), {"lookup": True}).run(start())
    assert isinstance(default, Interrupted)
    assert "respond" not in default.interrupt.action_requests[0].allowed_decisions
    with pytest.raises(InvalidDecision, match="'respond' is not allowed"):
        await agent(Tools(), {"lookup": True}).resume(default.state, [Respond("sunny")])


async def test_a_response_replaces_the_tool_and_the_run_goes_on() -> None:
    tools = Tools()
    built = agent(tools)
    interrupted = await built.run(start())
    assert isinstance(interrupted, Interrupted)
    sink = CollectingSink()

    done = await built.resume(interrupted.state, [Respond("It is sunny, 21 °C.")], sink=sink)

    assert isinstance(done, Done)
    assert tools.ran == ["ping"]  # the unprotected call ran, the responded one did not
    answered = results(done.state)
    assert answered["c1"].content == "It is sunny, 21 °C."
    assert answered["c1"].status != "error"
    assert answered["c2"].content == "pong"
    completed = [e for e in sink.events if isinstance(e, ToolExecutionCompleted)]
    assert {e.tool_call_id: e.result for e in completed}["c1"] == "It is sunny, 21 °C."


@pytest.mark.parametrize(
    ("decision", "match"),
    [
        ({"type": "respond"}, "needs a 'message'"),
        ({"type": "respond", "message": "  "}, "needs a 'message'"),
        ({"type": "respond", "message": 3}, "needs a 'message'"),
        ({"type": "respond", "message": "x", "arguments": {}}, "only an edit"),
        (Respond(message="x" * 10_001), "longer than"),
    ],
)
async def test_a_malformed_response_is_refused(decision: Any, match: str) -> None:
    built = agent(Tools())
    interrupted = await built.run(start())
    assert isinstance(interrupted, Interrupted)
    with pytest.raises(InvalidDecision, match=match):
        await built.resume(interrupted.state, [decision])
    assert interrupted.state.interrupt is not None


def test_answer_is_not_an_approval_decision() -> None:
    with pytest.raises(InvalidMiddleware, match="allowed_decisions"):
        HumanInTheLoop(interrupt_on={"lookup": {"allowed_decisions": ["answer"]}})


@pytest.mark.looptime
async def test_a_response_is_recorded_on_the_call_s_display_row() -> None:
    store = MemoryPersistence()
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(
            agent(Tools()),
            start(),
            initial_subscribers=[events],
            conversation_id="c",
            display_message_persistence=store,
        )
        await handle.execute()
        async for event in events:
            if isinstance(event, StatusChanged) and event.status is Status.INTERRUPTED:
                break
        await handle.resume([{"type": "respond", "message": "sunny"}])
        decisions = []
        async for event in events:
            if isinstance(event, DisplayMessageUpdated):
                decisions.append(event.display_message["metadata"].get("decision"))
            if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
        await events.aclose()
    assert {"type": "respond", "message": "sunny"} in decisions


async def test_approve_still_works_beside_respond() -> None:
    tools = Tools()
    built = agent(tools)
    interrupted = await built.run(start())
    assert isinstance(interrupted, Interrupted)
    done = await built.resume(interrupted.state, [Approve()])
    assert isinstance(done, Done)
    assert sorted(tools.ran) == ["lookup weather", "ping"]
