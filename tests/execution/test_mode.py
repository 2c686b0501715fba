"""Custom modes built from the public steps (X11)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from langchain_core.messages import HumanMessage, ToolMessage

from sagents import Agent, Done, Failed, InvalidAgent, Mode, RunError, State
from sagents.execution import (
    DEFAULT_MODE,
    Reply,
    Run,
    RunResult,
    ScriptedChatModel,
    ToolCall,
    call_llm,
    check_max_runs,
    continue_or_done,
    execute_tools,
)
from tests.execution.conftest import Odd, in_a_loop_of_its_own


def echo(text: str) -> str:
    """Echo."""
    return text


def hello() -> State:
    return State(messages=[HumanMessage("hello")])


def test_default_mode_is_the_documented_pipeline() -> None:
    assert [s.__name__ for s in DEFAULT_MODE.steps] == [
        "call_llm",
        "check_max_runs",
        "check_pre_tool_hitl",
        "execute_tools",
        "propagate_state",
        "check_tool_interrupts",
        "check_until_tool",
        "continue_or_done",
    ]


async def test_custom_mode_with_a_custom_step() -> None:
    """A mode that redacts every tool result before the model sees it."""

    async def redact_tool_results(run: Run) -> RunResult | None:
        messages = [
            m.model_copy(update={"content": "[redacted]"}) if isinstance(m, ToolMessage) else m
            for m in run.state.messages
        ]
        run.commit(run.state.replace(messages=messages))
        return None

    mode = Mode(
        name="redacting",
        steps=[call_llm, check_max_runs, execute_tools, redact_tool_results, continue_or_done],
    )
    model = ScriptedChatModel(
        script=[
            Reply(tool_calls=[ToolCall(name="echo", args={"text": "secret"})]),
            Reply(text="ok"),
        ]
    )
    agent = Agent(agent_id="a", model=model, tools=[echo], mode=mode)
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert model.prompts[1][-1].content == "[redacted]"


async def test_a_single_shot_mode_never_runs_tools() -> None:
    async def stop(run: Run) -> RunResult | None:
        return Done(state=run.state)

    model = ScriptedChatModel(
        script=[Reply(tool_calls=[ToolCall(name="echo", args={"text": "x"})])]
    )
    agent = Agent(
        agent_id="a", model=model, tools=[echo], mode=Mode(name="once", steps=[call_llm, stop])
    )
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert result.state.pending_tool_calls()  # left for the caller to decide


async def test_a_mode_that_makes_no_progress_fails_instead_of_spinning() -> None:
    agent = Agent(
        agent_id="a",
        model=ScriptedChatModel(script=[]),
        mode=Mode(name="idle", steps=[check_max_runs]),
    )
    result = await agent.run(hello())
    assert isinstance(result, Failed)
    assert "made no progress" in str(result.error)


async def test_a_crashing_custom_step_ends_in_error_with_the_state_before_it() -> None:
    async def crash(run: Run) -> RunResult | None:
        raise ZeroDivisionError("oops")

    model = ScriptedChatModel(script=[Reply(text="hi")])
    agent = Agent(agent_id="a", model=model, mode=Mode(name="m", steps=[call_llm, crash]))
    result = await agent.run(hello())
    assert isinstance(result, Failed)
    assert isinstance(result.error, RunError)
    assert "step crash crashed: ZeroDivisionError: oops" in str(result.error)
    assert isinstance(result.error.__cause__, ZeroDivisionError)
    assert len(result.state.messages) == 2  # call_llm's commit is kept


@pytest.mark.parametrize(
    "error",
    [SystemExit(2), KeyboardInterrupt(), GeneratorExit(), Odd("odd"), asyncio.CancelledError()],
    ids=type,
)
def test_a_step_raising_a_base_exception_ends_the_run_failed(error: BaseException) -> None:
    async def crash(run: Run) -> RunResult | None:
        raise error

    model = ScriptedChatModel(script=[Reply(text="hi")])
    agent = Agent(agent_id="a", model=model, mode=Mode(name="m", steps=[call_llm, crash]))

    result = in_a_loop_of_its_own(lambda: agent.run(hello()))

    assert isinstance(result, Failed)
    assert str(result.error).startswith(f"step crash crashed: {type(error).__name__}")
    assert result.error.__cause__ is error
    assert len(result.state.messages) == 2  # call_llm's commit is kept


def test_a_mode_raising_a_base_exception_ends_the_run_failed() -> None:
    # Mode.run contains its steps; a custom mode's own code is contained by Run.execute.
    class Broken(Mode):
        async def run(self, run: Run) -> RunResult:
            raise Odd("odd")

    model = ScriptedChatModel(script=[])
    agent = Agent(agent_id="a", model=model, mode=Broken(name="broken", steps=[call_llm]))

    result = in_a_loop_of_its_own(lambda: agent.run(hello()))

    assert isinstance(result, Failed)
    assert str(result.error) == "mode 'broken' crashed: Odd: odd"


async def test_a_step_that_swallows_the_cancel_of_the_run_still_stops_it() -> None:
    entered = asyncio.Event()

    async def stubborn(run: Run) -> RunResult | None:
        entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return None

    model = ScriptedChatModel(script=[Reply(text="never")])
    agent = Agent(agent_id="a", model=model, mode=Mode(name="m", steps=[stubborn, call_llm]))
    task = asyncio.create_task(agent.run(hello()))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert model.calls == 0


def test_modes_are_validated() -> None:
    with pytest.raises(InvalidAgent, match="has no steps"):
        Mode(name="empty", steps=[])
    with pytest.raises(InvalidAgent, match="is not a step function"):
        Mode(name="bad", steps=["call_llm"])  # type: ignore[list-item]
