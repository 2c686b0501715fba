"""Filesystem servers shared by scope (L50, L53)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path

import pytest

from sagents import SagentsError, Status
from sagents.execution import Reply, ToolCall
from sagents.middleware import DiskFileStore, FileStore, FileSystem
from sagents.runtime import PendingSubscription, Runtime

from .conftest import make_agent, until_status, user

pytestmark = pytest.mark.looptime


def writer(agent_id: str, path: str, content: str) -> object:
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
        middleware=[FileSystem()],
    )


async def run_to_idle(runtime: Runtime, agent: object, **options: object) -> None:
    events = PendingSubscription()
    handle = await runtime.start_agent(agent, user(), initial_subscribers=[events], **options)  # type: ignore[arg-type]
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


async def test_without_a_scope_the_middleware_uses_its_own_store(runtime: Runtime) -> None:
    fs = FileSystem()
    agent = make_agent(
        [
            Reply(
                tool_calls=[
                    ToolCall(name="write_file", args={"file_path": "/own.md", "content": "1"})
                ]
            ),
            Reply(text="ok"),
        ],
        tools=[],
        middleware=[fs],
    )
    await run_to_idle(runtime, agent)
    assert await fs.store.read("/own.md") == "1"
