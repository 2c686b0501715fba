"""One streamed model call: deltas per chunk, one identification per tool call, one merge.

Also: any ``BaseChatModel`` works with streaming on (the default), including models that cannot
stream, and a model failure of any type is a failed attempt.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator, Iterator
from functools import reduce
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    message_chunk_to_message,
)
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from sagents import Agent, Done, RetryPolicy, State
from sagents.events import LLMDeltas, LLMError, LLMMessage, ToolCallIdentified
from sagents.execution import CollectingSink, Fail, Reply, ScriptedChatModel, ToolCall
from sagents.execution._model_call import call_model
from sagents.execution._run import Run
from tests.execution.conftest import Odd, in_a_loop_of_its_own


def ping(text: str) -> str:
    """Ping."""
    return text


def lookup(key: str) -> str:
    """Look up a key."""
    return key


def chunk(**kwargs: Any) -> AIMessageChunk:
    return AIMessageChunk(content=kwargs.pop("content", ""), **kwargs)


# Two parallel calls whose argument pieces interleave, told apart only by ``index``, as OpenAI
# streams them; text around them, usage on the last chunk, a provider id on the first.
CHUNKS = [
    chunk(content="Let me ", id="run-1"),
    chunk(content="check.", response_metadata={"model_name": "m"}),
    chunk(tool_call_chunks=[tool_call_chunk(name="ping", args="", id="call_a", index=0)]),
    chunk(tool_call_chunks=[tool_call_chunk(name=None, args='{"te', id=None, index=0)]),
    chunk(tool_call_chunks=[tool_call_chunk(name="lookup", args='{"ke', id="call_b", index=1)]),
    chunk(tool_call_chunks=[tool_call_chunk(name=None, args='xt": "hi"}', id=None, index=0)]),
    chunk(tool_call_chunks=[tool_call_chunk(name=None, args='y": "k"}', id=None, index=1)]),
    chunk(
        response_metadata={"finish_reason": "tool_calls"},
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        chunk_position="last",
    ),
]


class ChunkModel(BaseChatModel):
    """Streams :data:`CHUNKS` as they are."""

    @property
    def _llm_type(self) -> str:
        return "chunks"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for c in CHUNKS:
            yield ChatGenerationChunk(message=c.model_copy())

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for c in CHUNKS:
            yield ChatGenerationChunk(message=c.model_copy())


def run_for(model: BaseChatModel, sink: CollectingSink) -> Run:
    agent = Agent(agent_id="a", model=model, tools=[ping, lookup])
    return Run(agent, State().append(HumanMessage("hi")), sink=sink)


def merged_one_by_one(deltas: list[AIMessageChunk]) -> AIMessage:
    message = message_chunk_to_message(reduce(operator.add, deltas))
    assert isinstance(message, AIMessage)
    return message


async def test_interleaved_parallel_calls_merge_as_chunk_by_chunk_addition_would() -> None:
    sink = CollectingSink()
    run = run_for(ChunkModel(), sink)

    message = await call_model(run, run.state.messages)

    deltas = [d for e in sink.of_type(LLMDeltas) for d in e.deltas]  # type: ignore[attr-defined]
    assert len(deltas) == len(CHUNKS)  # one LLMDeltas per chunk, in order
    assert [d.content for d in deltas] == [c.content for c in CHUNKS]
    assert message == merged_one_by_one(deltas)
    assert message.content == "Let me check."
    assert [(c["name"], c["args"], c["id"]) for c in message.tool_calls] == [
        ("ping", {"text": "hi"}, "call_a"),
        ("lookup", {"key": "k"}, "call_b"),
    ]
    assert message.usage_metadata == CHUNKS[-1].usage_metadata
    assert message.response_metadata["finish_reason"] == "tool_calls"
    identified = sink.of_type(ToolCallIdentified)
    assert [(e.tool_call_id, e.name) for e in identified] == [  # type: ignore[attr-defined]
        ("call_a", "ping"),
        ("call_b", "lookup"),
    ]


async def test_a_scripted_streamed_reply_equals_the_chunk_by_chunk_sum() -> None:
    script = [
        Reply(
            text="Two things, " * 5,
            tool_calls=[
                ToolCall(name="ping", args={"text": "x" * 40}, id="call_1"),
                ToolCall(name="lookup", args={"key": "y" * 40}, id="call_2"),
            ],
        )
    ]
    sink = CollectingSink()
    run = run_for(ScriptedChatModel(script=script), sink)

    message = await call_model(run, run.state.messages)

    deltas = [d for e in sink.of_type(LLMDeltas) for d in e.deltas]  # type: ignore[attr-defined]
    assert len(deltas) > 2
    assert message == merged_one_by_one(deltas)
    assert [c["args"] for c in message.tool_calls] == [{"text": "x" * 40}, {"key": "y" * 40}]
    assert len(sink.of_type(ToolCallIdentified)) == 2


async def test_a_single_chunk_is_the_message_itself() -> None:
    sink = CollectingSink()
    run = run_for(ScriptedChatModel(script=[Reply(text="ok")]), sink)
    message = await call_model(run, run.state.messages)
    deltas = [d for e in sink.of_type(LLMDeltas) for d in e.deltas]  # type: ignore[attr-defined]
    assert message == merged_one_by_one(deltas)
    assert message.content == "ok"


# -- models that cannot stream ---------------------------------------------------------------------

# What the models below answer, in turn: text with two tool calls, then a plain answer.
REPLIES = [
    AIMessage(
        content="Let me check both.",
        tool_calls=[
            tool_call(name="ping", args={"text": "hi"}, id="call_a"),
            tool_call(name="lookup", args={"key": "k"}, id="call_b"),
        ],
        usage_metadata={"input_tokens": 5, "output_tokens": 6, "total_tokens": 11},
    ),
    AIMessage(content="Both answered."),
]


class GenerateOnly(BaseChatModel):
    """Implements only ``_generate``, as many integrations do (langchain-core runs it in a
    thread for async calls, and its ``astream`` falls back to one complete message)."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "generate-only"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        reply = REPLIES[self.calls].model_copy()
        self.calls += 1
        return ChatResult(generations=[ChatGeneration(message=reply)])


class AGenerateOnly(BaseChatModel):
    """Implements only ``_agenerate`` (``_generate`` is abstract, so it refuses)."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "agenerate-only"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("async only")

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        reply = REPLIES[self.calls].model_copy()
        self.calls += 1
        return ChatResult(generations=[ChatGeneration(message=reply)])


@pytest.mark.parametrize("model_class", [GenerateOnly, AGenerateOnly])
async def test_a_model_that_does_not_stream_works_with_streaming_on(
    model_class: type[BaseChatModel],
) -> None:
    # It used to fail every turn: "the model returned an empty stream".
    model = model_class()
    agent = Agent(
        agent_id="a", model=model, tools=[ping, lookup], retry=RetryPolicy(max_attempts=1)
    )
    assert agent.stream
    sink = CollectingSink()

    result = await agent.run(State().append(HumanMessage("hi")), sink=sink)

    assert isinstance(result, Done)
    first, last = (e.message for e in sink.of_type(LLMMessage))  # type: ignore[attr-defined]
    assert first.content == "Let me check both."
    assert [(c["name"], c["args"], c["id"]) for c in first.tool_calls] == [
        ("ping", {"text": "hi"}, "call_a"),
        ("lookup", {"key": "k"}, "call_b"),
    ]
    assert first.usage_metadata == REPLIES[0].usage_metadata
    assert last.content == "Both answered."
    assert result.state.messages[-1] == last
    # One delta per reply, carrying all of it; each tool call identified once.
    deltas = [e.deltas for e in sink.of_type(LLMDeltas)]  # type: ignore[attr-defined]
    assert [len(d) for d in deltas] == [1, 1]
    assert [d[0].content for d in deltas] == ["Let me check both.", "Both answered."]
    assert merged_one_by_one(deltas[0]).tool_calls == first.tool_calls
    identified = sink.of_type(ToolCallIdentified)
    assert [(e.tool_call_id, e.name) for e in identified] == [  # type: ignore[attr-defined]
        ("call_a", "ping"),
        ("call_b", "lookup"),
    ]
    results = [m.content for m in result.state.messages if m.type == "tool"]
    assert results == ["hi", "k"]


async def test_a_model_with_streaming_disabled_answers_with_the_complete_message() -> None:
    script = [
        Reply(
            text="Two calls.",
            tool_calls=[
                ToolCall(name="ping", args={"text": "x"}, id="call_1"),
                ToolCall(name="lookup", args={"key": "y"}, id="call_2"),
            ],
        )
    ]
    model = ScriptedChatModel(script=script, disable_streaming=True)
    sink = CollectingSink()
    run = run_for(model, sink)

    message = await call_model(run, run.state.messages)

    assert type(message) is AIMessage
    assert message.content == "Two calls."
    assert [c["id"] for c in message.tool_calls] == ["call_1", "call_2"]
    deltas = [d for e in sink.of_type(LLMDeltas) for d in e.deltas]  # type: ignore[attr-defined]
    assert len(deltas) == 1
    assert merged_one_by_one(deltas).tool_calls == message.tool_calls
    assert len(sink.of_type(ToolCallIdentified)) == 2


@pytest.mark.parametrize("error", [Odd("odd"), asyncio.CancelledError()], ids=type)
@pytest.mark.parametrize("stream", [True, False])
async def test_a_model_raising_a_base_exception_is_a_failed_attempt(
    error: BaseException, stream: bool
) -> None:
    # A CancelledError the model raised by itself is not a cancellation of the run: it used to
    # end the run without a result (as if cancelled); the fallback model now answers.
    primary = ScriptedChatModel(script=[Fail(error=error)])
    fallback = ScriptedChatModel(script=[Reply(text="from fallback")])
    agent = Agent(
        agent_id="a",
        model=primary,
        fallback_models=[fallback],
        retry=RetryPolicy(max_attempts=1),
        stream=stream,
    )
    sink = CollectingSink()

    result = await agent.run(State().append(HumanMessage("hi")), sink=sink)

    assert isinstance(result, Done)
    assert result.state.messages[-1].content == "from fallback"
    errors = sink.of_type(LLMError)
    assert len(errors) == 1
    assert type(error).__name__ in errors[0].error  # type: ignore[attr-defined]


class SyncStreamFails(BaseChatModel):
    """Streams with a sync ``_stream`` (run in a worker thread), which raises after one chunk."""

    error: Any

    @property
    def _llm_type(self) -> str:
        return "sync-stream"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content="par"))
        raise self.error


@pytest.mark.parametrize("error", [SystemExit(5), KeyboardInterrupt(), GeneratorExit()], ids=type)
def test_a_model_raising_system_exit_in_its_thread_is_a_failed_attempt(
    error: BaseException,
) -> None:
    # What a sync model raises in its worker thread is thrown into the awaiting task: SystemExit
    # used to leave the event loop, GeneratorExit to tear down the whole run.
    primary = SyncStreamFails(error=error)
    fallback = ScriptedChatModel(script=[Reply(text="from fallback")])
    agent = Agent(
        agent_id="a", model=primary, fallback_models=[fallback], retry=RetryPolicy(max_attempts=1)
    )
    sink = CollectingSink()

    result = in_a_loop_of_its_own(lambda: agent.run(State().append(HumanMessage("hi")), sink=sink))

    assert isinstance(result, Done)
    assert result.state.messages[-1].content == "from fallback"
    (failed,) = sink.of_type(LLMError)
    assert failed.error.startswith(type(error).__name__)  # type: ignore[attr-defined]
