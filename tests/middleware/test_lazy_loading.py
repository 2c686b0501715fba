"""Lazy loading of large stores (issue 15): ``DiskFileStore.open(lazy=True)`` and a
``PersistedFileStore`` over a ``FileIndexPersistence`` load names, sizes and times when they
open and each file's content on its first read."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage

from sagents import Agent, ConfigurationError, Runtime, State, Status
from sagents._errors import FileSystemError
from sagents.events import StatusChanged
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import ConversationFiles, DiskFileStore, FileInfo, FileSystem
from sagents.persistence import (
    FileIndexPersistence,
    FilePersistence,
    MemoryPersistence,
    PersistedFileStore,
)

# -- DiskFileStore -------------------------------------------------------------------------


def make_tree(base: Path) -> None:
    (base / "docs").mkdir(parents=True)
    (base / "docs" / "a.md").write_text("alpha")
    (base / "docs" / "b.md").write_text("beta")
    (base / "top.txt").write_text("top")


async def test_a_lazy_disk_store_reads_contents_only_when_asked(tmp_path: Path) -> None:
    make_tree(tmp_path)
    store = await DiskFileStore.open(tmp_path, lazy=True, debounce=0)
    # Changed on disk after opening: a lazy store has not read it yet, so it sees the change.
    (tmp_path / "docs" / "a.md").write_text("alpha, changed")
    assert await store.list() == ["/docs/a.md", "/docs/b.md", "/top.txt"]
    assert await store.exists("/docs/b.md")
    info = await store.stat("/docs/a.md")
    assert (info.size, info.mime_type) == (5, "text/markdown")  # the size known at open
    assert await store.read("/docs/a.md") == "alpha, changed"
    assert (await store.stat("/docs/a.md")).size == 14  # corrected by the read
    # Once read, the content is kept: a later change on disk is not seen.
    (tmp_path / "docs" / "a.md").write_text("changed again")
    assert await store.read("/docs/a.md") == "alpha, changed"
    await store.aclose()


async def test_an_eager_disk_store_reads_everything_at_open(tmp_path: Path) -> None:
    make_tree(tmp_path)
    store = await DiskFileStore.open(tmp_path, debounce=0)
    (tmp_path / "docs" / "a.md").write_text("changed after open")
    assert await store.read("/docs/a.md") == "alpha"
    await store.aclose()


async def test_a_lazy_store_refuses_a_binary_file_when_it_is_read(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "image.bin").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(FileSystemError, match="not UTF-8 text"):
        await DiskFileStore.open(tmp_path)
    store = await DiskFileStore.open(tmp_path, lazy=True)
    assert await store.read("/top.txt") == "top"
    with pytest.raises(FileSystemError, match="image.bin: it is not UTF-8 text"):
        await store.read("/image.bin")
    await store.aclose()


@pytest.mark.parametrize("debounce", [0, 0.5])
async def test_changes_to_files_never_read_reach_the_disk(tmp_path: Path, debounce: float) -> None:
    make_tree(tmp_path)
    store = await DiskFileStore.open(tmp_path, lazy=True, debounce=debounce)
    await store.move("/docs/a.md", "/archive/a.md")  # never read: its content is fetched first
    await store.delete("/docs/b.md")
    await store.write("/top.txt", "rewritten")
    await store.aclose()
    assert not (tmp_path / "docs").exists()
    assert (tmp_path / "archive" / "a.md").read_text() == "alpha"
    assert (tmp_path / "top.txt").read_text() == "rewritten"
    reopened = await DiskFileStore.open(tmp_path, lazy=True)
    assert await reopened.list() == ["/archive/a.md", "/top.txt"]
    await reopened.aclose()


async def test_a_refused_delete_of_a_file_never_read_leaves_it_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path)
    store = await DiskFileStore.open(tmp_path, lazy=True, debounce=0)

    def refuse(target: str) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(store, "_remove_file", refuse)
    with pytest.raises(FileSystemError, match="cannot save /docs/a.md"):
        await store.delete("/docs/a.md")
    assert await store.read("/docs/a.md") == "alpha"  # put back as it was: known by name
    monkeypatch.undo()
    await store.aclose()


# -- PersistedFileStore --------------------------------------------------------------------


class IndexedPersistence:
    """A FilePersistence that can also list files and load one: a lazy store's backing."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = dict(files)
        self.loaded: list[str] = []
        self.full_loads = 0

    async def load_files(self, scope: Any, conversation_id: str) -> dict[str, str]:
        self.full_loads += 1
        return dict(self.files)

    async def save_files(
        self, scope: Any, conversation_id: str, changes: Mapping[str, str | None]
    ) -> None:
        for path, content in changes.items():
            if content is None:
                self.files.pop(path, None)
            else:
                self.files[path] = content

    async def list_files(self, scope: Any, conversation_id: str) -> dict[str, FileInfo]:
        return {
            path: FileInfo(
                path=path, size=len(content.encode()), modified=100.0, mime_type="text/plain"
            )
            for path, content in self.files.items()
        }

    async def load_file(self, scope: Any, conversation_id: str, path: str) -> str | None:
        self.loaded.append(path)
        return self.files.get(path)


async def test_a_persisted_store_over_an_index_loads_each_file_on_first_read() -> None:
    storage = IndexedPersistence({"/a.md": "a", "/big/b.md": "b" * 1_000})
    assert isinstance(storage, FileIndexPersistence)
    store = await PersistedFileStore.open(storage, None, "c1")
    assert storage.full_loads == 0
    assert await store.list() == ["/a.md", "/big/b.md"]
    info = await store.stat("/big/b.md")
    assert (info.size, info.modified) == (1_000, 100.0)
    assert storage.loaded == []
    assert await store.read("/big/b.md") == "b" * 1_000
    assert await store.read("/big/b.md") == "b" * 1_000
    assert storage.loaded == ["/big/b.md"]
    await store.move("/a.md", "/moved.md")  # a file never read moves with its content
    assert storage.files == {"/moved.md": "a", "/big/b.md": "b" * 1_000}
    await store.delete("/big/b.md")
    assert storage.files == {"/moved.md": "a"}


async def test_a_file_gone_from_the_storage_is_a_clear_error() -> None:
    storage = IndexedPersistence({"/a.md": "a"})
    store = await PersistedFileStore.open(storage, None, "c1")
    del storage.files["/a.md"]
    with pytest.raises(FileSystemError, match="/a.md of conversation 'c1' is no longer stored"):
        await store.read("/a.md")


async def test_lazy_is_the_default_only_where_the_storage_can() -> None:
    storage = IndexedPersistence({"/a.md": "a"})
    eager = await PersistedFileStore.open(storage, None, "c1", lazy=False)
    assert storage.full_loads == 1
    assert await eager.read("/a.md") == "a"
    assert storage.loaded == []
    whole = WholeFilesOnly()
    assert isinstance(whole, FilePersistence)
    assert not isinstance(whole, FileIndexPersistence)
    assert await (await PersistedFileStore.open(whole, None, "c1")).list() == []
    with pytest.raises(ConfigurationError, match="cannot load files lazily"):
        await PersistedFileStore.open(whole, None, "c1", lazy=True)
    # Both shipped adapters load one file at a time.
    assert isinstance(MemoryPersistence(), FileIndexPersistence)


class WholeFilesOnly:
    """A FilePersistence that loads a conversation's files only all at once."""

    async def load_files(self, scope: Hashable, conversation_id: str) -> dict[str, str]:
        return {}

    async def save_files(
        self, scope: Hashable, conversation_id: str, changes: Mapping[str, str | None]
    ) -> None:
        return None


def _read_back(messages: list[BaseMessage]) -> Reply:
    if isinstance(messages[-1], ToolMessage):
        return Reply(text=str(messages[-1].content))
    return Reply(tool_calls=[ToolCall(name="read_file", args={"file_path": "/notes.md"})])


async def test_a_conversation_over_an_indexed_persistence_starts_lazily() -> None:
    storage = IndexedPersistence({"/notes.md": "remember this", "/other.md": "not read"})
    agent = Agent(
        agent_id="lazy-agent",
        model=ScriptedChatModel(responder=_read_back),
        middleware=[FileSystem()],
        retry=RetryPolicy(max_attempts=1),
    )

    async with Runtime() as runtime:
        handle = await runtime.start_agent(
            agent, State(), conversation_id="c1", agent_persistence=_AgentAndFiles(storage)
        )
        async with handle.subscribe() as events:
            await handle.add_message(HumanMessage("what did I say?"))
            async for event in events:
                if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    break
        assert "remember this" in str((await handle.get_state()).messages[-1].content)
        files = runtime.filesystem(ConversationFiles(conversation_id="c1"))
        assert isinstance(files, PersistedFileStore)
    assert storage.full_loads == 0
    assert storage.loaded == ["/notes.md"]


class _AgentAndFiles(MemoryPersistence):
    """An agent persistence whose files come from an ``IndexedPersistence``."""

    def __init__(self, files: IndexedPersistence) -> None:
        super().__init__()
        self._files = files

    async def load_files(self, scope: Any, conversation_id: str) -> dict[str, str]:
        return await self._files.load_files(scope, conversation_id)

    async def save_files(
        self, scope: Any, conversation_id: str, changes: Mapping[str, str | None]
    ) -> None:
        await self._files.save_files(scope, conversation_id, changes)

    async def list_files(self, scope: Any, conversation_id: str) -> dict[str, FileInfo]:
        return await self._files.list_files(scope, conversation_id)

    async def load_file(self, scope: Hashable, conversation_id: str, path: str) -> str | None:
        return await self._files.load_file(scope, conversation_id, path)
