"""Per-file metadata (``FileStore.stat``) on every store, and the ``FileChanged`` events the
FileSystem tools publish (issue 15)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from sagents import Agent, Done, Runtime, State, Status
from sagents._errors import FileSystemError
from sagents._files import guess_mime_type
from sagents.events import FileChanged, StatusChanged, from_json
from sagents.execution import CollectingSink, Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import (
    DiskFileStore,
    FileInfo,
    FileStore,
    FileSystem,
    MemoryFileStore,
    MountedFileStore,
)
from sagents.persistence import MemoryPersistence, PersistedFileStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# -- stat ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "disk", "persisted", "mounted"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStore]:
    made: FileStore
    if request.param == "memory":
        made = MemoryFileStore()
    elif request.param == "disk":
        made = await DiskFileStore.open(tmp_path, debounce=0)
    elif request.param == "persisted":
        made = await PersistedFileStore.open(MemoryPersistence(), None, "c1")
    else:
        made = MountedFileStore({"/": MemoryFileStore(), "/notes": MemoryFileStore()})
    try:
        yield made
    finally:
        await made.aclose()


async def test_stat_gives_size_in_bytes_time_and_mime_type(store: FileStore) -> None:
    await store.write("/notes/plan.md", "# Plan ☃\n")
    info = await store.stat("notes/plan.md")
    assert isinstance(info, FileInfo)
    assert info.path == "/notes/plan.md"
    assert info.size == len("# Plan ☃\n".encode())  # bytes, not characters
    assert info.mime_type == "text/markdown"
    assert isinstance(info.modified, float)
    await store.move("/notes/plan.md", "/notes/plan.json")
    moved = await store.stat("/notes/plan.json")
    assert (moved.size, moved.mime_type) == (info.size, "application/json")


async def test_stat_refuses_what_is_not_a_file(store: FileStore) -> None:
    await store.write("/notes/plan.md", "x")
    with pytest.raises(FileSystemError, match="no such file"):
        await store.stat("/missing.md")
    with pytest.raises(FileSystemError, match="directory"):
        await store.stat("/notes")


async def test_modified_follows_the_clock_and_a_move_keeps_it() -> None:
    clock = Clock()
    store = MemoryFileStore(clock=clock)
    await store.write("/a.txt", "one")
    assert (await store.stat("/a.txt")).modified == 1_000.0
    clock.now = 2_000.0
    await store.write("/a.txt", "two!")
    info = await store.stat("/a.txt")
    assert (info.modified, info.size) == (2_000.0, 4)
    clock.now = 3_000.0
    await store.move("/a.txt", "/b.txt")
    assert (await store.stat("/b.txt")).modified == 2_000.0  # as `mv` does


async def test_a_disk_store_reports_the_files_mtime_after_reopening(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("from before")
    os.utime(tmp_path / "old.txt", (1_234_567.0, 1_234_567.0))
    async with await DiskFileStore.open(tmp_path) as store:
        info = await store.stat("/old.txt")
    assert (info.modified, info.size, info.mime_type) == (1_234_567.0, 11, "text/plain")


async def test_a_persisted_store_does_not_invent_a_time_it_does_not_know() -> None:
    persistence = MemoryPersistence()
    await persistence.save_files(None, "c1", {"/kept.md": "kept"})
    store = await PersistedFileStore.open(persistence, None, "c1")
    assert (await store.stat("/kept.md")).modified is None
    await store.write("/kept.md", "changed")
    assert (await store.stat("/kept.md")).modified is not None


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("/a.py", "text/x-python"),
        ("/a.yaml", "application/yaml"),
        ("/a.TOML", "application/toml"),
        ("/a.csv", "text/csv"),
        ("/Makefile", "text/plain"),
        ("/.env", "text/plain"),
        ("/archive.tar.gz", "application/x-tar"),
    ],
)
def test_mime_types_are_guessed_from_the_name(name: str, mime: str) -> None:
    assert guess_mime_type(name) == mime


# -- FileChanged ---------------------------------------------------------------------------


def agent_making(*calls: ToolCall, file_system: FileSystem | None = None) -> Agent:
    return Agent(
        agent_id="files-agent",
        model=ScriptedChatModel(
            script=[*(Reply(tool_calls=[call]) for call in calls), Reply(text="done")]
        ),
        middleware=[file_system or FileSystem()],
        retry=RetryPolicy(max_attempts=1),
    )


CHANGES = [
    ToolCall(name="write_file", args={"file_path": "/a.md", "content": "one\ntwo\n"}),
    ToolCall(name="write_file", args={"file_path": "/a.md", "content": "one\nthree\n"}),
    ToolCall(name="edit_file", args={"file_path": "/a.md", "old_string": "one", "new_string": "1"}),
    ToolCall(
        name="edit_lines",
        args={"file_path": "/a.md", "start_line": 2, "end_line": 2, "content": "3"},
    ),
    ToolCall(name="move_file", args={"source_path": "/a.md", "destination_path": "/b/a.md"}),
    ToolCall(name="read_file", args={"file_path": "/b/a.md"}),
    ToolCall(name="delete_file", args={"file_path": "/b/a.md"}),
    ToolCall(name="delete_file", args={"file_path": "/b/a.md"}),  # fails: no event
]


async def test_every_change_a_tool_makes_is_one_file_changed_event() -> None:
    sink = CollectingSink()
    result = await agent_making(*CHANGES).run(State(), sink=sink)
    assert isinstance(result, Done)
    events = [e for e in sink.events if isinstance(e, FileChanged)]
    changes = [(e.path, e.change, e.previous_path) for e in events]
    assert changes == [
        ("/a.md", "created", None),
        ("/a.md", "modified", None),
        ("/a.md", "modified", None),
        ("/a.md", "modified", None),
        ("/b/a.md", "moved", "/a.md"),
        ("/b/a.md", "deleted", None),
    ]
    assert all(e.agent_id == "files-agent" for e in events)


async def test_file_changed_reaches_main_subscribers_with_a_stable_json_form() -> None:
    agent = agent_making(CHANGES[0])
    async with Runtime() as runtime:
        handle = await runtime.start_agent(agent, conversation_id="c1")
        seen = []
        async with handle.subscribe() as events:
            await handle.add_message(HumanMessage("write it"))  # starts a run
            async for event in events:
                seen.append(event)
                if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    break
    [changed] = [e for e in seen if isinstance(e, FileChanged)]
    data = changed.to_json()
    assert data == {
        "type": "file_changed",
        "agent_id": "files-agent",
        "seq": changed.seq,
        "path": "/a.md",
        "change": "created",
        "previous_path": None,
    }
    assert changed.seq > 0
    assert from_json(json.loads(json.dumps(data))) == changed
    assert FileChanged.channel == "main"


async def test_tools_called_outside_an_agent_change_files_without_events() -> None:
    store = MemoryFileStore()
    tools = {tool.name: tool for tool in FileSystem(store).tools()}
    await tools["write_file"].ainvoke({"file_path": "/x.md", "content": "x"})
    assert await store.read("/x.md") == "x"
