"""Helpers shared by the debugger's API and browser tests: demo agents, a real server, waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from sagents import Agent, Runtime, Status
from sagents.execution import demo_model
from sagents.middleware import FileSystem, HumanInTheLoop, TodoList
from sagents.web._debugger import DebuggerApp


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test process owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def demo_agent(agent_id: str, *, delay: float = 0.0) -> Agent:
    """The demo scenario: plans todos, writes a file (needs approval), reads it back."""
    return Agent(
        agent_id=agent_id,
        model=demo_model(delay=delay),
        middleware=[
            TodoList(),
            FileSystem(),
            HumanInTheLoop(interrupt_on={"write_file": True}),
        ],
    )


def host_app(debugger: DebuggerApp) -> Starlette:
    """The debugger mounted at ``/debug`` of a host app that runs its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with debugger:
            yield

    return Starlette(routes=[Mount("/debug", debugger)], lifespan=lifespan)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port); yields ``http://127.0.0.1:port``."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done())
        if task.done():
            task.result()
            raise RuntimeError("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0
) -> None:
    """Wait (real time, short steps) until ``condition()`` is true; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


async def wait_status(runtime: Runtime, agent_id: str, status: Status | None) -> None:
    async def reached() -> bool:
        return await runtime.get_status(agent_id) is status

    await wait_for(reached)
