"""Tests for sagents/_mounts.py: several stores under one tree, read-only mounts, and mounts that
survive a conversation's restore (issue 15)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, ToolMessage

from sagents import (
    Agent,
    Runtime,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    Status,
)
from sagents._errors import ConfigurationError, FileSystemError, PathNotAllowed
from sagents.events import FileChanged, StatusChanged
from sagents.execution import Reply, RetryPolicy, ScriptedChatModel, ToolCall
from sagents.middleware import (
    ConversationFiles,
    DiskFileStore,
    FileStore,
    FileSystem,
    MemoryFileStore,
    Mount,
    MountedFileStore,
)
from sagents.persistence import FilePersistence, MemoryPersistence, PersistedFileStore
from sagents.session import FactoryConfig
from tests.persistence.conftest import Store, open_sql


class Tracked(MemoryFileStore):
    """A memory store that records whether it was closed."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


@pytest.fixture
def parts() -> dict[str, Tracked]:
    return {"root": Tracked(), "memories": Tracked(), "docs": Tracked()}


@pytest.fixture
async def tree(parts: dict[str, Tracked]) -> AsyncIterator[MountedFileStore]:
    await parts["docs"].write("/manual.md", "the manual")
    store = MountedFileStore(
        {
            "/": parts["root"],
            "/memories": parts["memories"],
            "/docs": Mount(store=parts["docs"], read_only=True, owned=False),
        }
    )
    yield store
    await store.aclose()


# -- routing -------------------------------------------------------------------------------


async def test_paths_go_to_the_store_of_the_longest_mount_point(
    tree: MountedFileStore, parts: dict[str, Tracked]
) -> None:
    await tree.write("/memories/user.md", "likes tea")
    await tree.write("/plan.md", "the plan")
    await tree.write("/memoriesX.md", "a sibling, not under the mount")
    assert await parts["memories"].list() == ["/user.md"]  # mounted as at its own root
    assert await parts["root"].list() == ["/memoriesX.md", "/plan.md"]
    assert await tree.read("/memories/user.md") == "likes tea"
    assert await tree.read("/docs/manual.md") == "the manual"
    assert await tree.exists("/memories/user.md")
    assert not await tree.exists("/memories")  # a mount point is a directory


async def test_listing_spans_every_mount_and_hides_shadowed_files(
    tree: MountedFileStore, parts: dict[str, Tracked]
) -> None:
    await parts["root"].write("/memories/hidden.md", "under the mount: never seen")
    await tree.write("/memories/user.md", "x")
    await tree.write("/a.md", "x")
    assert await tree.list() == ["/a.md", "/docs/manual.md", "/memories/user.md"]
    assert await tree.list("/memories") == ["/memories/user.md"]
    assert await tree.list("/docs") == ["/docs/manual.md"]
    with pytest.raises(FileSystemError, match="no such file: /memories/hidden.md"):
        await tree.read("/memories/hidden.md")


async def test_mount_points_and_their_parents_are_directories(tree: MountedFileStore) -> None:
    nested = MountedFileStore({"/": MemoryFileStore(), "/a/b": MemoryFileStore()})
    for store, path in [(tree, "/memories"), (nested, "/a"), (nested, "/a/b")]:
        with pytest.raises(FileSystemError, match="is a directory"):
            await store.write(path, "x")
        with pytest.raises(FileSystemError, match="is a directory"):
            await store.read(path)


async def test_a_path_under_no_mount_is_refused_with_the_mount_points() -> None:
    store = MountedFileStore({"/scratch": MemoryFileStore(), "/memories": MemoryFileStore()})
    with pytest.raises(PathNotAllowed, match="under no mount.*/memories, /scratch"):
        await store.write("/elsewhere.md", "x")
    assert not await store.exists("/elsewhere.md")
    assert await store.list() == []


async def test_errors_name_the_path_the_caller_wrote(tree: MountedFileStore) -> None:
    await tree.write("/memories/a", "a file")
    with pytest.raises(FileSystemError) as info:
        await tree.write("/memories/a/b.md", "x")
    assert str(info.value) == (
        "cannot create /memories/a/b.md: /memories/a is a file, so it cannot hold other files"
    )
    with pytest.raises(FileSystemError, match="no such file: /memories/none.md;"):
        await tree.read("/memories/none.md")


async def test_stat_answers_with_the_outer_path(tree: MountedFileStore) -> None:
    info = await tree.stat("/docs/manual.md")
    assert (info.path, info.size, info.mime_type) == ("/docs/manual.md", 10, "text/markdown")


# -- read-only mounts ----------------------------------------------------------------------


async def test_a_read_only_mount_refuses_every_change_naming_the_mount(
    tree: MountedFileStore, parts: dict[str, Tracked]
) -> None:
    attempts = [
        tree.write("/docs/manual.md", "vandalised"),
        tree.write("/docs/new.md", "x"),
        tree.delete("/docs/manual.md"),
        tree.move("/docs/manual.md", "/stolen.md"),
        tree.move("/plan.md", "/docs/plan.md"),
    ]
    await tree.write("/plan.md", "x")
    for attempt in attempts:
        with pytest.raises(
            PathNotAllowed, match="/docs is a read-only mount; write under /, /memories"
        ):
            await attempt
    assert await parts["docs"].list() == ["/manual.md"]
    assert await parts["docs"].read("/manual.md") == "the manual"


async def test_the_tools_report_a_read_only_mount_to_the_model(tree: MountedFileStore) -> None:
    tools = {tool.name: tool for tool in FileSystem(tree).tools()}
    with pytest.raises(PathNotAllowed, match="read-only mount"):
        await tools["edit_file"].ainvoke(
            {"file_path": "/docs/manual.md", "old_string": "the", "new_string": "a"}
        )
    listing = await tools["ls"].ainvoke({"path": "/"})
    assert listing.splitlines() == ["/docs/", "/memories/"]  # an empty mount is shown too
    assert await tools["ls"].ainvoke({"path": "/memories"}) == "No files yet in /memories."


# -- moves ---------------------------------------------------------------------------------


async def test_a_move_across_mounts_copies_then_deletes(
    tree: MountedFileStore, parts: dict[str, Tracked]
) -> None:
    await tree.write("/draft.md", "draft")
    await tree.move("/draft.md", "/memories/kept.md")
    assert await parts["root"].list() == []
    assert await parts["memories"].read("/kept.md") == "draft"
    await tree.write("/other.md", "x")
    with pytest.raises(FileSystemError, match="/memories/kept.md already exists"):
        await tree.move("/other.md", "/memories/kept.md")
    assert await tree.read("/other.md") == "x"


class NoDelete(MemoryFileStore):
    async def delete(self, path: str) -> None:
        raise FileSystemError(f"cannot delete {path}: the disk is read-only today")


async def test_a_move_across_mounts_whose_delete_fails_is_undone() -> None:
    source, target = NoDelete(), MemoryFileStore()
    store = MountedFileStore({"/a": source, "/b": target})
    await store.write("/a/x.md", "x")
    with pytest.raises(FileSystemError, match="cannot delete /a/x.md"):
        await store.move("/a/x.md", "/b/x.md")
    assert await target.list() == []
    assert await store.read("/a/x.md") == "x"


async def test_a_move_within_a_mount_is_the_mounts_own(tree: MountedFileStore) -> None:
    await tree.write("/memories/a.md", "a")
    await tree.move("/memories/a.md", "/memories/old/a.md")
    assert await tree.list("/memories") == ["/memories/old/a.md"]


# -- life ----------------------------------------------------------------------------------


async def test_closing_closes_the_owned_stores_only(parts: dict[str, Tracked]) -> None:
    store = MountedFileStore({"/": parts["root"], "/docs": Mount(store=parts["docs"], owned=False)})
    await store.flush()
    await store.aclose()
    await store.aclose()  # idempotent
    assert parts["root"].closed
    assert not parts["docs"].closed
    with pytest.raises(FileSystemError, match="closed"):
        await store.read("/a.md")


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="at least one mount"):
        MountedFileStore({})
    with pytest.raises(ConfigurationError, match="two mounts at /a"):
        MountedFileStore({"/a": MemoryFileStore(), "a/": MemoryFileStore()})
    with pytest.raises(PathNotAllowed):
        MountedFileStore({"../x": MemoryFileStore()})
    store = MountedFileStore({"b": MemoryFileStore(), "/a": Mount(store=MemoryFileStore())})
    assert store.mount_points() == ["/a", "/b"]
    assert not store.mounts["/a"].read_only


async def test_a_disk_store_can_be_mounted(tmp_path: Path) -> None:
    (tmp_path / "guide.txt").write_text("on disk")
    disk = await DiskFileStore.open(tmp_path, debounce=0)
    store = MountedFileStore({"/scratch": MemoryFileStore(), "/disk": disk})
    assert await store.read("/disk/guide.txt") == "on disk"
    await store.write("/disk/new.txt", "written")
    await store.aclose()
    assert (tmp_path / "new.txt").read_text() == "written"


# -- mounts survive a conversation's restore -----------------------------------------------


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
    def __init__(self) -> None:
        self.model = ScriptedChatModel(responder=_respond, record_prompts=False)
        self.file_system = FileSystem()

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        agent = Agent(
            agent_id=agent_id,
            model=self.model,
            middleware=[self.file_system],
            retry=RetryPolicy(max_attempts=1),
        )
        return agent, SessionOptions()


def mounted_files(
    persistence: FilePersistence, shared_docs: FileStore
) -> Any:  # Runtime(filesystem_store=...)
    """Each conversation: /memories in its persistence, /scratch in memory, /docs shared and
    read-only (documented in docs/middleware.md)."""

    async def open_scope(scope: Hashable) -> FileStore:
        assert isinstance(scope, ConversationFiles)
        assert scope.conversation_id is not None
        memories = await PersistedFileStore.open(persistence, scope.scope, scope.conversation_id)
        return MountedFileStore(
            {
                "/memories": memories,
                "/scratch": MemoryFileStore(),
                "/docs": Mount(store=shared_docs, read_only=True, owned=False),
            }
        )

    return open_scope


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.looptime), "sqlite", "postgres"])
async def persistence(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryPersistence()
        return
    async for sql in open_sql(request.param, tmp_path):
        yield sql


async def _say(session: Session, text: str) -> tuple[str, list[FileChanged]]:
    changed: list[FileChanged] = []
    async with session.handle.subscribe() as events:
        await session.handle.add_message(text)
        async for event in events:
            if isinstance(event, FileChanged):
                changed.append(event)
            if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
    return str((await session.handle.get_state()).messages[-1].content), changed


async def test_a_persisted_mount_survives_stop_and_restore(persistence: Store) -> None:
    docs = MemoryFileStore()
    await docs.write("/manual.md", "read me")
    config = SessionConfig(
        factory_router=SingleFactoryRouter(Factory()),
        agent_persistence=persistence,
        display_message_persistence=persistence,
        inactivity_timeout=None,
    )
    async with Runtime(filesystem_store=mounted_files(persistence, docs)) as runtime:
        first = await Session.ensure_running(runtime, config, "c1", scope="alice")
        await first.events.aclose()
        answer, changed = await _say(first, "write /memories/user.md prefers tea")
        assert answer == "success: Created /memories/user.md (1 line)."
        assert [(e.path, e.change) for e in changed] == [("/memories/user.md", "created")]
        await _say(first, "write /scratch/tmp.md scratch work")
        answer, _ = await _say(first, "write /docs/manual.md defaced")
        assert answer.startswith("error: ")
        assert "/docs is a read-only mount" in answer
        await Session.stop(runtime, config, "c1")
        assert not Session.is_running(runtime, config, "c1")

    # A new runtime (as after a restart of the process): only the persistence is shared.
    async with Runtime(filesystem_store=mounted_files(persistence, docs)) as runtime:
        again = await Session.ensure_running(runtime, config, "c1", scope="alice")
        await again.events.aclose()
        assert again.restored
        answer, _ = await _say(again, "read /memories/user.md")
        assert "prefers tea" in answer
        answer, _ = await _say(again, "read /scratch/tmp.md")
        assert "no such file: /scratch/tmp.md" in answer  # memory mounts start empty
        answer, _ = await _say(again, "read /docs/manual.md")
        assert "read me" in answer
        await Session.stop(runtime, config, "c1")
    # The persisted mount keeps its files at its own root, in the conversation's storage.
    assert await persistence.load_files("alice", "c1") == {"/user.md": "prefers tea"}
    assert await docs.read("/manual.md") == "read me"  # shared, not closed by the scope


def test_mount_options_are_a_frozen_dataclass() -> None:
    mount = Mount(store=MemoryFileStore(), read_only=True)
    with pytest.raises(AttributeError):
        mount.read_only = False  # type: ignore[misc]
    assert (mount.read_only, mount.owned) == (True, True)
