"""Tests for sagents/persistence/_files.py: a conversation's files are as durable as its messages.

The ``FilePersistence`` contract runs against every adapter (memory, SQLite, PostgreSQL); the
session tests run a conversation whose agent writes files, shut it down for inactivity, and
start it again (and, on SQLite, a new process on the same database).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Mapping
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, ToolMessage
from sqlalchemy import event

from sagents import (
    Agent,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
)
from sagents._errors import (
    ConversationNotFound,
    FileSystemError,
    PersistenceFailed,
    StateConflict,
)
from sagents.events import AgentShutdown, StatusChanged
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import ConversationFiles, FileStore, FileSystem, MemoryFileStore
from sagents.persistence import (
    FileIndexPersistence,
    FilePersistence,
    MemoryPersistence,
    PersistedFileStore,
)
from sagents.persistence.sql import SqlPersistence, sqlite_url
from sagents.session import FactoryConfig
from tests.persistence.conftest import Store, open_sql

ALICE, BOB = "alice", "bob"


# -- the FilePersistence contract ----------------------------------------------------------------


async def test_every_adapter_is_a_file_persistence(store: Store) -> None:
    assert isinstance(store, FilePersistence)


async def test_saved_files_load_again(store: Store) -> None:
    assert await store.load_files(ALICE, "c1") == {}
    files = {
        "/notes.md": "hello\n",
        "/a/b/c.txt": "ünïcödé ☃ 😀",
        "/crlf.txt": "one\r\ntwo\r\n",
        "/nul.bin.txt": "a\x00b",  # PostgreSQL TEXT cannot hold NUL: stored as bytes
        "/empty": "",
    }
    await store.save_files(ALICE, "c1", files)
    assert await store.load_files(ALICE, "c1") == files
    conversation = await store.get_conversation(ALICE, "c1")
    assert conversation is not None  # saving files creates the conversation, in its scope


async def test_saves_are_deltas(store: Store) -> None:
    await store.save_files(ALICE, "c1", {"/a": "1", "/b": "2", "/c": "3"})
    await store.save_files(ALICE, "c1", {"/a": "one"})
    await store.save_files(ALICE, "c1", {"/b": None, "/d": "4"})
    await store.save_files(ALICE, "c1", {"/missing": None})  # deleting nothing is fine
    await store.save_files(ALICE, "c1", {})
    assert await store.load_files(ALICE, "c1") == {"/a": "one", "/c": "3", "/d": "4"}


async def test_files_of_another_scope_or_conversation_are_invisible(store: Store) -> None:
    await store.save_files(ALICE, "c1", {"/secret": "alice's"})
    await store.save_files(ALICE, "c2", {"/other": "x"})
    assert await store.load_files(BOB, "c1") == {}
    assert await store.load_files(None, "c1") == {}
    assert await store.load_files(ALICE, "c2") == {"/other": "x"}
    with pytest.raises(ConversationNotFound):
        await store.save_files(BOB, "c1", {"/secret": "bob's"})
    assert await store.load_files(ALICE, "c1") == {"/secret": "alice's"}


async def test_every_adapter_lists_and_loads_one_file_at_a_time(store: Store) -> None:
    # What makes a PersistedFileStore over it lazy: names and sizes first, contents on demand.
    assert isinstance(store, FileIndexPersistence)
    assert await store.list_files(ALICE, "c1") == {}
    assert await store.load_file(ALICE, "c1", "/notes.md") is None
    await store.save_files(ALICE, "c1", {"/notes.md": "hello\n", "/a/ü.txt": "☃", "/e": ""})
    listed = await store.list_files(ALICE, "c1")
    assert {path: (info.path, info.size, info.mime_type) for path, info in listed.items()} == {
        "/notes.md": ("/notes.md", 6, "text/markdown"),
        "/a/ü.txt": ("/a/ü.txt", 3, "text/plain"),
        "/e": ("/e", 0, "text/plain"),  # (a name with no extension is taken for text)
    }
    if not isinstance(store, MemoryPersistence):  # (the memory store keeps no file times)
        assert all(info.modified is not None and info.modified > 0 for info in listed.values())
    assert await store.load_file(ALICE, "c1", "/a/ü.txt") == "☃"
    assert await store.load_file(ALICE, "c1", "/e") == ""
    assert await store.load_file(ALICE, "c1", "/missing") is None
    # Another tenant sees nothing of it.
    assert await store.list_files(BOB, "c1") == {}
    assert await store.load_file(BOB, "c1", "/notes.md") is None
    await store.save_files(ALICE, "c1", {"/notes.md": None})
    assert "/notes.md" not in await store.list_files(ALICE, "c1")
    assert await store.load_file(ALICE, "c1", "/notes.md") is None


async def test_a_persisted_file_store_over_an_adapter_loads_lazily(store: Store) -> None:
    await store.save_files(ALICE, "c1", {"/big.md": "x" * 10_000, "/small.md": "y"})
    loaded: list[str] = []
    load_files = store.load_files

    async def counting_load_files(scope: Hashable, conversation_id: str) -> dict[str, str]:
        loaded.append(conversation_id)
        return await load_files(scope, conversation_id)  # type: ignore[arg-type]

    store.load_files = counting_load_files  # type: ignore[method-assign]
    files = await PersistedFileStore.open(store, ALICE, "c1")
    try:
        assert await files.read("/small.md") == "y"
        assert sorted(await files.list("/")) == ["/big.md", "/small.md"]
    finally:
        await files.aclose()
    assert loaded == []  # never a full load


async def test_deleting_a_conversation_deletes_its_files(store: Store) -> None:
    await store.save_files(ALICE, "c1", {"/a": "1"})
    await store.save_files(ALICE, "c2", {"/b": "2"})
    assert await store.delete_conversation(ALICE, "c1")
    assert await store.load_files(ALICE, "c1") == {}
    await store.create_conversation(ALICE, conversation_id="c1")  # a new one, same id
    assert await store.load_files(ALICE, "c1") == {}
    assert await store.load_files(ALICE, "c2") == {"/b": "2"}


@pytest.mark.parametrize(
    "changes",
    [
        {"a.md": "not normalised"},
        {"/a/../b": "escapes"},
        {"/": "the root"},
        {"/a": b"bytes"},
        {"/a": "\ud800"},
    ],
)
async def test_file_changes_are_validated(store: Store, changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        await store.save_files(ALICE, "c1", changes)
    assert await store.get_conversation(ALICE, "c1") is None  # nothing was written


async def test_sql_file_saves_write_only_the_changed_rows(sql_store: SqlPersistence) -> None:
    many = {f"/f{i:03}.md": f"file {i}\n" * 50 for i in range(200)}
    await sql_store.save_files(ALICE, "c1", many)
    written: list[int] = []

    def count(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT") and "files" in statement:
            rows = parameters if isinstance(parameters, list) else [parameters]
            written.append(len(rows))

    engine = sql_store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await sql_store.save_files(ALICE, "c1", {"/f007.md": "changed"})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert written == [1]
    loaded = await sql_store.load_files(ALICE, "c1")
    assert loaded == {**many, "/f007.md": "changed"}


# -- PersistedFileStore ------------------------------------------------------------------------


async def test_a_persisted_store_writes_every_change_through(store: Store) -> None:
    files = await PersistedFileStore.open(store, ALICE, "c1")
    await files.write("notes/a.md", "a")
    await files.write("/b.md", "b")
    assert await store.load_files(ALICE, "c1") == {"/notes/a.md": "a", "/b.md": "b"}
    await files.move("/notes/a.md", "/notes")  # into the directory its own name frees
    await files.delete("/b.md")
    assert await store.load_files(ALICE, "c1") == {"/notes": "a"}
    await files.aclose()
    with pytest.raises(FileSystemError, match="closed"):
        await files.read("/notes")
    again = await PersistedFileStore.open(store, ALICE, "c1")
    assert await again.list() == ["/notes"]
    assert await again.read("/notes") == "a"
    with pytest.raises(FileSystemError, match="/notes is a file"):
        await again.write("/notes/x", "x")  # refused before it reaches the storage
    assert await store.load_files(ALICE, "c1") == {"/notes": "a"}


class Refusing:
    """A FilePersistence whose saves fail while ``down`` is set."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {"/kept.md": "kept"}
        self.down = False

    async def load_files(self, scope: Any, conversation_id: str) -> dict[str, str]:
        return dict(self.files)

    async def save_files(
        self, scope: Any, conversation_id: str, changes: Mapping[str, str | None]
    ) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise PersistenceFailed("the database is down; retry later")
        for path, content in changes.items():
            if content is None:
                self.files.pop(path, None)
            else:
                self.files[path] = content


async def test_a_save_the_storage_refuses_fails_the_call_and_changes_nothing() -> None:
    storage = Refusing()
    files = await PersistedFileStore.open(storage, None, "c1")
    storage.down = True
    with pytest.raises(FileSystemError, match=r"cannot save /new.md .* the database is down"):
        await files.write("/new.md", "x")
    with pytest.raises(FileSystemError, match="cannot save /kept.md"):
        await files.write("/kept.md", "changed")
    with pytest.raises(FileSystemError, match="cannot save /kept.md"):
        await files.move("/kept.md", "/moved.md")
    with pytest.raises(FileSystemError, match="cannot save /kept.md"):
        await files.delete("/kept.md")
    assert await files.list() == ["/kept.md"]
    assert await files.read("/kept.md") == "kept"
    storage.down = False
    await files.write("/new.md", "x")
    assert storage.files == {"/kept.md": "kept", "/new.md": "x"}


async def test_concurrent_changes_reach_the_storage_in_order() -> None:
    storage = Refusing()
    files = await PersistedFileStore.open(storage, None, "c1")
    await asyncio.gather(*(files.write("/a.md", str(i)) for i in range(20)))
    assert storage.files["/a.md"] == await files.read("/a.md") == "19"
    await files.aclose()


async def test_a_persisted_store_writes_under_the_lease_and_reports_a_refusal(
    store: Store,
) -> None:
    # Its process stalled past the lease while another took the conversation over: the write
    # names the old token, fails the call, changes nothing, and is reported (to stop the agent).
    old = await store.acquire_lease(ALICE, "c1", "worker-a", 1e-6)
    refusals: list[StateConflict] = []
    files = await PersistedFileStore.open(
        store, ALICE, "c1", lease_token=lambda: old.token, on_refused=refusals.append
    )
    await files.write("/plan.md", "mine")
    new = await store.acquire_lease(ALICE, "c1", "worker-b", 30.0)
    await store.save_files(ALICE, "c1", {"/plan.md": "the new owner's"}, lease_token=new.token)
    with pytest.raises(FileSystemError, match="cannot save /plan.md .* no longer owns") as failed:
        await files.write("/plan.md", "stale")
    assert isinstance(failed.value.__cause__, StateConflict)
    with pytest.raises(FileSystemError, match="no longer owns"):
        await files.delete("/plan.md")
    assert [r.reason for r in refusals] == ["owned_elsewhere", "owned_elsewhere"]
    assert await files.read("/plan.md") == "mine"  # the index did not change either
    assert await store.load_files(ALICE, "c1") == {"/plan.md": "the new owner's"}


# -- conversations through sessions --------------------------------------------------------------


def _respond(messages: list[BaseMessage]) -> Reply:
    """``write PATH TEXT`` writes a file, ``read PATH`` reads one, then it reports the result."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return Reply(text=f"{last.status}: {last.content}")
    words = str(last.content).split(" ", 2)
    if words[0] == "write":
        return Reply(
            tool_calls=[
                ToolCall(name="write_file", args={"file_path": words[1], "content": words[2]})
            ]
        )
    return Reply(tool_calls=[ToolCall(name="read_file", args={"file_path": words[1]})])


class Factory:
    """One FileSystem instance for every conversation, as a shared factory would hold."""

    def __init__(self, file_system: FileSystem | None = None) -> None:
        self.file_system = file_system or FileSystem()
        self.model = ScriptedChatModel(responder=_respond, record_prompts=False)

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        agent = Agent(
            agent_id=agent_id,
            model=self.model,
            middleware=[self.file_system],
            retry=RetryPolicy(max_attempts=1),
        )
        return agent, SessionOptions()


# Virtual time cannot run beside real database I/O, so the SQL cases run on real time with
# short timeouts (as tests/session does).
@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.looptime), "sqlite", "postgres"])
async def session_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryPersistence()
        return
    async for sql in open_sql(request.param, tmp_path):
        yield sql


def _config(store: Store, factory: Factory, *, inactivity: float | None) -> SessionConfig:
    return SessionConfig(
        factory_router=SingleFactoryRouter(factory),
        agent_persistence=store,
        display_message_persistence=store,
        inactivity_timeout=inactivity,
    )


def _inactivity(store: Store) -> float:
    return 60.0 if isinstance(store, MemoryPersistence) else 0.3


async def _say(session: Session, text: str, *, wait_shutdown: bool = False) -> str:
    """Send ``text``; the agent's answer (optionally after waiting for its inactivity end)."""
    async with session.events as events:
        await session.handle.add_message(text)
        async for item in events:
            if isinstance(item, StatusChanged) and item.status is Status.IDLE:
                break
        answer = str((await session.handle.get_state()).messages[-1].content)
        if wait_shutdown:
            async for item in events:
                if isinstance(item, AgentShutdown):
                    assert item.reason == "inactivity"
                    break
    return answer


async def test_files_survive_an_inactivity_shutdown(session_store: Store) -> None:
    store = session_store
    config = _config(store, Factory(), inactivity=_inactivity(store))
    async with Runtime() as runtime:
        first = await Session.ensure_running(runtime, config, "c1", scope=ALICE)
        assert await _say(first, "write /notes.md the plan", wait_shutdown=True) == (
            "success: Created /notes.md (1 line)."
        )
        assert not Session.is_running(runtime, config, "c1")
        again = await Session.ensure_running(runtime, config, "c1", scope=ALICE)
        assert again.restored
        assert "the plan" in await _say(again, "read /notes.md")
        await Session.stop(runtime, config, "c1")
    assert await store.load_files(ALICE, "c1") == {"/notes.md": "the plan"}


async def test_two_conversations_of_one_factory_never_see_each_others_files(
    session_store: Store,
) -> None:
    store = session_store
    config = _config(store, Factory(), inactivity=None)
    async with Runtime() as runtime:
        a = await Session.ensure_running(runtime, config, "conv-a", scope=ALICE)
        await _say(a, "write /secret.txt alice's secret")
        for conversation_id, scope in [("conv-b", BOB), ("conv-c", ALICE)]:
            other = await Session.ensure_running(runtime, config, conversation_id, scope=scope)
            answer = await _say(other, "read /secret.txt")
            assert answer.startswith("error: ")
            assert "no such file: /secret.txt" in answer
        await Session.stop(runtime, config, "conv-a")
        a = await Session.ensure_running(runtime, config, "conv-a", scope=ALICE)
        assert "alice's secret" in await _say(a, "read /secret.txt")
    assert await store.load_files(BOB, "conv-b") == {}
    assert await store.load_files(ALICE, "conv-c") == {}


async def test_a_new_process_sees_the_files(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "sagents.db")
    async with SqlPersistence(url, create_tables=True) as store, Runtime() as runtime:
        config = _config(store, Factory(), inactivity=None)
        session = await Session.ensure_running(runtime, config, "c1", scope=ALICE)
        await _say(session, "write /kept.md across restarts")
    # A new store object and a new runtime: nothing is shared but the database file.
    async with SqlPersistence(url) as store, Runtime() as runtime:
        config = _config(store, Factory(), inactivity=None)
        session = await Session.ensure_running(runtime, config, "c1", scope=ALICE)
        assert session.restored
        assert "across restarts" in await _say(session, "read /kept.md")


async def test_an_application_store_wins_over_the_persistence() -> None:
    opened: list[Hashable] = []
    stores: dict[Hashable, MemoryFileStore] = {}

    async def app_store(scope: Hashable) -> FileStore:
        opened.append(scope)
        return stores.setdefault(scope, MemoryFileStore())

    store = MemoryPersistence()
    config = _config(store, Factory(), inactivity=None)
    async with Runtime(filesystem_store=app_store) as runtime:
        session = await Session.ensure_running(runtime, config, "c1", scope=ALICE)
        await _say(session, "write /a.md app")
        key = ConversationFiles(scope=ALICE, conversation_id="c1")
        assert opened == [key]
        assert await stores[key].read("/a.md") == "app"
    assert await store.load_files(ALICE, "c1") == {}


async def test_a_middleware_store_wins_over_the_persistence() -> None:
    shared = MemoryFileStore()
    store = MemoryPersistence()
    config = _config(store, Factory(FileSystem(shared)), inactivity=None)
    async with Runtime() as runtime:
        a = await Session.ensure_running(runtime, config, "c1", scope=ALICE)
        await _say(a, "write /shared.md for every conversation")
        b = await Session.ensure_running(runtime, config, "c2", scope=BOB)
        assert "for every conversation" in await _say(b, "read /shared.md")
    assert await store.load_files(ALICE, "c1") == {}
