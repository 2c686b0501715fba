"""Tests for ``sagents.execution._scripted_model``: a scripted run must look like a provider's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import tool

from sagents._errors import ConfigurationError, ScriptExhausted
from sagents.execution._scripted_model import Fail, Reply, ScriptedChatModel, ToolCall


def _total(chunks: Sequence[BaseMessage]) -> AIMessageChunk:
    """Sum streamed chunks the way langchain consumers aggregate a stream."""
    typed = [chunk for chunk in chunks if isinstance(chunk, AIMessageChunk)]
    assert len(typed) == len(chunks)
    total = typed[0]
    for chunk in typed[1:]:
        total = total + chunk
    return total


async def _collect(model: Any, prompt: Any = "hi") -> list[AIMessageChunk]:
    return [chunk async for chunk in model.astream(prompt)]


TODOS = {"todos": [{"content": "write the report", "status": "pending"}]}


# -- non-streamed calls -----------------------------------------------------------------------


async def test_ainvoke_returns_text_tool_calls_usage_and_metadata() -> None:
    model = ScriptedChatModel(
        script=[
            Reply(
                text="Let me plan.",
                tool_calls=[ToolCall(name="write_todos", args=TODOS, id="call_a")],
                usage={"input_tokens": 10, "output_tokens": 2},
                id="msg-1",
            )
        ]
    )

    message = await model.ainvoke("plan it")

    assert isinstance(message, AIMessage)
    assert message.content == "Let me plan."
    assert message.id == "msg-1"
    assert message.tool_calls == [
        {"name": "write_todos", "args": TODOS, "id": "call_a", "type": "tool_call"}
    ]
    assert message.usage_metadata == {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    assert message.response_metadata["model_name"] == "scripted"
    assert message.response_metadata["finish_reason"] == "tool_calls"


async def test_default_usage_is_a_rough_character_estimate() -> None:
    model = ScriptedChatModel(script=[Reply(text="x" * 10)])

    message = await model.ainvoke([HumanMessage("a" * 20)])

    assert message.usage_metadata == {"input_tokens": 6, "output_tokens": 3, "total_tokens": 9}
    assert message.response_metadata["finish_reason"] == "stop"


async def test_generated_tool_call_ids_are_unique() -> None:
    call = ToolCall(name="ls", args={})
    model = ScriptedChatModel(script=[Reply(tool_calls=[call, call]), Reply(tool_calls=[call])])

    first = await model.ainvoke("a")
    second = await model.ainvoke("b")

    ids = [c["id"] for c in [*first.tool_calls, *second.tool_calls]]
    assert all(isinstance(i, str) and i.startswith("call_") for i in ids)
    assert len(set(ids)) == 3


async def test_returned_args_are_copies_of_the_script() -> None:
    args: dict[str, Any] = {"items": [1, 2]}
    model = ScriptedChatModel(script=[Reply(tool_calls=[ToolCall(name="t", args=args)])] * 2)

    first = await model.ainvoke("a")
    first.tool_calls[0]["args"]["items"].append(3)
    second = await model.ainvoke("b")

    assert second.tool_calls[0]["args"] == {"items": [1, 2]}
    assert args == {"items": [1, 2]}


# -- streaming ---------------------------------------------------------------------------------


async def test_stream_splits_text_by_chunk_size() -> None:
    model = ScriptedChatModel(script=[Reply(text="Hello world", chunk_size=3)])

    chunks = await _collect(model)

    assert [c.content for c in chunks] == ["Hel", "lo ", "wor", "ld", ""]
    assert [c.chunk_position for c in chunks] == [None, None, None, None, "last"]
    assert all(c.usage_metadata is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].response_metadata["finish_reason"] == "stop"


async def test_stream_defaults_to_a_few_words_per_chunk() -> None:
    text = "one two  three four five six seven"
    model = ScriptedChatModel(script=[Reply(text=text)])

    chunks = await _collect(model)

    pieces = [str(c.content) for c in chunks[:-1]]
    assert pieces == ["one two  three ", "four five six ", "seven"]
    assert "".join(pieces) == text


async def test_streamed_sum_equals_the_invoked_message() -> None:
    script = [
        Reply(
            text="Let me plan this for you.",
            tool_calls=[ToolCall(name="write_todos", args=TODOS, id="call_1")],
            chunk_size=4,
        )
    ]
    streamed = _total(await _collect(ScriptedChatModel(script=script)))
    invoked = await ScriptedChatModel(script=script).ainvoke("hi")

    assert streamed.content == invoked.content
    assert streamed.tool_calls == invoked.tool_calls
    assert streamed.invalid_tool_calls == []
    assert streamed.usage_metadata == invoked.usage_metadata
    assert streamed.response_metadata == invoked.response_metadata
    assert streamed.chunk_position == "last"


async def test_tool_call_is_streamed_as_openai_style_chunks() -> None:
    model = ScriptedChatModel(
        script=[Reply(tool_calls=[ToolCall(name="write_todos", args=TODOS, id="call_1")])]
    )

    chunks = await _collect(model)

    tool_chunks = [tc for c in chunks for tc in c.tool_call_chunks]
    assert tool_chunks[0]["name"] == "write_todos"
    assert tool_chunks[0]["id"] == "call_1"
    rest = tool_chunks[1:]
    assert len(rest) >= 2
    assert all(tc["name"] is None and tc["id"] is None for tc in rest)
    assert {tc["index"] for tc in tool_chunks} == {0}
    assert json.loads("".join(tc["args"] or "" for tc in tool_chunks)) == TODOS


async def test_parallel_tool_calls_parse_from_streamed_chunks() -> None:
    calls = [
        ToolCall(name="write_file", args={"file_path": "/a.md", "content": "# A\n" * 10}),
        ToolCall(name="ls", args={"path": "/"}, id="call_ls"),
    ]
    model = ScriptedChatModel(script=[Reply(text="Two things.", tool_calls=calls)])

    total = _total(await _collect(model))

    assert [(c["name"], c["args"]) for c in total.tool_calls] == [
        ("write_file", {"file_path": "/a.md", "content": "# A\n" * 10}),
        ("ls", {"path": "/"}),
    ]
    assert total.tool_calls[1]["id"] == "call_ls"
    assert total.invalid_tool_calls == []
    assert total.response_metadata["finish_reason"] == "tool_calls"


async def test_stream_events_report_every_chunk() -> None:
    model = ScriptedChatModel(
        script=[Reply(text="a b c d e f g", tool_calls=[ToolCall(name="t", args={})])]
    )

    events = [event async for event in model.astream_events("hi", version="v2")]

    streamed = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    (end,) = [e["data"]["output"] for e in events if e["event"] == "on_chat_model_end"]
    assert len(streamed) >= 4
    assert end.content == "a b c d e f g"
    assert [c["name"] for c in end.tool_calls] == ["t"]


def test_sync_invoke_and_stream() -> None:
    model = ScriptedChatModel(
        script=[
            Reply(text="sync"),
            Reply(text="streamed", tool_calls=[ToolCall(name="t", args={})]),
        ]
    )

    assert model.invoke("a").content == "sync"
    total = _total(list(model.stream("b")))
    assert total.content == "streamed"
    assert [c["name"] for c in total.tool_calls] == ["t"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(),
    chunk_size=st.none() | st.integers(min_value=1, max_value=8),
    args=st.dictionaries(st.text(), json_values, max_size=4),
)
def test_any_reply_survives_streaming(
    text: str, chunk_size: int | None, args: dict[str, Any]
) -> None:
    model = ScriptedChatModel(
        script=[Reply(text=text, chunk_size=chunk_size, tool_calls=[ToolCall(name="t", args=args)])]
    )

    total = _total(list(model.stream("x")))

    assert total.content == text
    assert [c["args"] for c in total.tool_calls] == [args]


# -- failures ----------------------------------------------------------------------------------


async def test_fail_raises_the_given_exception() -> None:
    error = TimeoutError("boom")
    model = ScriptedChatModel(script=[Fail(error=error), Fail(error=error), Reply(text="ok")])

    with pytest.raises(TimeoutError, match="boom"):
        await model.ainvoke("a")
    with pytest.raises(TimeoutError, match="boom"):
        await _collect(model)
    assert (await model.ainvoke("c")).content == "ok"


async def test_fail_after_chunks_streams_then_raises() -> None:
    model = ScriptedChatModel(
        script=[Fail(error=ConnectionError("dropped"), text="Hello wor", after_chunks=3)]
    )
    received: list[AIMessageChunk] = []

    async def consume() -> None:
        async for chunk in model.astream("hi"):
            received.append(chunk)

    with pytest.raises(ConnectionError, match="dropped"):
        await consume()

    assert len(received) == 3
    assert "".join(str(c.content) for c in received) == "Hello wor"
    assert all(c.chunk_position is None for c in received)


async def test_exhausted_script_says_how_many_replies_and_the_last_prompt() -> None:
    model = ScriptedChatModel(script=[Reply(text="only one")])
    await model.ainvoke("first")

    with pytest.raises(ScriptExhausted, match=r"1 reply.*call 2.*HumanMessage 'what now\?'"):
        await model.ainvoke("what now?")
    with pytest.raises(ScriptExhausted):
        await _collect(model)
    assert model.calls == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of"),
        ({"script": [Reply()], "responder": lambda m: Reply()}, "exactly one of"),
        ({"script": ["hello"]}, r"script\[0\] must be"),
        ({"responder": "nope"}, "must be callable"),
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ScriptedChatModel(**kwargs)


# Typed Any: these are the mistakes mypy would catch, made by callers without it.
_NOT_A_TOOL_CALL: Any = {"name": "t", "args": {}}
_EXCEPTION_CLASS: Any = TimeoutError


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Reply(chunk_size=0), "chunk_size"),
        (lambda: Reply(delay=-1), "delay"),
        (lambda: Reply(usage={"tokens": 3}), "unknown keys"),
        (lambda: Reply(tool_calls=[_NOT_A_TOOL_CALL]), "ToolCall objects"),
        (lambda: ToolCall(name="t", args={"x": object()}), "JSON-serialisable"),
        (lambda: ToolCall(name="", args={}), "non-empty"),
        (lambda: Fail(error=_EXCEPTION_CLASS), "exception instance"),
        (lambda: Fail(error=TimeoutError(), after_chunks=-1), "after_chunks"),
    ],
)
def test_invalid_entries_are_refused(build: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build()


# -- responders and callable entries -----------------------------------------------------------


async def test_responder_answers_every_call_and_can_be_shared() -> None:
    model = ScriptedChatModel(responder=lambda messages: Reply(text=f"echo: {messages[-1].text}"))

    answers = await asyncio.gather(*(model.ainvoke(f"n{i}") for i in range(20)))

    assert [a.content for a in answers] == [f"echo: n{i}" for i in range(20)]
    assert model.calls == 20
    assert model.remaining is None


async def test_callable_script_entry_sees_the_prompt() -> None:
    def decide(messages: list[BaseMessage]) -> Reply | Fail:
        if "fail" in messages[-1].text:
            return Fail(error=RuntimeError("asked to"))
        return Reply(text="fine")

    model = ScriptedChatModel(script=[decide, decide])

    assert (await model.ainvoke("all good")).content == "fine"
    with pytest.raises(RuntimeError, match="asked to"):
        await model.ainvoke("please fail")


async def test_responder_returning_something_else_is_a_configuration_error() -> None:
    model = ScriptedChatModel(responder=lambda messages: "text")

    with pytest.raises(ConfigurationError, match="must return a Reply or a Fail"):
        await model.ainvoke("hi")


# -- bookkeeping and concurrency ---------------------------------------------------------------


async def test_calls_and_prompts_are_recorded_and_reset_rewinds() -> None:
    model = ScriptedChatModel(script=[Reply(text="one"), Reply(text="two")])

    await model.ainvoke("first")
    await _collect(model, [HumanMessage("second"), AIMessage("x")])

    assert model.calls == 2
    assert model.remaining == 0
    assert [[m.text for m in prompt] for prompt in model.prompts] == [["first"], ["second", "x"]]

    model.reset()
    assert (model.calls, model.prompts, model.remaining) == (0, [], 2)
    assert (await model.ainvoke("again")).content == "one"


async def test_record_prompts_can_be_turned_off() -> None:
    model = ScriptedChatModel(responder=lambda m: Reply(text="x"), record_prompts=False)

    await model.ainvoke("hi")

    assert model.calls == 1
    assert model.prompts == []


@pytest.mark.looptime
async def test_concurrent_callers_each_get_the_entry_recorded_with_their_prompt() -> None:
    model = ScriptedChatModel(script=[Reply(text=str(i), delay=0.001) for i in range(6)])

    inputs = [f"caller {i}" for i in range(6)]
    answers = await asyncio.gather(*(model.ainvoke(text) for text in inputs))

    assert sorted(str(a.content) for a in answers) == [str(i) for i in range(6)]
    for text, answer in zip(inputs, answers, strict=True):
        # The entry a caller got is the one taken when its own prompt was recorded.
        assert model.prompts[int(str(answer.content))][-1].text == text


async def test_bind_tools_accepts_langchain_tools_and_is_ignored_by_the_script() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = ScriptedChatModel(
        script=[Reply(tool_calls=[ToolCall(name="add", args={"a": 1, "b": 2})])] * 2
    )
    bound = model.bind_tools([add], tool_choice="auto")

    invoked = await bound.ainvoke("1 + 2?")
    streamed = _total([chunk async for chunk in bound.astream("1 + 2?")])

    assert invoked.tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert streamed.tool_calls[0]["args"] == {"a": 1, "b": 2}
    kwargs = getattr(bound, "kwargs", {})
    assert kwargs["tools"][0]["function"]["name"] == "add"
    assert kwargs["tool_choice"] == "auto"


# -- time and cancellation (virtual time) ------------------------------------------------------


@pytest.mark.looptime
async def test_delays_run_on_the_event_loop_clock() -> None:
    loop = asyncio.get_running_loop()
    model = ScriptedChatModel(
        script=[Reply(text="Hello world", chunk_size=3, delay=0.05), Reply(text="x", delay=2)]
    )

    start = loop.time()
    chunks = await _collect(model)
    # One delay before each of the four text chunks and the closing chunk.
    assert len(chunks) == 5
    assert loop.time() - start == pytest.approx(0.25)

    start = loop.time()
    await model.ainvoke("hi")
    assert loop.time() - start == pytest.approx(2)


@pytest.mark.looptime
async def test_cancelling_a_consumer_mid_stream_stops_promptly() -> None:
    loop = asyncio.get_running_loop()
    model = ScriptedChatModel(script=[Reply(text="word " * 100, chunk_size=5, delay=10)])
    received: list[AIMessageChunk] = []

    async def consume() -> None:
        async for chunk in model.astream("go"):
            received.append(chunk)

    task = asyncio.create_task(consume())
    await asyncio.sleep(25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(received) == 2
    assert loop.time() == pytest.approx(25)


@pytest.mark.looptime
async def test_slow_failure_raises_after_its_delay() -> None:
    loop = asyncio.get_running_loop()
    model = ScriptedChatModel(
        script=[Fail(error=TimeoutError("late"), text="ab", after_chunks=2, delay=1)]
    )

    with pytest.raises(TimeoutError):
        await _collect(model)
    # Two chunks, then the failure, each one delay apart.
    assert loop.time() == pytest.approx(3)
