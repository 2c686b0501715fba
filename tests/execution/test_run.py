"""The execution loop end to end: rules X10–X16, driven by the scripted model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool

from sagents import (
    Agent,
    Done,
    Failed,
    InvalidAgent,
    MaxRunsExceeded,
    Middleware,
    ModelCallFailed,
    RetryPolicy,
    RunError,
    State,
    UntilToolNotCalled,
)
from sagents.events import (
    ChainError,
    LLMDeltas,
    LLMError,
    LLMMessage,
    LLMTokenUsage,
    ToolCallIdentified,
    ToolExecutionCompleted,
    ToolExecutionFailed,
    ToolExecutionStarted,
)
from sagents.execution import CollectingSink, Fail, Reply, Run, ToolCall
from sagents.testing import ScriptedChatModel
from tests.execution.conftest import Odd, in_a_loop_of_its_own

NO_WAIT = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=False)


def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


def hello() -> State:
    return State(messages=[HumanMessage("hello")])


def make(script: list[Any], **kwargs: Any) -> tuple[Agent, ScriptedChatModel]:
    model = ScriptedChatModel(script=script)
    kwargs.setdefault("tools", [echo])
    kwargs.setdefault("retry", NO_WAIT)
    return Agent(agent_id="agent-1", model=model, **kwargs), model


async def test_plain_answer_ends_done_with_the_reply_in_state() -> None:
    agent, _ = make([Reply(text="Hi there, how can I help?")])
    sink = CollectingSink()
    result = await agent.run(hello(), sink=sink)
    assert isinstance(result, Done)
    assert result.value is None
    assert [type(m) for m in result.state.messages] == [HumanMessage, AIMessage]
    assert result.state.messages[-1].content == "Hi there, how can I help?"
    assert result.state.agent_id == "agent-1"
    deltas = sink.of_type(LLMDeltas)
    assert len(deltas) > 1
    assert "".join(str(d.deltas[0].content) for d in deltas) == "Hi there, how can I help?"  # type: ignore[attr-defined]
    kinds = [type(e) for e in sink.events if not isinstance(e, LLMDeltas)]
    assert kinds.index(LLMMessage) < kinds.index(LLMTokenUsage)
    assert all(e.agent_id == "agent-1" for e in sink.events)
    assert sink.messages == [result.state.messages[-1]]


async def test_tool_turn_runs_tools_and_continues_until_the_model_answers() -> None:
    agent, model = make(
        [
            Reply(tool_calls=[ToolCall(name="echo", args={"text": "x"}, id="c1")]),
            Reply(text="done"),
        ]
    )
    sink = CollectingSink()
    result = await agent.run(hello(), sink=sink)
    assert isinstance(result, Done)
    tool_message = result.state.messages[2]
    assert isinstance(tool_message, ToolMessage)
    assert tool_message.content == "echo: x"
    assert tool_message.tool_call_id == "c1"
    assert model.calls == 2
    # The second model call saw the tool result.
    assert isinstance(model.prompts[1][-1], ToolMessage)
    started = sink.of_type(ToolExecutionStarted)
    assert [(e.tool_call_id, e.name, e.arguments) for e in started] == [
        ("c1", "echo", {"text": "x"})
    ]  # type: ignore[attr-defined]
    assert [e.result for e in sink.of_type(ToolExecutionCompleted)] == ["echo: x"]  # type: ignore[attr-defined]
    identified = sink.of_type(ToolCallIdentified)
    assert [(e.tool_call_id, e.name) for e in identified] == [("c1", "echo")]  # type: ignore[attr-defined]
    assert sink.events.index(identified[0]) < sink.events.index(sink.of_type(LLMMessage)[0])
    assert sink.messages == result.state.messages[1:]


async def test_system_prompt_is_base_prompt_then_middleware_in_order() -> None:
    class First(Middleware):
        def system_prompt(self) -> str | None:
            return "first"

    class Second(Middleware):
        def system_prompt(self) -> str | None:
            return "second"

    agent, model = make([Reply(text="ok")], base_system_prompt="base", middleware=[First, Second])
    await agent.run(hello())
    system = model.prompts[0][0]
    assert isinstance(system, SystemMessage)
    assert system.content == "base\n\nfirst\n\nsecond"


async def test_tools_of_one_turn_run_concurrently() -> None:
    # Each tool waits for the other to start: this only finishes if they run at the same time.
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def tool_a() -> str:
        """A."""
        a_started.set()
        await b_started.wait()
        return "a"

    async def tool_b() -> str:
        """B."""
        b_started.set()
        await a_started.wait()
        return "b"

    agent, _ = make(
        [
            Reply(tool_calls=[ToolCall(name="tool_a", args={}), ToolCall(name="tool_b", args={})]),
            Reply(text="both done"),
        ],
        tools=[tool_a, tool_b],
    )
    result = await asyncio.wait_for(agent.run(hello()), timeout=10)
    assert isinstance(result, Done)
    assert [m.content for m in result.state.messages if isinstance(m, ToolMessage)] == ["a", "b"]


async def test_raising_unknown_and_invalid_tool_calls_become_error_results() -> None:
    def explode() -> str:
        """Always fails."""
        raise ValueError("kaboom")

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent, model = make(
        [
            Reply(
                tool_calls=[
                    ToolCall(name="explode", args={}, id="c1"),
                    ToolCall(name="nope", args={}, id="c2"),
                    ToolCall(name="add", args={"a": "not a number", "b": 1}, id="c3"),
                    ToolCall(name="add", args={"a": 1, "b": 2}, id="c4"),
                ]
            ),
            Reply(text="recovered"),
        ],
        tools=[explode, add],
    )
    sink = CollectingSink()
    result = await agent.run(hello(), sink=sink)
    assert isinstance(result, Done)
    results = {m.tool_call_id: m for m in result.state.messages if isinstance(m, ToolMessage)}
    assert results["c1"].status == "error"
    assert "kaboom" in str(results["c1"].content)
    assert results["c2"].status == "error"
    assert "unknown tool 'nope'" in str(results["c2"].content)
    assert "add" in str(results["c2"].content)  # lists what is available
    assert results["c3"].status == "error"
    assert "invalid arguments" in str(results["c3"].content)
    assert "a:" in str(results["c3"].content)
    assert results["c4"].content == "3"
    assert results["c4"].status == "success"
    failed = {e.tool_call_id for e in sink.of_type(ToolExecutionFailed)}  # type: ignore[attr-defined]
    assert failed == {"c1", "c2", "c3"}
    # The model saw every error on its next turn.
    assert sum(isinstance(m, ToolMessage) for m in model.prompts[1]) == 4


@pytest.mark.looptime
async def test_a_hanging_tool_hits_its_timeout() -> None:
    never = asyncio.Event()

    async def hang() -> str:
        """Never returns."""
        await never.wait()
        return "unreachable"

    agent, _ = make(
        [Reply(tool_calls=[ToolCall(name="hang", args={}, id="c1")]), Reply(text="moving on")],
        tools=[hang],
        tool_timeout=30.0,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await agent.run(hello())
    assert isinstance(result, Done)
    message = result.state.messages[2]
    assert isinstance(message, ToolMessage)
    assert message.status == "error"
    assert "timed out after 30 s" in str(message.content)
    assert loop.time() - started == pytest.approx(30.0)


@pytest.mark.looptime
async def test_tool_metadata_timeout_overrides_the_agent_default() -> None:
    async def slow() -> str:
        """Slow."""
        await asyncio.sleep(10)
        return "slow done"

    tool = StructuredTool.from_function(coroutine=slow, metadata={"timeout": 2})
    agent, _ = make(
        [Reply(tool_calls=[ToolCall(name="slow", args={})]), Reply(text="ok")],
        tools=[tool],
        tool_timeout=60.0,
    )
    result = await agent.run(hello())
    assert "timed out after 2 s" in str(result.state.messages[2].content)


async def test_max_runs_ends_a_looping_run_with_a_clear_error() -> None:
    model = ScriptedChatModel(
        responder=lambda messages: Reply(tool_calls=[ToolCall(name="echo", args={"text": "again"})])
    )
    agent = Agent(agent_id="looper", model=model, tools=[echo], max_runs=4)
    result = await agent.run(hello())
    assert isinstance(result, Failed)
    assert isinstance(result.error, MaxRunsExceeded)
    assert "max_runs=4" in str(result.error)
    assert model.calls == 4
    # The state is consistent: the last AI message's calls were not run, and nothing dangles
    # except that unanswered request, which a later run would resume.
    assert isinstance(result.state.messages[-1], AIMessage)


async def test_default_max_runs_is_50() -> None:
    agent, _ = make([Reply(text="x")])
    assert agent.max_runs == 50


async def test_until_tool_returns_the_tool_result_as_a_structured_value() -> None:
    def submit(answer: str, confidence: float) -> dict[str, Any]:
        """Submit the final answer."""
        return {"answer": answer, "confidence": confidence}

    agent, model = make(
        [
            Reply(tool_calls=[ToolCall(name="echo", args={"text": "research"})]),
            Reply(tool_calls=[ToolCall(name="submit", args={"answer": "42", "confidence": 0.9})]),
            Reply(text="never asked"),
        ],
        tools=[echo, submit],
        until_tool="submit",
    )
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert result.value == {"answer": "42", "confidence": 0.9}
    assert model.calls == 2


async def test_until_tool_not_called_is_an_error() -> None:
    def submit(answer: str) -> str:
        """Submit."""
        return answer

    agent, _ = make([Reply(text="I just chat.")], tools=[submit], until_tool="submit")
    result = await agent.run(hello())
    assert isinstance(result, Failed)
    assert isinstance(result.error, UntilToolNotCalled)
    assert "submit" in str(result.error)


async def test_until_tool_with_several_names_ends_on_any_of_them() -> None:
    def submit(answer: str) -> str:
        """Submit the answer."""
        return answer

    def give_up(reason: str) -> dict[str, str]:
        """Give up, saying why."""
        return {"gave_up": reason}

    agent, model = make(
        [
            Reply(tool_calls=[ToolCall(name="echo", args={"text": "research"})]),
            Reply(tool_calls=[ToolCall(name="give_up", args={"reason": "no data"})]),
            Reply(text="never asked"),
        ],
        tools=[echo, submit, give_up],
        until_tool=["submit", "give_up"],
    )
    assert agent.until_tools == ("submit", "give_up")
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert result.value == {"gave_up": "no data"}
    assert model.calls == 2
    chatty, _ = make([Reply(text="hm")], tools=[submit, give_up], until_tool=("submit", "give_up"))
    failed = await chatty.run(hello())
    assert isinstance(failed, Failed)
    assert "submit or give_up" in str(failed.error)


@pytest.mark.parametrize("until_tool", [[], ["submit", ""], [3]])
async def test_until_tool_names_must_be_tool_names(until_tool: Any) -> None:
    def submit(answer: str) -> str:
        """Submit."""
        return answer

    with pytest.raises(InvalidAgent, match="until_tool"):
        make([Reply(text="x")], tools=[submit], until_tool=until_tool)


async def test_transient_errors_are_retried_and_reported_as_llm_errors() -> None:
    agent, model = make(
        [
            Fail(error=TimeoutError("slow provider")),
            Fail(error=ConnectionError("reset")),
            Reply(text="ok"),
        ]
    )
    sink = CollectingSink()
    result = await agent.run(hello(), sink=sink)
    assert isinstance(result, Done)
    assert model.calls == 3
    errors = sink.of_type(LLMError)
    assert [e.attempt for e in errors] == [1, 2]  # type: ignore[attr-defined]
    assert "slow provider" in errors[0].error  # type: ignore[attr-defined]


@pytest.mark.looptime
async def test_retries_back_off_on_the_event_loop_clock() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=1.0, multiplier=4.0, jitter=False)
    agent, _ = make(
        [Fail(error=TimeoutError()), Fail(error=TimeoutError()), Reply(text="ok")], retry=policy
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert loop.time() - started == pytest.approx(1.0 + 4.0)


async def test_non_transient_error_skips_retries_and_uses_the_fallback_model() -> None:
    primary = ScriptedChatModel(script=[Fail(error=ValueError("bad request"))])
    fallback = ScriptedChatModel(script=[Reply(text="from fallback")])
    agent = Agent(agent_id="a", model=primary, fallback_models=[fallback], retry=NO_WAIT)
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert result.state.messages[-1].content == "from fallback"
    assert primary.calls == 1


async def test_before_fallback_hooks_rewrite_what_the_fallback_model_is_sent() -> None:
    seen: list[tuple[str, str]] = []

    class PlainPrompt(Middleware):
        async def before_fallback(
            self, messages: list[BaseMessage], error: BaseException, model: BaseChatModel
        ) -> list[BaseMessage] | None:
            seen.append((type(error).__name__, type(model).__name__))
            return [SystemMessage("Answer plainly."), *messages[1:]]

    class Unchanged(Middleware):
        async def before_fallback(
            self, messages: list[BaseMessage], error: BaseException, model: BaseChatModel
        ) -> list[BaseMessage] | None:
            seen.append(("unchanged", str(messages[0].content)))  # sees the first hook's
            return None

    primary = ScriptedChatModel(script=[Fail(error=ValueError("bad request"))])
    fallback = ScriptedChatModel(script=[Reply(text="from fallback")])
    agent = Agent(
        agent_id="a",
        model=primary,
        fallback_models=[fallback],
        retry=NO_WAIT,
        base_system_prompt="Answer in the house style.",
        middleware=[PlainPrompt(), Unchanged()],
    )
    result = await agent.run(hello())
    assert isinstance(result, Done)
    assert seen == [("ValueError", "ScriptedChatModel"), ("unchanged", "Answer plainly.")]
    [sent] = fallback.prompts
    assert sent[0].content == "Answer plainly."
    [first] = primary.prompts
    assert first[0].content == "Answer in the house style."
    assert result.state.messages[0].content == "hello"  # the state is not changed by it


async def test_exhausted_model_ends_in_error_with_state_kept() -> None:
    primary = ScriptedChatModel(script=[Fail(error=TimeoutError("t"))] * 3)
    fallback = ScriptedChatModel(script=[Fail(error=RuntimeError("down"))])
    agent = Agent(agent_id="a", model=primary, fallback_models=[fallback], retry=NO_WAIT)
    sink = CollectingSink()
    state = hello()
    result = await agent.run(state, sink=sink)
    assert isinstance(result, Failed)
    assert isinstance(result.error, ModelCallFailed)
    assert "4 attempt(s) on 2 model(s)" in str(result.error)
    assert result.state.messages == state.messages
    assert len(sink.of_type(ChainError)) == 1
    assert len(sink.of_type(LLMError)) == 4


async def test_a_stream_failing_midway_leaves_no_partial_message() -> None:
    agent, _ = make(
        [Fail(error=RuntimeError("stream cut"), text="partial answer here", after_chunks=2)],
        retry=RetryPolicy(max_attempts=1),
    )
    sink = CollectingSink()
    result = await agent.run(hello(), sink=sink)
    assert isinstance(result, Failed)
    assert len(sink.of_type(LLMDeltas)) == 2
    assert [type(m) for m in result.state.messages] == [HumanMessage]
    assert all(len(s.messages) == 1 for s in sink.states)


@pytest.mark.looptime
async def test_cancel_mid_stream_after_some_deltas() -> None:
    agent, _ = make([Reply(text="x" * 100, chunk_size=10, delay=1.0)])
    sink = CollectingSink()
    run = Run(agent, hello(), sink=sink)
    task = asyncio.create_task(run.execute())
    await asyncio.sleep(3.5)  # virtual time: three chunks have streamed
    assert len(sink.of_type(LLMDeltas)) == 3
    loop = asyncio.get_running_loop()
    cancelled_at = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The cancel reached into the stream: no further chunk delay was waited for.
    assert loop.time() == cancelled_at
    assert [type(m) for m in run.state.messages] == [HumanMessage]
    assert not sink.of_type(LLMMessage)


@pytest.mark.looptime
async def test_cancel_during_tools_keeps_finished_results_and_marks_the_rest() -> None:
    async def quick() -> str:
        """Quick."""
        return "quick result"

    async def slow() -> str:
        """Slow."""
        await asyncio.sleep(1000)
        return "slow result"

    agent, _ = make(
        [
            Reply(
                tool_calls=[
                    ToolCall(name="quick", args={}, id="q"),
                    ToolCall(name="slow", args={}, id="s"),
                ]
            )
        ],
        tools=[quick, slow],
    )
    sink = CollectingSink()
    run = Run(agent, hello(), sink=sink)
    task = asyncio.create_task(run.execute())
    await asyncio.sleep(10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    results = {m.tool_call_id: m for m in run.state.messages if isinstance(m, ToolMessage)}
    assert results["q"].content == "quick result"
    assert results["s"].status == "error"
    assert "Cancelled" in str(results["s"].content)
    assert run.state.pending_tool_calls() == []
    assert sink.states[-1] is run.state


async def test_middleware_crash_ends_in_error_and_keeps_the_state() -> None:
    class Broken(Middleware):
        async def before_model(self, state: State) -> State | None:
            raise KeyError("missing")

    agent, model = make([Reply(text="never")], middleware=[Broken()])
    state = hello()
    result = await agent.run(state)
    assert isinstance(result, Failed)
    assert isinstance(result.error, RunError)
    assert "Broken.before_model failed" in str(result.error)
    assert result.state.messages == state.messages
    assert model.calls == 0


HOOK_ERRORS = [
    SystemExit(2),
    KeyboardInterrupt(),
    GeneratorExit(),
    Odd("odd"),
    asyncio.CancelledError(),  # raised by the hook itself: nobody cancelled the run
]


@pytest.mark.parametrize("hook", ["before_model", "after_model"])
@pytest.mark.parametrize("error", HOOK_ERRORS, ids=type)
def test_a_middleware_hook_raising_a_base_exception_ends_the_run_failed(
    hook: str, error: BaseException
) -> None:
    # SystemExit/KeyboardInterrupt used to leave the event loop (ending the process), the others
    # to end the run without a result, leaving its agent "running" for ever.
    async def broken(self: Middleware, state: State) -> None:
        raise error

    broken_class = type("Broken", (Middleware,), {hook: broken})
    agent, _ = make([Reply(text="answer")], middleware=[broken_class()])

    result = in_a_loop_of_its_own(lambda: agent.run(hello()))

    assert isinstance(result, Failed)
    assert isinstance(result.error, RunError)
    assert str(result.error).startswith(f"Broken.{hook} failed: {type(error).__name__}")
    assert result.error.__cause__ is error


async def test_a_cancel_of_the_run_wins_over_what_a_hook_raises_on_its_way_out() -> None:
    entered = asyncio.Event()

    class Stubborn(Middleware):
        async def before_model(self, state: State) -> State | None:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise KeyError("cleanup failed") from None
            return None

    agent, model = make([Reply(text="never")], middleware=[Stubborn()])
    task = asyncio.create_task(agent.run(hello()))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert model.calls == 0


async def test_before_and_after_model_hooks_run_in_onion_order() -> None:
    order: list[str] = []

    def layer(name: str) -> type[Middleware]:
        class Layer(Middleware):
            key = name

            async def before_model(self, state: State) -> State | None:
                order.append(f"before {name}")
                return state.with_metadata(name, len(order))

            async def after_model(self, state: State) -> State | None:
                order.append(f"after {name}")
                return None

        return Layer

    agent, _ = make([Reply(text="ok")], middleware=[layer("a"), layer("b")])
    result = await agent.run(hello())
    assert order == ["before a", "before b", "after b", "after a"]
    assert result.state.metadata == {"a": 1, "b": 2}


async def test_non_streaming_mode_emits_the_message_without_deltas() -> None:
    agent, _ = make([Reply(text="whole")], stream=False)
    sink = CollectingSink()
    result = await agent.run(hello(), sink=sink)
    assert isinstance(result, Done)
    assert not sink.of_type(LLMDeltas)
    assert len(sink.of_type(LLMMessage)) == 1


async def test_debug_events_are_not_built_when_nobody_listens() -> None:
    agent, _ = make(
        [
            Reply(tool_calls=[ToolCall(name="echo", args={"text": "x"})]),
            Fail(error=TimeoutError()),
            Reply(text="ok"),
        ]
    )
    sink = CollectingSink(debug=False)
    await agent.run(hello(), sink=sink)
    assert all(e.channel == "main" for e in sink.events)
    assert sink.states  # state changes are still reported


async def test_tool_call_without_id_gets_one() -> None:
    agent, _ = make(
        [Reply(tool_calls=[ToolCall(name="echo", args={"text": "x"})]), Reply(text="ok")]
    )
    result = await agent.run(hello())
    ai = result.state.messages[1]
    assert isinstance(ai, AIMessage)
    call_id = ai.tool_calls[0]["id"]
    assert call_id
    assert result.state.messages[2].tool_call_id == call_id  # type: ignore[attr-defined]
