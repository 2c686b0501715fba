"""sagents driving langchain-openai's real ``ChatOpenAI`` over real HTTP, against a fake server.

Nothing here is mocked inside the client: requests go through ``openai``'s async client and
``httpx`` to :class:`~tests.providers.fake_openai.FakeOpenAI` on loopback, which streams SSE
chunks shaped like the real API's and rejects histories the real API rejects. So these tests show
what a real provider does with what sagents sends: streaming, usage, parallel tool calls, rate
limits, server errors, and the dangling tool calls that PatchToolCalls repairs (X27).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from sagents import Agent, Done, Failed, ModelCallFailed, State, Status
from sagents.events import (
    ChainError,
    LLMDeltas,
    LLMError,
    LLMMessage,
    LLMTokenUsage,
    MiddlewareAction,
    StatusChanged,
    ToolCallIdentified,
    ToolExecutionCompleted,
    ToolExecutionStarted,
)
from sagents.execution import CollectingSink, RetryPolicy
from sagents.middleware._patch_tool_calls import DEFAULT_PATCH_MESSAGE, PatchToolCalls
from sagents.runtime import Runtime
from tests.runtime.conftest import until_status

from .fake_openai import Completion, ErrorResponse, FakeOpenAI, FakeToolCall

Model = Callable[..., ChatOpenAI]

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=False)


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def get_time(zone: str) -> str:
    """The current time in a time zone."""
    return f"12:00 in {zone}"


def agent_on(model: ChatOpenAI, **kwargs: Any) -> Agent:
    kwargs.setdefault("tools", [get_weather, get_time])
    kwargs.setdefault("retry", FAST_RETRY)
    return Agent(agent_id="openai-agent", model=model, **kwargs)


def hello(text: str = "hello") -> State:
    return State(messages=[HumanMessage(text)])


# -- Agent.run -------------------------------------------------------------------------------


async def test_streamed_text_reaches_deltas_the_final_message_and_token_usage(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    text = "The weather is lovely today, enjoy it."
    openai_server.script(Completion(text=text, usage=(42, 9), chunk_size=5))
    agent = agent_on(chat_openai(), base_system_prompt="You are terse.")
    sink = CollectingSink()

    outcome = await agent.run(hello(), sink=sink)

    assert isinstance(outcome, Done)
    deltas = [d for e in sink.of_type(LLMDeltas) for d in e.deltas]  # type: ignore[attr-defined]
    assert len([d for d in deltas if d.content]) == 8  # one per 5-character SSE chunk
    assert "".join(str(d.content) for d in deltas) == text
    [message] = sink.of_type(LLMMessage)
    assert isinstance(message, LLMMessage)
    assert message.message.content == text
    assert outcome.state.messages[-1].content == text
    [usage] = sink.of_type(LLMTokenUsage)
    assert isinstance(usage, LLMTokenUsage)
    assert (usage.usage["input_tokens"], usage.usage["output_tokens"]) == (42, 9)
    assert usage.usage["total_tokens"] == 51

    [request] = openai_server.requests
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.roles == ["system", "user"]
    assert request.messages[0]["content"] == "You are terse."
    assert request.headers["authorization"] == "Bearer test"
    assert sorted(t["function"]["name"] for t in request.body["tools"]) == [
        "get_time",
        "get_weather",
    ]


async def test_a_non_streamed_call_gives_the_same_message(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    openai_server.script(Completion(text="plain answer", usage=(3, 2)))
    sink = CollectingSink()
    outcome = await agent_on(chat_openai(), stream=False).run(hello(), sink=sink)
    assert isinstance(outcome, Done)
    assert outcome.state.messages[-1].content == "plain answer"
    assert sink.of_type(LLMDeltas) == []
    [usage] = sink.of_type(LLMTokenUsage)
    assert usage.usage["total_tokens"] == 5  # type: ignore[attr-defined]
    assert not openai_server.requests[0].body.get("stream")


async def test_parallel_tool_calls_both_run_and_the_next_request_carries_both_results(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    weather = FakeToolCall(name="get_weather", arguments={"city": "Lisbon, Portugal"})
    clock = FakeToolCall(name="get_time", arguments={"zone": "Europe/Lisbon"})
    openai_server.script(
        Completion(tool_calls=[weather, clock], args_piece=4),
        Completion(text="Sunny and noon."),
    )
    sink = CollectingSink()

    outcome = await agent_on(chat_openai()).run(hello("weather and time?"), sink=sink)

    assert isinstance(outcome, Done)
    identified = sink.of_type(ToolCallIdentified)
    assert [(e.tool_call_id, e.name) for e in identified] == [  # type: ignore[attr-defined]
        (weather.id, "get_weather"),
        (clock.id, "get_time"),
    ]
    started = sink.of_type(ToolExecutionStarted)
    assert {e.tool_call_id: e.arguments for e in started} == {  # type: ignore[attr-defined]
        weather.id: {"city": "Lisbon, Portugal"},
        clock.id: {"zone": "Europe/Lisbon"},
    }
    completed = sink.of_type(ToolExecutionCompleted)
    assert {e.tool_call_id: e.result for e in completed} == {  # type: ignore[attr-defined]
        weather.id: "sunny in Lisbon, Portugal",
        clock.id: "12:00 in Europe/Lisbon",
    }

    first, second = openai_server.requests
    assert first.status == second.status == 200
    assert second.roles == ["user", "assistant", "tool", "tool"]
    assistant = second.messages[1]
    assert [c["id"] for c in assistant["tool_calls"]] == [weather.id, clock.id]
    assert assistant["tool_calls"][0]["function"]["arguments"] == weather.arguments_json
    results = {m["tool_call_id"]: m["content"] for m in second.messages[2:]}
    assert results == {weather.id: "sunny in Lisbon, Portugal", clock.id: "12:00 in Europe/Lisbon"}
    assert outcome.state.messages[-1].content == "Sunny and noon."


async def test_a_429_then_success_is_retried_by_the_sagents_retry_policy(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    openai_server.script(
        ErrorResponse(
            status=429,
            message="Rate limit reached for gpt-test",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": "0"},
        ),
        Completion(text="made it"),
    )
    sink = CollectingSink(debug=True)

    outcome = await agent_on(chat_openai()).run(hello(), sink=sink)

    assert isinstance(outcome, Done)
    assert outcome.state.messages[-1].content == "made it"
    # the client has max_retries=0, so the second request is sagents' retry
    assert [r.status for r in openai_server.requests] == [429, 200]
    [failed] = sink.of_type(LLMError)
    assert isinstance(failed, LLMError)
    assert failed.attempt == 1
    assert "RateLimitError" in failed.error
    assert "429" in failed.error


async def test_client_retries_multiply_with_sagents_retries(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    # Why the docs say max_retries=0: a client that retries on its own turns every sagents
    # attempt into several requests (here 3 attempts x (1 + 2 client retries)).
    openai_server.responder = lambda body: ErrorResponse(
        status=500, headers={"retry-after-ms": "1"}
    )
    outcome = await agent_on(chat_openai(max_retries=2)).run(hello())
    assert isinstance(outcome, Failed)
    assert len(openai_server.requests) == 9


async def test_a_500_every_time_fails_the_run_with_the_state_intact(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    openai_server.responder = lambda body: ErrorResponse(status=500)
    sink = CollectingSink(debug=True)
    state = hello()

    outcome = await agent_on(chat_openai()).run(state, sink=sink)

    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, ModelCallFailed)
    assert isinstance(outcome.error.__cause__, openai.InternalServerError)
    assert "Error code: 500" in str(outcome.error)
    assert outcome.state.messages == state.messages
    assert [e.attempt for e in sink.of_type(LLMError)] == [1, 2, 3]  # type: ignore[attr-defined]
    assert len(sink.of_type(ChainError)) == 1
    assert len(openai_server.requests) == 3


async def test_a_400_is_not_retried(openai_server: FakeOpenAI, chat_openai: Model) -> None:
    # A request the API rejects will be rejected again: retrying it only wastes time.
    broken = State(messages=[HumanMessage("hi"), ToolMessage("orphan", tool_call_id="nope")])
    outcome = await agent_on(chat_openai()).run(broken)
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error.__cause__, openai.BadRequestError)
    assert [r.status for r in openai_server.requests] == [400]


# -- through an agent server -----------------------------------------------------------------


async def test_a_server_agent_streams_uses_tools_and_reports_usage(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    call = FakeToolCall(name="get_weather", arguments={"city": "Porto"})
    openai_server.script(
        Completion(tool_calls=[call], usage=(20, 4)),
        Completion(text="It is sunny in Porto.", usage=(30, 6)),
    )
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent_on(chat_openai()), State())
        async with handle.subscribe() as events:
            await handle.add_message("weather in Porto?")
            seen = await until_status(events, Status.IDLE, Status.ERROR)

    assert [e.status for e in seen if isinstance(e, StatusChanged)] == [Status.RUNNING, Status.IDLE]
    text = "".join(
        str(d.content) for e in seen if isinstance(e, LLMDeltas) for d in e.deltas if d.content
    )
    assert text == "It is sunny in Porto."
    messages = [e.message for e in seen if isinstance(e, LLMMessage)]
    assert [bool(m.tool_calls) for m in messages] == [True, False]
    assert [e.usage["total_tokens"] for e in seen if isinstance(e, LLMTokenUsage)] == [24, 36]
    assert [e.result for e in seen if isinstance(e, ToolExecutionCompleted)] == ["sunny in Porto"]
    assert openai_server.requests[1].roles == ["user", "assistant", "tool"]


async def test_a_server_agent_retries_a_429_and_reports_the_failed_attempt_on_debug(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    openai_server.script(ErrorResponse(status=429, type="requests"), Completion(text="ok"))
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent_on(chat_openai()), State())
        async with handle.subscribe() as events, handle.subscribe("debug") as debug:
            await handle.add_message("hi")
            await until_status(events, Status.IDLE, Status.ERROR)
            assert await handle.get_status() is Status.IDLE
            errors = []
            while not errors:
                event = await asyncio.wait_for(anext(debug), 5)
                if isinstance(event, LLMError):
                    errors.append(event)
    assert errors[0].attempt == 1
    assert "RateLimitError" in errors[0].error
    assert [r.status for r in openai_server.requests] == [429, 200]


async def test_a_server_agent_whose_provider_keeps_failing_errors_and_stays_usable(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    openai_server.script(*[ErrorResponse(status=500)] * 3, Completion(text="back again"))
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent_on(chat_openai()), State())
        async with handle.subscribe() as events:
            await handle.add_message("hi")
            seen = await until_status(events, Status.IDLE, Status.ERROR)
            assert isinstance(seen[-1], StatusChanged)
            assert seen[-1].status is Status.ERROR
            assert "Error code: 500" in str(seen[-1].data)
            [chain_error] = [e for e in seen if isinstance(e, ChainError)]
            assert "3 attempt(s)" in chain_error.error

            await handle.add_message("still there?")
            seen = await until_status(events, Status.IDLE, Status.ERROR)
            assert isinstance(seen[-1], StatusChanged)
            assert seen[-1].status is Status.IDLE
        state = await handle.get_state()
    assert [m.content for m in state.messages] == ["hi", "still there?", "back again"]
    assert openai_server.requests[-1].roles == ["user", "user"]


# -- dangling tool calls (PatchToolCalls, X27) -----------------------------------------------


async def crash_snapshot(openai_server: FakeOpenAI, chat_openai: Model) -> dict[str, Any]:
    """The state an agent had saved when its process died while a tool was running: the model's
    tool-calling message is in the history, its result never arrived."""
    release = asyncio.Event()

    async def slow_search(query: str) -> str:
        """Search the web."""
        await release.wait()
        return "never"

    call = FakeToolCall(name="slow_search", arguments={"query": "sagents"}, id="call_crash")
    openai_server.script(Completion(tool_calls=[call]))
    agent = agent_on(chat_openai(), tools=[slow_search])
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, State())
        async with handle.subscribe() as events:
            await handle.add_message("search for sagents")
            async for event in events:
                if isinstance(event, ToolExecutionStarted):
                    break
        return await handle.export_state()  # what an auto-save would have written


@pytest.mark.parametrize("patched", [False, True], ids=["without_patch", "with_patch"])
async def test_a_dangling_tool_call_after_a_crash_is_patched_so_the_request_is_valid(
    openai_server: FakeOpenAI, chat_openai: Model, patched: bool
) -> None:
    snapshot = await crash_snapshot(openai_server, chat_openai)
    restored = State.from_dict(snapshot)
    assert isinstance(restored.messages[-1], AIMessage)
    assert restored.pending_tool_calls()  # the crash left the call unanswered

    openai_server.script(Completion(text="Sorry, the search was interrupted."))
    middleware = [PatchToolCalls()] if patched else []
    agent = agent_on(chat_openai(), tools=[get_weather], middleware=middleware)
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, snapshot)
        async with handle.subscribe() as events, handle.subscribe("debug") as debug:
            await handle.add_message("hello? are you still there?")
            seen = await until_status(events, Status.IDLE, Status.ERROR)
            final = seen[-1]
            assert isinstance(final, StatusChanged)
            if not patched:
                # The provider refuses the history: a dangling call is an invalid request.
                assert final.status is Status.ERROR
                assert "Error code: 400" in str(final.data)
                request = openai_server.requests[-1]
                assert request.status == 400
                assert "call_crash" in (request.error or "")
                assert request.roles == ["user", "assistant", "user"]
                return
            assert final.status is Status.IDLE
            action = await asyncio.wait_for(anext_of(debug, MiddlewareAction), 5)
        state = await handle.get_state()

    request = openai_server.requests[-1]
    assert request.status == 200
    assert request.roles == ["user", "assistant", "tool", "user"]
    assert request.messages[2]["tool_call_id"] == "call_crash"
    assert request.messages[2]["content"] == DEFAULT_PATCH_MESSAGE
    assert action.data == {"patched": [{"tool_call_id": "call_crash", "name": "slow_search"}]}
    assert [type(m).__name__ for m in state.messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "HumanMessage",
        "AIMessage",
    ]
    assert state.messages[-1].content == "Sorry, the search was interrupted."


async def anext_of(events: Any, event_type: type[Any]) -> Any:
    async for event in events:
        if isinstance(event, event_type):
            return event
    raise AssertionError(f"no {event_type.__name__}")


async def test_a_cancelled_run_leaves_a_history_the_provider_accepts(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    # The agent server settles a cancel itself (L5); PatchToolCalls is for what it cannot see.
    started = asyncio.Event()

    async def slow_search(query: str) -> str:
        """Search the web."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    call = FakeToolCall(name="slow_search", arguments={"query": "x"}, id="call_cancel")
    openai_server.script(Completion(tool_calls=[call]), Completion(text="ok, stopped"))
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent_on(chat_openai(), tools=[slow_search]), State())
        async with handle.subscribe() as events:
            await handle.add_message("search")
            await asyncio.wait_for(started.wait(), 5)
            await handle.cancel()
            await until_status(events, Status.CANCELLED)
            await handle.add_message("never mind")
            seen = await until_status(events, Status.IDLE, Status.ERROR)
    assert isinstance(seen[-1], StatusChanged)
    assert seen[-1].status is Status.IDLE
    request = openai_server.requests[-1]
    assert request.status == 200
    assert request.roles == ["user", "assistant", "tool", "user"]


async def test_a_stored_tool_call_with_broken_json_is_answered_by_the_patch(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    # A history stored before the loop answered malformed calls (or by another program) can
    # hold a call in ``invalid_tool_calls`` with no result; ChatOpenAI sends it back.
    openai_server.script(Completion(text="recovered"))
    dangling = AIMessage(
        content="",
        invalid_tool_calls=[
            {
                "type": "invalid_tool_call",
                "name": "get_weather",
                "args": '{"city": Porto}',
                "id": "call_broken",
                "error": "bad JSON",
            }
        ],
    )
    state = State(messages=[HumanMessage("weather?"), dangling, HumanMessage("and?")])
    agent = agent_on(chat_openai(), middleware=[PatchToolCalls()])

    outcome = await agent.run(state)

    assert isinstance(outcome, Done)
    request = openai_server.requests[-1]
    assert request.status == 200
    assert request.roles == ["user", "assistant", "tool", "user"]
    assert request.messages[2]["tool_call_id"] == "call_broken"


async def test_a_tool_call_with_broken_json_gets_an_error_result_and_the_model_retries(
    openai_server: FakeOpenAI, chat_openai: Model
) -> None:
    broken = FakeToolCall(name="get_weather", arguments='{"city": Porto}', id="call_broken")
    fixed = FakeToolCall(name="get_weather", arguments={"city": "Porto"}, id="call_fixed")
    openai_server.script(
        Completion(tool_calls=[broken]),
        Completion(tool_calls=[fixed]),
        Completion(text="Sunny in Porto."),
    )
    outcome = await agent_on(chat_openai()).run(hello("weather?"))
    assert isinstance(outcome, Done)
    assert outcome.state.messages[-1].content == "Sunny in Porto."
    assert openai_server.requests[1].roles == ["user", "assistant", "tool"]
    told = openai_server.requests[1].messages[2]
    assert told["tool_call_id"] == "call_broken"
    assert "invalid arguments for tool 'get_weather'" in str(told["content"])
