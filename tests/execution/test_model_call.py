"""One streamed model call: deltas per chunk, one identification per tool call, one merge."""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterator
from functools import reduce
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    message_chunk_to_message,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from sagents import Agent, State
from sagents.events import LLMDeltas, ToolCallIdentified
from sagents.execution import CollectingSink, Reply, ScriptedChatModel, ToolCall
from sagents.execution._model_call import call_model
from sagents.execution._run import Run


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
