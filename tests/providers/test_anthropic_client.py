"""sagents driving langchain-anthropic's real ``ChatAnthropic`` over HTTP, against a fake server.

A smaller companion of ``test_openai_client.py``: Anthropic's event stream and its rule that every
``tool_use`` block is answered by a ``tool_result`` block in the very next message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage

from sagents import Agent, Done, Failed, State
from sagents.events import LLMDeltas, LLMMessage, LLMTokenUsage, ToolExecutionCompleted
from sagents.execution import CollectingSink, RetryPolicy
from sagents.middleware._patch_tool_calls import DEFAULT_PATCH_MESSAGE, PatchToolCalls

from .fake_anthropic import FakeAnthropic
from .fake_openai import Completion, FakeToolCall

Model = Callable[..., ChatAnthropic]


@pytest.fixture
async def anthropic_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    # langchain-anthropic builds its own httpx client, which honours proxy variables.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def chat_anthropic(anthropic_server: FakeAnthropic) -> AsyncIterator[Model]:
    built: list[ChatAnthropic] = []

    def build(**overrides: Any) -> ChatAnthropic:
        options: dict[str, Any] = {
            "model": "claude-test",
            "base_url": anthropic_server.base_url,
            "api_key": "test",
            "max_retries": 0,
        }
        options.update(overrides)
        model = ChatAnthropic(**options)
        built.append(model)
        return model

    yield build
    for model in built:  # its cached httpx client would otherwise outlive the event loop
        await model._async_client.close()


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


def agent_on(model: ChatAnthropic, **kwargs: Any) -> Agent:
    return Agent(
        agent_id="anthropic-agent",
        model=model,
        tools=[get_weather],
        retry=RetryPolicy(max_attempts=1),
        **kwargs,
    )


async def test_streamed_text_tool_use_and_usage(
    anthropic_server: FakeAnthropic, chat_anthropic: Model
) -> None:
    call = FakeToolCall(name="get_weather", arguments={"city": "Oslo"}, id="toolu_1")
    anthropic_server.script(
        Completion(text="Let me check.", tool_calls=[call], usage=(30, 12)),
        Completion(text="It is sunny in Oslo.", usage=(50, 8)),
    )
    sink = CollectingSink()

    outcome = await agent_on(chat_anthropic(), base_system_prompt="Be brief.").run(
        State(messages=[HumanMessage("weather in Oslo?")]), sink=sink
    )

    assert isinstance(outcome, Done)
    assert outcome.state.messages[-1].text == "It is sunny in Oslo."
    assert len(sink.of_type(LLMDeltas)) > 4
    first = sink.of_type(LLMMessage)[0].message  # type: ignore[attr-defined]
    assert isinstance(first, AIMessage)
    assert [(c["id"], c["args"]) for c in first.tool_calls] == [("toolu_1", {"city": "Oslo"})]
    [completed] = sink.of_type(ToolExecutionCompleted)
    assert completed.result == "sunny in Oslo"  # type: ignore[attr-defined]
    usage = [e.usage for e in sink.of_type(LLMTokenUsage)]  # type: ignore[attr-defined]
    assert [(u["input_tokens"], u["output_tokens"]) for u in usage] == [(30, 12), (50, 8)]

    second = anthropic_server.requests[1]
    assert second.body["system"] == "Be brief."
    assert [m["role"] for m in second.messages] == ["user", "assistant", "user"]
    [result] = second.messages[2]["content"]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", "toolu_1")


@pytest.mark.parametrize("patched", [False, True], ids=["without_patch", "with_patch"])
async def test_a_dangling_tool_use_is_patched_so_the_request_is_valid(
    anthropic_server: FakeAnthropic, chat_anthropic: Model, patched: bool
) -> None:
    dangling = AIMessage(
        content="",
        tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "toolu_lost"}],
    )
    state = State(messages=[HumanMessage("weather?"), dangling, HumanMessage("hello?")])
    anthropic_server.script(Completion(text="Sorry, where were we?"))
    middleware = [PatchToolCalls()] if patched else []

    outcome = await agent_on(chat_anthropic(), middleware=middleware).run(state)

    request = anthropic_server.requests[-1]
    if not patched:
        assert isinstance(outcome, Failed)
        assert request.status == 400
        assert "toolu_lost" in (request.error or "")
        return
    assert isinstance(outcome, Done)
    assert request.status == 200
    # langchain-anthropic merges the tool result and the next human message into one user turn
    assert [m["role"] for m in request.messages] == ["user", "assistant", "user"]
    result, text = request.messages[2]["content"]
    assert (result["type"], result["tool_use_id"], result["is_error"]) == (
        "tool_result",
        "toolu_lost",
        True,
    )
    assert DEFAULT_PATCH_MESSAGE in json_text(result["content"])
    assert text["text"] == "hello?"


def json_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content)
