"""Tests for ``sagents.middleware._debug_log``: the files are read back and checked."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from sagents import Agent, Done, State, Status
from sagents._errors import InvalidMiddleware
from sagents.execution import Fail, Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import DebugLog
from sagents.middleware._debug_log import safe_file_stem
from sagents.runtime import PendingSubscription, Runtime


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"found {q}"


def agent_with(log: DebugLog, script: list[Any], *, agent_id: str = "dbg", **kw: Any) -> Agent:
    kw.setdefault("retry", RetryPolicy(max_attempts=1))
    return Agent(
        agent_id=agent_id,
        model=ScriptedChatModel(script=script),
        tools=[lookup],
        middleware=[log],
        **kw,
    )


TOOL_THEN_TEXT = [
    Reply(
        text="Looking.",
        tool_calls=[
            ToolCall(name="lookup", args={"q": "a"}, id="c1"),
            ToolCall(name="lookup", args={"q": "b"}, id="c2"),
        ],
    ),
    Reply(text="Both found.", usage={"input_tokens": 12, "output_tokens": 3}),
]


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_run_is_logged_model_call_by_model_call(tmp_path: Path) -> None:
    log = DebugLog(tmp_path, enabled=True)
    result = await agent_with(log, TOOL_THEN_TEXT).run(State(messages=[HumanMessage("find")]))
    assert isinstance(result, Done)

    lines = records(tmp_path / "dbg.jsonl")
    events = [r["event"] for r in lines]
    # The two tools run concurrently: their records may interleave.
    assert events[:2] == ["before_model", "after_model"]
    assert sorted(events[2:6]) == ["tool_end", "tool_end", "tool_start", "tool_start"]
    assert events[6:] == ["before_model", "after_model"]
    assert all(r["agent_id"] == "dbg" and isinstance(r["time"], float) for r in lines)
    first, reply, second, last = lines[0], lines[1], lines[6], lines[7]
    assert first["message_count"] == 1
    assert first["last_message"] == {"type": "human", "text": "find"}
    assert reply["reply"]["text"] == "Looking."
    assert reply["reply"]["tool_calls"] == [
        {"id": "c1", "name": "lookup", "args": '{"q": "a"}'},
        {"id": "c2", "name": "lookup", "args": '{"q": "b"}'},
    ]
    ends = {r["tool_call_id"]: r for r in lines[2:6] if r["event"] == "tool_end"}
    assert ends["c1"]["output"] == "found a"
    assert ends["c2"]["status"] == "success"
    assert second["message_count"] == 4
    assert second["last_message"]["type"] == "tool"
    assert last["reply"]["text"] == "Both found."
    assert last["reply"]["usage"] == {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}


async def test_through_a_server_start_and_messages_are_logged(tmp_path: Path) -> None:
    log = DebugLog(tmp_path, enabled=True)
    async with Runtime() as runtime:
        events = PendingSubscription()
        handle = await runtime.start_agent(
            agent_with(log, [Reply(text="hi")], agent_id="served"),
            State(messages=[HumanMessage("hello")]),
            initial_subscribers=[events],
        )
        await handle.send_to_middleware("debug_log", {"note": "from the app"})
        await handle.execute()
        async for event in events:
            if getattr(event, "status", None) is Status.IDLE:
                break
    lines = records(tmp_path / "served.jsonl")
    assert [r["event"] for r in lines] == [
        "server_start",
        "handle_message",
        "before_model",
        "after_model",
    ]
    assert lines[0]["message_count"] == 1
    assert lines[1]["message"] == {"note": "from the app"}


async def test_model_errors_are_logged_through_the_callbacks(tmp_path: Path) -> None:
    log = DebugLog(tmp_path, enabled=True)
    script = [Fail(error=TimeoutError("slow provider")), Reply(text="ok")]
    agent = agent_with(log, script, retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
    result = await agent.run(State(messages=[HumanMessage("hi")]))
    assert isinstance(result, Done)
    events = [r["event"] for r in records(tmp_path / "dbg.jsonl")]
    assert events == ["before_model", "llm_error", "after_model"]
    error = records(tmp_path / "dbg.jsonl")[1]
    assert error["error"] == "TimeoutError: slow provider"
    assert error["agent_id"] == "dbg"


async def test_tool_runs_reported_to_the_callbacks_are_logged(tmp_path: Path) -> None:
    log = DebugLog(tmp_path, enabled=True)
    [handler] = log.callbacks()
    assert await lookup.ainvoke({"q": "z"}, config={"callbacks": [handler]}) == "found z"
    start, end = records(tmp_path / "unknown.jsonl")  # no agent hook around this call
    assert (start["event"], start["name"]) == ("tool_start", "lookup")
    assert (end["event"], end["output"]) == ("tool_end", "found z")


async def test_disabled_it_is_never_called_and_writes_nothing(tmp_path: Path) -> None:
    log = DebugLog(tmp_path / "logs")
    assert not log.enabled
    agent = agent_with(log, TOOL_THEN_TEXT)
    assert log not in agent.before_model_hooks
    assert log not in agent.after_model_hooks
    assert not any(log.overrides(h) for h in ("on_server_start", "handle_message"))
    assert agent.callbacks == ()
    result = await agent.run(State(messages=[HumanMessage("find")]))
    assert isinstance(result, Done)
    assert not (tmp_path / "logs").exists()


async def test_an_unwritable_folder_is_reported_once_and_logging_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    log = DebugLog(blocker / "logs", enabled=True)
    with caplog.at_level(logging.WARNING, logger="sagents.middleware"):
        result = await agent_with(log, TOOL_THEN_TEXT).run(State(messages=[HumanMessage("x")]))
    assert isinstance(result, Done)
    assert result.state.messages[-1].text == "Both found."
    assert not log.active
    warnings = [r for r in caplog.records if "DebugLog: cannot write" in r.getMessage()]
    assert len(warnings) == 1


async def test_files_are_capped_with_one_backup(tmp_path: Path) -> None:
    log = DebugLog(tmp_path, enabled=True, max_bytes=600)
    script = [Reply(text=f"answer number {i} " + "z" * 100) for i in range(12)]
    agent = agent_with(log, script)
    state = State(messages=[HumanMessage("go")])
    for i in range(12):
        result = await agent.run(state)
        assert isinstance(result, Done)
        state = result.state.append(HumanMessage(f"again {i}"))
    current, backup = tmp_path / "dbg.jsonl", tmp_path / "dbg.jsonl.1"
    assert backup.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dbg.jsonl", "dbg.jsonl.1"]
    for path in (current, backup):
        assert path.stat().st_size <= 600
        assert records(path)  # whole JSON lines only
    assert records(current)[-1]["reply"]["text"].startswith("answer number 11")


async def test_long_texts_are_cut(tmp_path: Path) -> None:
    log = DebugLog(tmp_path, enabled=True, max_text=50)
    agent = agent_with(log, [Reply(text="y" * 500)])
    await agent.run(State(messages=[HumanMessage("x" * 500)]))
    first, reply = records(tmp_path / "dbg.jsonl")
    assert first["last_message"]["text"] == "x" * 50 + "... [450 more characters]"
    assert reply["reply"]["text"].startswith("y" * 50 + "...")


async def test_agent_ids_become_safe_file_names(tmp_path: Path) -> None:
    log = DebugLog(tmp_path / "logs", enabled=True)
    for agent_id in ("../../escape", "a/b", "a_b"):
        await agent_with(log, [Reply(text="ok")], agent_id=agent_id).run(
            State(messages=[HumanMessage("hi")])
        )
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert len(names) == 3
    assert "a_b.jsonl" in names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # nothing escaped
    for name in names:
        [first, *_] = records(tmp_path / "logs" / name)
        assert safe_file_stem(first["agent_id"]) + ".jsonl" == name


@pytest.mark.parametrize(
    ("agent_id", "stem"),
    [("conversation-12", "conversation-12"), ("user@x", None), (".hidden", None), ("", None)],
)
def test_safe_file_stem(agent_id: str, stem: str | None) -> None:
    result = safe_file_stem(agent_id)
    if stem is not None:
        assert result == stem
    else:
        assert result != agent_id
        assert not result.startswith(".")
        assert "/" not in result
        assert "@" not in result


def test_enabled_without_a_folder_is_refused() -> None:
    with pytest.raises(InvalidMiddleware, match="folder"):
        DebugLog(enabled=True)


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidMiddleware, match="max_bytes"):
        DebugLog(tmp_path, enabled=True, max_bytes=0)
