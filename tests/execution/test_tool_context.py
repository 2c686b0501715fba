"""ToolContext: what a tool sees besides its arguments."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from sagents import Agent, Done, Interrupt, Interrupted, SagentsError, State, get_tool_context
from sagents._interrupt import ActionRequest
from sagents.events import MiddlewareAction
from sagents.execution import CollectingSink, Reply, ScriptedChatModel, ToolCall


def test_outside_a_tool_it_raises_a_helpful_error() -> None:
    with pytest.raises(SagentsError, match="outside a tool"):
        get_tool_context()


async def test_tools_read_state_update_it_and_report() -> None:
    def remember(fact: str) -> str:
        """Remember a fact."""
        context = get_tool_context()
        assert context.tool_name == "remember"
        assert context.agent_id == "a"
        known = context.state.metadata.get("facts", [])
        context.update_state(
            lambda s: s.with_metadata("facts", [*s.metadata.get("facts", []), fact])
        )
        context.report("memory", {"stored": fact})
        return f"remembered ({len(known)} before)"

    model = ScriptedChatModel(
        script=[
            Reply(
                tool_calls=[
                    ToolCall(name="remember", args={"fact": "one"}),
                    ToolCall(name="remember", args={"fact": "two"}),
                ]
            ),
            Reply(text="ok"),
        ]
    )
    agent = Agent(agent_id="a", model=model, tools=[remember])
    sink = CollectingSink()
    result = await agent.run(State(messages=[HumanMessage("hi")]), sink=sink)
    assert isinstance(result, Done)
    assert result.state.metadata["facts"] == ["one", "two"]  # applied in call order
    actions = sink.of_type(MiddlewareAction)
    # Reports arrive as the tools run (concurrently); state changes apply in call order.
    assert sorted(a.data["stored"] for a in actions) == ["one", "two"]  # type: ignore[attr-defined]


async def test_a_failing_tool_changes_nothing() -> None:
    def half_done() -> str:
        """Fails after asking for a change."""
        get_tool_context().update_state(lambda s: s.with_metadata("x", 1))
        raise RuntimeError("then failed")

    model = ScriptedChatModel(
        script=[Reply(tool_calls=[ToolCall(name="half_done", args={})]), Reply(text="ok")]
    )
    agent = Agent(agent_id="a", model=model, tools=[half_done])
    result = await agent.run(State(messages=[HumanMessage("hi")]))
    assert "x" not in result.state.metadata


async def test_a_tool_can_pause_the_run() -> None:
    interrupt = Interrupt(
        kind="sub_agent",
        action_requests=(ActionRequest(tool_call_id="inner", name="delete_file", arguments={}),),
    )

    def delegate() -> str:
        """Delegates and waits for approval."""
        get_tool_context().request_interrupt(interrupt)
        return "waiting for approval"

    model = ScriptedChatModel(script=[Reply(tool_calls=[ToolCall(name="delegate", args={})])])
    agent = Agent(agent_id="a", model=model, tools=[delegate])
    result = await agent.run(State(messages=[HumanMessage("hi")]))
    assert isinstance(result, Interrupted)
    assert result.interrupt is interrupt
    assert result.state.interrupt is interrupt
