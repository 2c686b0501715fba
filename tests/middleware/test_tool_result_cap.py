"""Large tool results (issue 15): over ``FileSystem(max_tool_result_chars=...)`` a result is
saved to ``/large_tool_results/<tool call id>`` and the model sees its head and a note to page
through it with ``read_file``; when it cannot be saved (or comes from a reading tool) it is
cut, with a note saying how to ask for less."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from sagents import Agent, Done, Runtime, State, Status
from sagents._errors import InvalidMiddleware
from sagents.events import FileChanged, StatusChanged, ToolExecutionCompleted
from sagents.execution import CollectingSink, Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import ConversationFiles, FileSystem, MemoryFileStore, MountedFileStore

BIG = "\n".join(f"row {i:04} " + "x" * 40 for i in range(200))  # 9,999 characters


def report() -> str:
    """Produce a large report."""
    return BIG


def last_tool_message(messages: list[BaseMessage]) -> ToolMessage:
    message = messages[-1]
    assert isinstance(message, ToolMessage)
    return message


def agent_with(fs: FileSystem, *script: Any, tools: list[Any] | None = None) -> Agent:
    return Agent(
        agent_id="cap-agent",
        model=ScriptedChatModel(script=list(script)),
        middleware=[fs],
        tools=[report] if tools is None else tools,
        retry=RetryPolicy(max_attempts=1),
    )


async def test_a_large_result_is_saved_and_the_model_pages_through_it() -> None:
    seen: list[str] = []

    def read_on(messages: list[BaseMessage]) -> Reply:
        seen.append(str(last_tool_message(messages).content))
        path = "/large_tool_results/call_big"
        return Reply(
            tool_calls=[
                ToolCall(name="read_file", args={"file_path": path, "offset": 100, "limit": 2})
            ]
        )

    def finish(messages: list[BaseMessage]) -> Reply:
        seen.append(str(last_tool_message(messages).content))
        return Reply(text="done")

    fs = FileSystem(max_tool_result_chars=1_000)
    agent = agent_with(
        fs, Reply(tool_calls=[ToolCall(name="report", args={}, id="call_big")]), read_on, finish
    )
    sink = CollectingSink()
    result = await agent.run(State(messages=[HumanMessage("report")]), sink=sink)
    assert isinstance(result, Done)
    shown, page = seen
    assert shown.startswith(
        "[This result was 9,999 characters (200 lines), too long to show in full. It was saved "
        "to /large_tool_results/call_big: read it in parts with read_file("
    )
    assert len(shown) < 1_000
    assert shown.splitlines()[1] == "row 0000 " + "x" * 40  # the head follows the note
    assert page.splitlines() == [
        "   101\trow 0100 " + "x" * 40,
        "   102\trow 0101 " + "x" * 40,
        "... (truncated: showing lines 101-102 of 200; call read_file with offset=102 to read on)",
    ]
    # The history keeps the short form; the events keep the full result for UIs.
    [saved] = [m for m in result.state.messages if isinstance(m, ToolMessage)][:1]
    assert saved.content == shown
    [completed] = [
        e for e in sink.events if isinstance(e, ToolExecutionCompleted) and e.name == "report"
    ]
    assert completed.result == BIG
    assert [(e.path, e.change) for e in sink.events if isinstance(e, FileChanged)] == [
        ("/large_tool_results/call_big", "created")
    ]


async def test_results_under_the_limit_and_older_results_are_left_alone() -> None:
    fs = FileSystem(max_tool_result_chars=20_000)
    old = ToolMessage(content="y" * 30_000, tool_call_id="old", name="report")
    state = State(
        messages=[
            HumanMessage("hi"),
            AIMessage("", tool_calls=[{"name": "report", "args": {}, "id": "old"}]),
            old,
            AIMessage("earlier answer"),
            HumanMessage("again"),
        ]
    )
    assert await fs.before_model(state) is None  # no result just arrived
    agent = agent_with(
        fs, Reply(tool_calls=[ToolCall(name="report", args={}, id="c1")]), Reply(text="done")
    )
    result = await agent.run(state)
    assert isinstance(result, Done)
    assert result.state.messages[2] is old  # an older result is history, not this turn's
    assert result.state.messages[-2].content == BIG  # under the limit: whole


async def test_a_reading_tools_large_result_is_cut_not_saved() -> None:
    store = MemoryFileStore()
    await store.write("/big.txt", BIG)
    fs = FileSystem(store, max_tool_result_chars=1_000)
    agent = agent_with(
        fs,
        Reply(tool_calls=[ToolCall(name="read_file", args={"file_path": "/big.txt"})]),
        Reply(text="done"),
    )
    result = await agent.run(State(messages=[HumanMessage("read")]))
    assert isinstance(result, Done)
    content = str(result.state.messages[-2].content)
    assert content.startswith("     1\trow 0000")
    assert content.endswith(
        "[cut: this result was 11,399 characters, over the limit of 1,000; call the tool "
        "again asking for less (a narrower path, pattern or range)]"
    )
    assert await store.list() == ["/big.txt"]  # nothing saved


@pytest.mark.parametrize(
    ("fs", "reason"),
    [
        (
            FileSystem(enabled_tools=["ls", "write_file"], max_tool_result_chars=1_000),
            "the read_file tool is not available to read it in parts",
        ),
        (
            FileSystem(max_file_size=5_000, max_tool_result_chars=1_000),
            "it could not be saved to a file (cannot write /large_tool_results/c1: the content "
            "would be 9999 bytes, over the limit of 5000 bytes; split it into smaller files)",
        ),
        (
            FileSystem(
                MountedFileStore({"/scratch": MemoryFileStore()}), max_tool_result_chars=1_000
            ),
            "it could not be saved to a file (path '/large_tool_results/c1' is not allowed: it "
            "is under no mount; files live under /scratch)",
        ),
    ],
    ids=["no-read-file", "too-large-to-save", "no-mount-for-it"],
)
async def test_a_result_that_cannot_be_saved_is_cut_with_the_reason(
    fs: FileSystem, reason: str
) -> None:
    agent = agent_with(
        fs, Reply(tool_calls=[ToolCall(name="report", args={}, id="c1")]), Reply(text="done")
    )
    result = await agent.run(State(messages=[HumanMessage("report")]))
    assert isinstance(result, Done)
    content = str(result.state.messages[-2].content)
    assert content.startswith(BIG[:1_000])
    assert content.endswith(f"over the limit of 1,000; {reason}]")


async def test_none_keeps_every_result_whole() -> None:
    agent = agent_with(
        FileSystem(max_tool_result_chars=None),
        Reply(tool_calls=[ToolCall(name="report", args={})]),
        Reply(text="done"),
    )
    result = await agent.run(State(messages=[HumanMessage("report")]))
    assert isinstance(result, Done)
    assert result.state.messages[-2].content == BIG


@pytest.mark.parametrize("bad", [0, 99, -1, 1.5, True, "1000"])
def test_the_limit_is_checked(bad: Any) -> None:
    with pytest.raises(InvalidMiddleware, match="max_tool_result_chars"):
        FileSystem(max_tool_result_chars=bad).validate()


async def test_in_a_runtime_the_result_lands_in_the_conversations_files() -> None:
    agent = agent_with(
        FileSystem(max_tool_result_chars=1_000),
        Reply(tool_calls=[ToolCall(name="report", args={}, id="call/odd id")]),
        Reply(text="done"),
    )
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, conversation_id="c9")
        async with handle.subscribe() as events:
            await handle.add_message(HumanMessage("report"))
            async for event in events:
                if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    break
        files = runtime.filesystem(ConversationFiles(conversation_id="c9"))
        # Provider ids may hold any character: the file name keeps only safe ones.
        assert await files.list() == ["/large_tool_results/call_odd_id"]
        assert await files.read("/large_tool_results/call_odd_id") == BIG
