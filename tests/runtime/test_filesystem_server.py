"""Filesystem servers shared by scope (L50, L53)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage

from sagents import Agent, SagentsError, State, StateConflict, Status
from sagents.events import SaveRefused, ToolExecutionFailed
from sagents.execution import Reply, ToolCall
from sagents.middleware import (
    ConversationFiles,
    DiskFileStore,
    FileStore,
    FileSystem,
    MemoryFileStore,
    SubAgent,
)
from sagents.persistence import MemoryPersistence
from sagents.runtime import PendingSubscription, Runtime
from sagents.testing import crash_agent

from .conftest import make_agent, tool_turn, until_status, user

pytestmark = pytest.mark.looptime


def writer(agent_id: str, path: str, content: str, fs: FileSystem | None = None) -> Agent:
    return make_agent(
        [
            Reply(
                tool_calls=[
                    ToolCall(name="write_file", args={"file_path": path, "content": content})
                ]
            ),
            Reply(text="written"),
        ],
        agent_id=agent_id,
        tools=[],
        middleware=[fs or FileSystem()],
    )


async def run_to_idle(runtime: Runtime, agent: Agent, **options: object) -> None:
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events], **options)
    await handle.execute()
    await until_status(events, Status.IDLE)


async def test_agents_of_one_scope_share_files_and_other_scopes_do_not(runtime: Runtime) -> None:
    await run_to_idle(runtime, writer("a", "/shared.md", "from a"), filesystem_scope=("project", 1))
    await run_to_idle(runtime, writer("b", "/b.md", "from b"), filesystem_scope=("project", 1))
    await run_to_idle(runtime, writer("c", "/c.md", "from c"), filesystem_scope=("project", 2))
    one = runtime.filesystem(("project", 1))
    assert sorted(await one.list("/")) == ["/b.md", "/shared.md"]
    assert await runtime.filesystem(("project", 2)).list("/") == ["/c.md"]


async def test_the_scope_server_stops_with_its_last_agent(runtime: Runtime) -> None:
    await run_to_idle(runtime, writer("a", "/x.md", "x"), filesystem_scope="s")
    await run_to_idle(runtime, writer("b", "/y.md", "y"), filesystem_scope="s")
    await runtime.stop("a")
    assert await runtime.filesystem("s").exists("/x.md")
    await runtime.stop("b")
    for _ in range(10):  # the runtime's reaper stops the server in its own task
        try:
            runtime.filesystem("s")
        except SagentsError:
            break
        await asyncio.sleep(0)
    with pytest.raises(SagentsError, match="no filesystem server"):
        runtime.filesystem("s")


async def test_a_disk_backed_scope_keeps_files_across_agent_lifetimes(tmp_path: Path) -> None:
    async def disk(scope: Hashable) -> FileStore:
        return await DiskFileStore.open(tmp_path / str(scope), debounce=0)

    async with Runtime(filesystem_store=disk) as runtime:
        await run_to_idle(runtime, writer("a", "/notes.md", "kept"), filesystem_scope="user-7")
        await runtime.stop("a")
    async with Runtime(filesystem_store=disk) as runtime:
        await runtime.start_agent(make_agent(agent_id="b"), filesystem_scope="user-7")
        assert await runtime.filesystem("user-7").read("/notes.md") == "kept"


async def test_without_a_scope_an_agent_has_files_of_its_own(runtime: Runtime) -> None:
    fs = FileSystem()
    await run_to_idle(runtime, writer("a", "/own.md", "1", fs))
    store = runtime.filesystem(ConversationFiles(agent_id="a"))
    assert await store.read("/own.md") == "1"
    assert await fs.store.list() == []  # the instance's own store serves only direct calls


# -- files belong to their conversation (issue 11 item 2) --------------------------------------


def reader(agent_id: str, fs: FileSystem, path: str) -> Agent:
    return make_agent(
        [tool_turn("read_file", file_path=path), Reply(text="read")],
        agent_id=agent_id,
        tools=[],
        middleware=[fs],
    )


def tool_results(state: State) -> list[ToolMessage]:
    return [m for m in state.messages if isinstance(m, ToolMessage)]


async def test_files_belong_to_their_conversation(runtime: Runtime) -> None:
    fs = FileSystem()  # one instance, as a factory shared by every tenant would reuse it
    a = writer("conv-A", "/secret.txt", "A's secret", fs)
    await run_to_idle(runtime, a, conversation_id="A", scope="tenant-1")
    for agent_id, conversation_id, scope in [
        ("conv-B", "B", "tenant-2"),  # another tenant
        ("conv-C", "C", "tenant-1"),  # another conversation of the same tenant
        ("conv-A2", "A", "tenant-2"),  # the same conversation id, another tenant
    ]:
        await run_to_idle(
            runtime,
            reader(agent_id, fs, "/secret.txt"),
            conversation_id=conversation_id,
            scope=scope,
        )
        [result] = tool_results(await runtime.agent(agent_id).get_state())
        assert result.status == "error", agent_id
        assert "no such file: /secret.txt" in str(result.content)
    # Two agents of one conversation do share its files.
    await run_to_idle(
        runtime, reader("conv-A-helper", fs, "/secret.txt"), conversation_id="A", scope="tenant-1"
    )
    [result] = tool_results(await runtime.agent("conv-A-helper").get_state())
    assert "A's secret" in str(result.content)
    files = runtime.filesystem(ConversationFiles(scope="tenant-1", conversation_id="A"))
    assert await files.list() == ["/secret.txt"]


async def test_an_explicit_store_is_shared_on_purpose(runtime: Runtime) -> None:
    shared = MemoryFileStore()
    fs = FileSystem(shared)
    a = writer("conv-A", "/shared.txt", "for all", fs)
    await run_to_idle(runtime, a, conversation_id="A")
    await run_to_idle(runtime, reader("conv-B", fs, "/shared.txt"), conversation_id="B")
    [result] = tool_results(await runtime.agent("conv-B").get_state())
    assert "for all" in str(result.content)
    with pytest.raises(SagentsError):  # no conversation scope was made for them
        runtime.filesystem(ConversationFiles(conversation_id="A"))


async def test_a_sub_agent_shares_its_parents_conversation_files(runtime: Runtime) -> None:
    def respond(messages: list[BaseMessage]) -> Reply:
        first = next(m for m in messages if isinstance(m, HumanMessage))
        done = any(isinstance(m, ToolMessage) for m in messages)
        if first.content == "write the report":
            if done:
                return Reply(text="written")
            args = {"file_path": "/report.md", "content": "from the sub-agent"}
            return Reply(tool_calls=[ToolCall(name="write_file", args=args)])
        if done:
            return Reply(text="the sub-agent wrote it")
        args = {"instructions": "write the report", "task_name": "general-purpose"}
        return Reply(tool_calls=[ToolCall(name="task", args=args)])

    parent = make_agent(
        agent_id="boss", responder=respond, tools=[], middleware=[FileSystem(), SubAgent()]
    )
    await run_to_idle(runtime, parent, conversation_id="c1")
    files = runtime.filesystem(ConversationFiles(conversation_id="c1"))
    assert await files.read("/report.md") == "from the sub-agent"


async def test_a_conversation_restarted_at_once_finds_its_filesystem_server(
    runtime: Runtime,
) -> None:
    # Whether or not the old server was ended in between, the new agent must get a store (and,
    # with persistence, the files).
    store = MemoryPersistence()
    options = {"conversation_id": "c1", "agent_persistence": store}
    for round_ in range(3):
        await run_to_idle(runtime, writer("conv-1", f"/r{round_}.md", "x"), **options)
        await runtime.stop("conv-1")  # its filesystem is released, not yet ended
        await run_to_idle(runtime, reader("conv-1", FileSystem(), f"/r{round_}.md"), **options)
        [*_, result] = tool_results(await runtime.agent("conv-1").get_state())
        assert result.status == "success", result.content
        await runtime.stop("conv-1")


async def test_persisted_files_follow_the_lease_across_a_crash_restart(runtime: Runtime) -> None:
    # The files are written under the lease the conversation's agent holds; its restarted
    # server takes the lease again (a new token), and the files' server, which outlives the
    # crash, writes under that one: neither refused nor unfenced.
    store = MemoryPersistence()
    agent = make_agent(
        [
            tool_turn("write_file", file_path="/a.md", content="before"),
            Reply(text="written"),
            tool_turn("write_file", file_path="/b.md", content="after"),
            Reply(text="written"),
        ],
        tools=[],
        middleware=[FileSystem()],
    )
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent, conversation_id="c1", agent_persistence=store, initial_subscribers=[events]
    )
    await handle.add_message("one")
    await until_status(events, Status.IDLE)
    crashed = runtime.agent_info_nowait("agent-1")
    assert crashed is not None
    crash_agent(runtime, "agent-1")
    for _ in range(100):
        info = runtime.agent_info_nowait("agent-1")
        if info is not None and info.instance != crashed.instance:
            break
        await asyncio.sleep(0.01)
    async with handle.subscribe() as after:
        await handle.add_message("two")
        seen = await until_status(after, Status.IDLE, Status.ERROR)
    assert not [e for e in seen if isinstance(e, SaveRefused | ToolExecutionFailed)]
    assert await store.load_files(None, "c1") == {"/a.md": "before", "/b.md": "after"}
    # The premise: the restart took a new lease (token 2), which fences the first one.
    with pytest.raises(StateConflict):
        await store.save_files(None, "c1", {"/c.md": "x"}, lease_token=1)
    await store.save_files(None, "c1", {"/c.md": "x"}, lease_token=2)
