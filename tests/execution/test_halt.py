"""Halting a run on purpose (issue 15, item 2): ``raise Halt(reason)`` from a tool, a middleware
hook or a step ends the run cleanly — ``Done`` with the reason, a ``RunHalted`` event, every
call of the last turn answered — and an agent server goes ``idle``, not ``error``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents import (
    Agent,
    Done,
    Halt,
    RetryPolicy,
    SagentsError,
    State,
    Status,
    get_tool_context,
    telemetry,
)
from sagents.events import RunHalted, StatusChanged, TodosUpdated, ToolExecutionCompleted
from sagents.execution import (
    DEFAULT_MODE,
    CollectingSink,
    Middleware,
    Mode,
    Reply,
    Run,
    ScriptedChatModel,
    ToolCall,
)
from sagents.middleware import AskUserQuestion, TodoList
from sagents.runtime import PendingSubscription, Runtime


class Tools:
    """``spend`` halts once the budget is gone; ``note`` records and succeeds."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def tools(self) -> list[Any]:
        ran = self.ran

        async def spend(amount: int) -> str:
            """Spend some budget."""
            ran.append(f"spend {amount}")
            if amount > 10:
                raise Halt(f"the budget is spent ({amount} > 10)")
            return f"spent {amount}"

        async def note(text: str) -> str:
            """Take a note."""
            get_tool_context().update_state(lambda s: s.with_metadata("note", text))
            ran.append(f"note {text}")
            return f"noted {text}"

        return [spend, note]


def agent(script: list[Any], **kwargs: Any) -> Agent:
    kwargs.setdefault("tools", Tools().tools())
    return Agent(
        agent_id="halting",
        model=ScriptedChatModel(script=script),
        retry=RetryPolicy(max_attempts=1),
        **kwargs,
    )


def assert_history_valid(messages: list[BaseMessage]) -> None:
    calls = [c["id"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
    assert Counter(results) == Counter(calls)


def start() -> State:
    return State(messages=[HumanMessage("go")])


# -- from a tool ------------------------------------------------------------------------------


async def test_a_tool_halts_the_run_after_its_turn() -> None:
    tools = Tools()
    model = ScriptedChatModel(
        script=[
            Reply(
                tool_calls=[
                    ToolCall(name="spend", args={"amount": 50}, id="c1"),
                    ToolCall(name="note", args={"text": "kept"}, id="c2"),
                ]
            ),
            Reply(text="never asked"),
        ]
    )
    sink = CollectingSink()
    result = await Agent(agent_id="a", model=model, tools=tools.tools()).run(start(), sink=sink)

    assert isinstance(result, Done)
    assert result.halted == "the budget is spent (50 > 10)"
    assert model.calls == 1  # the model is not called again
    assert sorted(tools.ran) == ["note kept", "spend 50"]  # the other call of the turn finished
    assert result.state.metadata["note"] == "kept"  # and its state change applied
    results = {m.tool_call_id: m for m in result.state.messages if isinstance(m, ToolMessage)}
    assert results["c1"].status != "error"
    assert "the budget is spent" in str(results["c1"].content)
    assert results["c2"].content == "noted kept"
    assert_history_valid(result.state.messages)
    halts = [e for e in sink.events if isinstance(e, RunHalted)]
    assert [h.reason for h in halts] == ["the budget is spent (50 > 10)"]
    # A halt is not a failure: its call is reported completed.
    completed = {e.tool_call_id for e in sink.events if isinstance(e, ToolExecutionCompleted)}
    assert completed == {"c1", "c2"}


async def test_a_run_that_does_not_halt_is_not_marked() -> None:
    result = await agent(
        [Reply(tool_calls=[ToolCall(name="spend", args={"amount": 1})]), Reply(text="done")]
    ).run(start())
    assert isinstance(result, Done)
    assert result.halted is None


async def test_a_halt_wins_over_a_question_asked_in_the_same_turn() -> None:
    tools = Tools()
    ask = {"questions": [{"question": "Sure?", "choices": ["yes", "no"]}]}
    result = await agent(
        [
            Reply(
                tool_calls=[
                    ToolCall(name="ask_user", args=ask, id="q1"),
                    ToolCall(name="spend", args={"amount": 99}, id="c1"),
                ]
            )
        ],
        tools=tools.tools(),
        middleware=[AskUserQuestion()],
    ).run(start())

    assert isinstance(result, Done)
    assert result.halted is not None
    assert result.state.interrupt is None
    answered = {m.tool_call_id: m for m in result.state.messages if isinstance(m, ToolMessage)}
    assert "halted" in str(answered["q1"].content)  # the question is answered as not run
    assert_history_valid(result.state.messages)


# -- from middleware and steps ------------------------------------------------------------------


class Guard(Middleware):
    """Halts before or after the model, as told."""

    def __init__(self, where: str) -> None:
        self.where = where

    async def before_model(self, state: State) -> State | None:
        if self.where == "before" and len(state.messages) > 2:
            raise Halt("enough turns")
        return None

    async def after_model(self, state: State) -> None:
        if self.where == "after":
            raise Halt("the reply was not allowed")


async def test_before_model_halts_without_calling_the_model() -> None:
    model = ScriptedChatModel(
        script=[Reply(tool_calls=[ToolCall(name="spend", args={"amount": 1})]), Reply(text="x")]
    )
    sink = CollectingSink()
    result = await Agent(
        agent_id="a", model=model, tools=Tools().tools(), middleware=[Guard("before")]
    ).run(start(), sink=sink)

    assert isinstance(result, Done)
    assert result.halted == "enough turns"
    assert model.calls == 1
    assert [type(m) for m in result.state.messages] == [HumanMessage, AIMessage, ToolMessage]
    assert len(sink.of_type(RunHalted)) == 1


async def test_after_model_halts_and_answers_the_calls_it_stopped() -> None:
    tools = Tools()
    result = await agent(
        [Reply(tool_calls=[ToolCall(name="spend", args={"amount": 1}, id="c1")])],
        tools=tools.tools(),
        middleware=[Guard("after")],
    ).run(start())

    assert isinstance(result, Done)
    assert result.halted == "the reply was not allowed"
    assert tools.ran == []
    last = result.state.messages[-1]
    assert isinstance(last, ToolMessage)
    assert last.status == "error"
    assert "Not run: the run was halted: the reply was not allowed" in str(last.content)
    assert_history_valid(result.state.messages)


async def test_a_custom_step_can_halt() -> None:
    async def stop_after_todos(run: Run) -> None:
        if run.state.todos:
            raise Halt("the plan is written")

    steps = list(DEFAULT_MODE.steps)
    steps.insert(steps.index(DEFAULT_MODE.steps[-1]), stop_after_todos)
    todos = {"todos": [{"content": "plan"}]}
    sink = CollectingSink()
    result = await agent(
        [Reply(tool_calls=[ToolCall(name="write_todos", args=todos)]), Reply(text="x")],
        middleware=[TodoList()],
        mode=Mode(name="planning", steps=steps),
    ).run(start(), sink=sink)

    assert isinstance(result, Done)
    assert result.halted == "the plan is written"
    assert [type(e) for e in sink.events if isinstance(e, TodosUpdated | RunHalted)] == [
        TodosUpdated,
        RunHalted,
    ]


def test_halt_is_part_of_the_error_tree_and_keeps_its_reason() -> None:
    halt = Halt("why")
    assert isinstance(halt, SagentsError)
    assert halt.reason == "why"
    assert str(halt) == "why"


# -- through a server ------------------------------------------------------------------------


@pytest.mark.looptime
async def test_a_halted_run_leaves_the_agent_idle_with_the_reason() -> None:
    halting = agent(
        [Reply(tool_calls=[ToolCall(name="spend", args={"amount": 20})]), Reply(text="more")]
    )
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(halting, start(), initial_subscribers=[events])
        await handle.execute()
        seen = []
        async for event in events:
            seen.append(event)
            if isinstance(event, StatusChanged) and event.status is not Status.RUNNING:
                break
        halts = [e for e in seen if isinstance(e, RunHalted)]
        assert [h.reason for h in halts] == ["the budget is spent (20 > 10)"]
        assert halts[0].agent_id == "halting"
        last = seen[-1]
        assert isinstance(last, StatusChanged)
        assert last.status is Status.IDLE
        assert seen.index(halts[0]) < len(seen) - 1  # said before the status changes
        await events.aclose()
        # Nothing is left half-done: the next message runs on.
        async with handle.subscribe() as more:
            await handle.add_message("continue")
            async for event in more:
                if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    break
        state = await handle.get_state()
        assert state.messages[-1].content == "more"
        assert_history_valid(state.messages)


async def test_a_halt_is_a_telemetry_event_besides_the_run_s_stop() -> None:
    seen: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def record(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        seen.append((event, dict(metadata)))

    names = [telemetry.EXECUTION_HALT, telemetry.EXECUTION_STOP]
    telemetry.attach_many("halt-test", names, record)
    try:
        model = ScriptedChatModel(
            script=[Reply(tool_calls=[ToolCall(name="spend", args={"amount": 50}, id="c1")])]
        )
        await Agent(agent_id="a", model=model, tools=Tools().tools()).run(start())
    finally:
        telemetry.detach("halt-test")
    assert [(event, meta.get("status"), meta.get("reason")) for event, meta in seen] == [
        (telemetry.EXECUTION_STOP, "idle", None),
        (telemetry.EXECUTION_HALT, None, "the budget is spent (50 > 10)"),
    ]
