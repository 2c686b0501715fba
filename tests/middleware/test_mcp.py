"""``MCPTools``: MCP servers' tools, over sessions each agent server owns (middleware/_mcp.py).

The MCP server is real: ``mcp_server.py`` (FastMCP) run as a stdio subprocess, one per agent
server. Its ``pid`` tool says which process served a call, so the tests follow each process:
started with the agent server, gone when that server ends (stop, inactivity, no viewers, crash,
runtime shutdown), a new one when the agent comes back — by hand or through ``Session``, as an
application restores a conversation. Runs are driven by a ``ScriptedChatModel`` whose
responder turns the user message ``"<tool> <json arguments>"`` into that tool call.

These tests run in real time: a subprocess's I/O cannot run on virtual time (looptime would
jump the clock past every timeout while the process is starting). The inactivity expiries are
real and short (``INACTIVITY``), in tests marked slow; the no-viewers grace period is half a
second.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from mcp.server.fastmcp import FastMCP
from mcp.types import Tool

from sagents import (
    Agent,
    Approve,
    ConfigurationError,
    Done,
    InvalidMiddleware,
    LocalPresence,
    Reject,
    Session,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
    State,
    Status,
)
from sagents.events import AgentShutdown, Event, StatusChanged
from sagents.middleware import HumanInTheLoop, MCPTools
from sagents.persistence import MemoryPersistence
from sagents.runtime import AgentHandle, PendingSubscription, Runtime
from sagents.session import FactoryConfig
from sagents.testing import Reply, ScriptedChatModel, ToolCall, crash_agent

from . import mcp_server

SERVER_SCRIPT = Path(mcp_server.__file__)
TOOL_NAMES = ["add", "pid", "delete_everything", "wait", "fail", "crash", "session_id"]
INACTIVITY = 3.0  # seconds of real time (see the module docstring)


def stdio(*args: str) -> dict[str, Any]:
    """The stdio connection of the test server (or of ``python *args``)."""
    return {
        "transport": "stdio",
        "command": sys.executable,
        "args": list(args) or [str(SERVER_SCRIPT)],
    }


@pytest.fixture(scope="module")
def definitions() -> list[Tool]:
    """The test server's tool definitions, listed in process (no subprocess needed)."""
    return asyncio.run(mcp_server.build().list_tools())


def mcp_tools(definitions: list[Tool], **options: Any) -> MCPTools:
    return MCPTools({"test": stdio()}, {"test": definitions}, **options)


def respond(messages: Sequence[BaseMessage]) -> Reply:
    last = messages[-1]
    if isinstance(last, HumanMessage):
        name, _, arguments = last.text.partition(" ")
        return Reply(tool_calls=[ToolCall(name=name, args=json.loads(arguments or "{}"))])
    return Reply(text="done")


def make_agent(mcp: MCPTools, agent_id: str = "agent-1", **options: Any) -> Agent:
    model = ScriptedChatModel(responder=respond, record_prompts=False)
    return Agent(agent_id=agent_id, model=model, middleware=[mcp], **options)


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime() as rt:
        yield rt


async def send(handle: AgentHandle, text: str) -> ToolMessage:
    """Send ``text``; return the tool result of the turn once the agent is idle again."""
    async with handle.subscribe() as events:
        await handle.add_message(HumanMessage(text))
        async for event in events:
            if isinstance(event, StatusChanged) and event.status in (
                Status.IDLE,
                Status.ERROR,
                Status.INTERRUPTED,
            ):
                assert event.status is Status.IDLE, event
                break
    state = await handle.get_state()
    return [m for m in state.messages if isinstance(m, ToolMessage)][-1]


async def call_pid(handle: AgentHandle) -> int:
    result = await send(handle, "pid")
    assert result.status == "success", result
    return int(result.text)


async def last_event(events: Any) -> Event:
    async with asyncio.timeout(60):
        seen = [event async for event in events]
    return seen[-1]


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (for what no event announces: a process reaped, a restart)."""
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not hold within 30 s")


# -- discovery, definitions, filtering ----------------------------------------------------------


async def test_discover_lists_the_tools_and_closes_its_session() -> None:
    before = children()
    mcp = await MCPTools.discover({"test": stdio()})
    assert [tool.name for tool in mcp.tools()] == TOOL_NAMES
    assert [tool.name for tool in mcp.definitions["test"]] == TOOL_NAMES
    add = next(tool for tool in mcp.tools() if tool.name == "add")
    assert add.description == "Add two integers."
    assert set(add.args) == {"a", "b"}
    assert children() == before  # the listing's process ended


async def test_discover_names_a_server_it_cannot_reach() -> None:
    broken = stdio("-c", "import sys; sys.exit(3)")
    with pytest.raises(InvalidMiddleware, match="MCP server 'broken' could not list its tools"):
        await MCPTools.discover({"test": stdio(), "broken": broken})


def test_the_same_tool_objects_serve_every_agent(definitions: list[Tool]) -> None:
    mcp = mcp_tools(definitions)
    first, second = make_agent(mcp, "a"), make_agent(mcp, "b")
    assert first.all_tools["add"] is second.all_tools["add"]


def test_include_and_exclude_filter_the_tools_of_a_server(definitions: list[Tool]) -> None:
    included = mcp_tools(definitions, include={"test": ["add", "pid"]})
    assert [tool.name for tool in included.tools()] == ["add", "pid"]
    excluded = mcp_tools(definitions, exclude={"test": ["crash", "fail", "not-there"]})
    assert [tool.name for tool in excluded.tools()] == [
        "add",
        "pid",
        "delete_everything",
        "wait",
        "session_id",
    ]
    both = mcp_tools(definitions, include={"test": ["add", "pid"]}, exclude={"test": ["pid"]})
    assert [tool.name for tool in both.tools()] == ["add"]
    with pytest.raises(InvalidMiddleware, match=r"has no tools \['ad'\]"):
        mcp_tools(definitions, include={"test": ["ad"]})
    with pytest.raises(InvalidMiddleware, match=r"names servers \['other'\]"):
        mcp_tools(definitions, include={"other": ["add"]})
    with pytest.raises(InvalidMiddleware, match="a collection of tool names"):
        mcp_tools(definitions, include={"test": "add"})


def test_colliding_names_need_a_prefix(definitions: list[Tool]) -> None:
    servers = {"one": stdio(), "two": stdio()}
    with pytest.raises(InvalidMiddleware, match="tool_name_prefix=True"):
        MCPTools(servers, {"one": definitions, "two": definitions})
    mcp = MCPTools(
        servers,
        {"one": definitions, "two": definitions},
        include={"one": ["add"], "two": ["add"]},
        tool_name_prefix=True,
    )
    assert [tool.name for tool in mcp.tools()] == ["one_add", "two_add"]


def test_definitions_may_be_given_in_their_json_form(definitions: list[Tool]) -> None:
    cached = [tool.model_dump(mode="json") for tool in definitions]
    mcp = MCPTools({"test": stdio()}, {"test": cached})
    assert [tool.name for tool in mcp.tools()] == TOOL_NAMES
    with pytest.raises(InvalidMiddleware, match="not a valid MCP tool definition"):
        MCPTools({"test": stdio()}, {"test": [{"description": "no name"}]})


def test_it_pickles_as_its_configuration(definitions: list[Tool]) -> None:
    # A distributed backend sends agents, middleware included, to other processes.
    mcp = mcp_tools(definitions, include={"test": ["add", "pid"]}, tool_name_prefix=True)
    copy = pickle.loads(pickle.dumps(mcp))
    assert copy is not mcp
    assert [tool.name for tool in copy.tools()] == ["test_add", "test_pid"]
    assert copy.servers == mcp.servers
    assert copy.connect_timeout == mcp.connect_timeout


@pytest.mark.parametrize(
    ("servers", "match"),
    [
        ({}, "at least one server"),
        ({"test": {"command": "python", "args": []}}, "needs a connection with a transport"),
        ({"test": {"transport": "stdio", "args": []}}, r"lacks \['command'\]"),
        ({"test": {"transport": "streamable_http"}}, r"lacks \['url'\]"),
    ],
)
def test_malformed_connections_are_refused(
    definitions: list[Tool], servers: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidMiddleware, match=match):
        MCPTools(servers, {})


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), True, "30"])
def test_the_connect_timeout_is_a_positive_number(definitions: list[Tool], timeout: Any) -> None:
    with pytest.raises(InvalidMiddleware, match="connect_timeout"):
        mcp_tools(definitions, connect_timeout=timeout)


def test_the_middleware_namespace_does_not_import_mcp() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sagents, sagents.middleware
        assert sagents.middleware.MCPTools.__module__ == "sagents.middleware"
        print(sorted(m for m in ("mcp", "langchain_mcp_adapters") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_the_mcp_packages_it_says_what_to_install(
    definitions: list[Tool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_mcp_adapters.tools", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'sagents\[mcp\]'"):
        mcp_tools(definitions)


# -- sessions owned by the agent server ---------------------------------------------------------


async def test_an_agent_calls_tools_through_its_own_stdio_server(
    runtime: Runtime, definitions: list[Tool], tmp_path: Path
) -> None:
    before = children()
    exit_log = tmp_path / "exits"
    server = {**stdio(), "env": {"SAGENTS_TEST_EXIT_LOG": str(exit_log)}}
    mcp = MCPTools({"test": server}, {"test": definitions})
    handle = await runtime.start_agent(make_agent(mcp), inactivity_timeout=None)
    started = children() - before
    assert len(started) == 1  # opened at the start, before any call
    (pid,) = started
    result = await send(handle, 'add {"a": 2, "b": 40}')
    assert result.status == "success"
    assert result.text == "42"
    assert await call_pid(handle) == pid  # the same session serves every call
    failed = await send(handle, 'fail {"message": "no such file"}')
    assert failed.status == "error"  # the server's own error result
    assert "no such file" in failed.text
    await runtime.stop("agent-1")
    assert not psutil.pid_exists(pid)
    assert exit_log.read_text() == f"{pid}\n"  # closed cleanly (stdin), not killed
    assert children() == before


async def test_two_agents_have_two_servers(runtime: Runtime, definitions: list[Tool]) -> None:
    mcp = mcp_tools(definitions)
    first = await runtime.start_agent(make_agent(mcp, "a"))
    second = await runtime.start_agent(make_agent(mcp, "b"))
    pids = {await call_pid(first), await call_pid(second)}
    assert len(pids) == 2
    await runtime.stop("a")
    assert [alive(pid) for pid in sorted(pids)].count(True) == 1
    assert await call_pid(second) in pids  # b's server is untouched by a's stop


@pytest.mark.slow
async def test_inactivity_ends_the_process_and_the_next_message_brings_a_new_one(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    agent = make_agent(mcp_tools(definitions))
    events = PendingSubscription()
    handle = await runtime.start_agent(
        agent, inactivity_timeout=INACTIVITY, initial_subscribers=[events]
    )
    first = await call_pid(handle)
    assert alive(first)
    saved = await handle.export_state()
    shutdown = await last_event(events)  # the real inactivity expiry
    assert isinstance(shutdown, AgentShutdown)
    assert shutdown.reason == "inactivity"
    assert runtime.list_running_agents() == []
    assert not psutil.pid_exists(first)
    # The conversation's next message restores the agent (as Session.ensure_running does).
    handle = await runtime.start_agent(agent, saved, inactivity_timeout=INACTIVITY)
    second = await call_pid(handle)
    assert second != first
    assert alive(second)
    await runtime.stop("agent-1")
    assert not psutil.pid_exists(second)


class MCPFactory:
    """A session factory whose agents have the MCP tools (one ``MCPTools`` for all)."""

    def __init__(self, mcp: MCPTools) -> None:
        self.mcp = mcp

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        return make_agent(self.mcp, agent_id), SessionOptions()


def session_config(mcp: MCPTools, **options: Any) -> SessionConfig:
    store = MemoryPersistence()
    return SessionConfig(
        factory_router=SingleFactoryRouter(MCPFactory(mcp)),
        agent_persistence=store,
        display_message_persistence=store,
        **options,
    )


@pytest.mark.slow
async def test_a_session_restored_after_inactivity_has_a_new_process(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    config = session_config(mcp_tools(definitions), inactivity_timeout=INACTIVITY)
    session = await Session.ensure_running(runtime, config, "c1")
    assert (session.started, session.restored) == (True, False)
    first = await call_pid(session.handle)
    assert alive(first)
    shutdown = await last_event(session.events)  # the real inactivity expiry
    assert isinstance(shutdown, AgentShutdown)
    assert shutdown.reason == "inactivity"
    assert not psutil.pid_exists(first)
    # The conversation's next message: the session restores the agent from its saved state.
    session = await Session.ensure_running(runtime, config, "c1")
    assert (session.started, session.restored) == (True, True)
    async with session.events:
        second = await call_pid(session.handle)
        assert second != first
        assert alive(second)
        results = [
            m.text
            for m in (await session.handle.get_state()).messages
            if isinstance(m, ToolMessage)
        ]
        assert results == [str(first), str(second)]  # the earlier turn was restored
        await Session.stop(runtime, config, "c1")
    assert not psutil.pid_exists(second)


async def test_the_last_viewer_leaving_ends_the_process(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    presence = LocalPresence()
    config = session_config(
        mcp_tools(definitions), presence=presence, grace_period=0.5, inactivity_timeout=None
    )
    topic = config.presence_topic("c1")
    viewer = presence.track_nowait(topic, "ada", auto_untrack=False)  # a page open on it
    session = await Session.ensure_running(runtime, config, "c1")
    pid = await call_pid(session.handle)
    assert alive(pid)
    await presence.untrack(topic, "ada", viewer)  # the page closes: the grace period starts
    shutdown = await last_event(session.events)
    assert isinstance(shutdown, AgentShutdown)
    assert shutdown.reason == "no_viewers"
    assert not psutil.pid_exists(pid)


async def test_a_crash_of_the_agent_server_ends_its_process_and_the_restart_opens_another(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    events = PendingSubscription()
    handle = await runtime.start_agent(
        make_agent(mcp_tools(definitions)), initial_subscribers=[events]
    )
    first = await call_pid(handle)
    instance = (await handle.info()).instance
    crash_agent(runtime, "agent-1")
    shutdown = await last_event(events)
    assert isinstance(shutdown, AgentShutdown)
    assert shutdown.reason == "crash"
    assert not psutil.pid_exists(first)
    await wait_until(lambda: bool(runtime.list_running_agents()))
    assert (await handle.info()).instance != instance  # restarted by its unit
    second = await call_pid(handle)
    assert second != first


async def test_a_crashed_mcp_server_is_a_tool_error_and_the_next_call_starts_it_again(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    handle = await runtime.start_agent(make_agent(mcp_tools(definitions)))
    first = await call_pid(handle)
    instance = (await handle.info()).instance
    result = await send(handle, "crash")
    assert result.status == "error"
    assert "'test' is unavailable: the connection closed during the call" in result.text
    assert await handle.get_status() is Status.IDLE
    await wait_until(lambda: not psutil.pid_exists(first))
    second = await call_pid(handle)
    assert second != first
    assert (await handle.info()).instance == instance  # the agent server never crashed


async def test_a_server_killed_while_idle_is_started_again_by_the_next_call(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    handle = await runtime.start_agent(make_agent(mcp_tools(definitions)))
    first = await call_pid(handle)
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: not psutil.pid_exists(first))
    await asyncio.sleep(0.1)  # the session reads the end of the pipe
    # Nothing was sent to the dead server, so the call goes to a new one at once.
    second = await call_pid(handle)
    assert second != first


async def test_a_server_that_cannot_start_is_a_tool_error_never_a_failed_start(
    runtime: Runtime, definitions: list[Tool], caplog: pytest.LogCaptureFixture
) -> None:
    servers = {"test": stdio("-c", "import sys; sys.exit(3)")}
    handle = await runtime.start_agent(make_agent(MCPTools(servers, {"test": definitions})))
    assert "MCP server 'test' failed" in caplog.text  # logged at the start
    result = await send(handle, 'add {"a": 1, "b": 2}')
    assert result.status == "error"
    assert "the MCP server 'test' is unavailable" in result.text
    missing = {"test": {"transport": "stdio", "command": "/nonexistent/mcp-server", "args": []}}
    other = await runtime.start_agent(make_agent(MCPTools(missing, {"test": definitions}), "b"))
    result = await send(other, 'add {"a": 1, "b": 2}')
    assert result.status == "error"
    assert "FileNotFoundError" in result.text
    assert await other.get_status() is Status.IDLE


@pytest.mark.slow  # its stop waits out the transport's two seconds before SIGTERM
async def test_a_server_that_does_not_answer_in_time_is_a_tool_error(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    before = children()
    silent = {"test": stdio("-c", "import time; time.sleep(3600)")}
    mcp = MCPTools(silent, {"test": definitions}, connect_timeout=0.5)
    handle = await runtime.start_agent(make_agent(mcp))
    result = await send(handle, 'add {"a": 1, "b": 2}')
    assert result.status == "error"
    assert "did not start and answer within 0.5 s" in result.text
    await runtime.stop("agent-1")
    assert children() == before  # the silent processes were killed


async def test_a_call_past_the_tool_timeout_is_cancelled_and_the_session_stays(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    handle = await runtime.start_agent(make_agent(mcp_tools(definitions), tool_timeout=0.5))
    first = await call_pid(handle)
    result = await send(handle, 'wait {"seconds": 1.5}')
    assert result.status == "error"
    assert "timed out after 0.5 s" in result.text
    assert await call_pid(handle) == first  # the same session, the same process


async def test_an_approval_survives_the_agents_stop_and_runs_on_the_new_server(
    runtime: Runtime, definitions: list[Tool]
) -> None:
    mcp = mcp_tools(definitions)
    approval = HumanInTheLoop(interrupt_on={"delete_everything": True})
    model = ScriptedChatModel(responder=respond, record_prompts=False)
    agent = Agent(agent_id="agent-1", model=model, middleware=[mcp, approval])
    before = children()
    handle = await runtime.start_agent(agent)
    (first,) = children() - before
    async with handle.subscribe() as events:
        await handle.add_message(HumanMessage('delete_everything {"path": "/tmp/x"}'))
        async for event in events:
            if isinstance(event, StatusChanged) and event.status is Status.INTERRUPTED:
                break
    saved = await handle.export_state()
    await runtime.stop("agent-1")
    assert not psutil.pid_exists(first)
    handle = await runtime.start_agent(agent, saved)
    assert await handle.get_status() is Status.INTERRUPTED
    (second,) = children() - before
    async with handle.subscribe() as events:
        await handle.resume([Approve()])
        async for event in events:
            if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                break
    state = await handle.get_state()
    result = [m for m in state.messages if isinstance(m, ToolMessage)][-1]
    assert result.text == "deleted /tmp/x"
    assert second != first


async def test_tools_under_human_approval(runtime: Runtime, definitions: list[Tool]) -> None:
    mcp = mcp_tools(definitions)
    approval = HumanInTheLoop(interrupt_on={"delete_everything": True})
    model = ScriptedChatModel(responder=respond, record_prompts=False)
    agent = Agent(agent_id="agent-1", model=model, middleware=[mcp, approval])
    handle = await runtime.start_agent(agent)
    for decision, expected in [
        (Approve(), "deleted /tmp/x"),  # run by the MCP server
        (Reject(message="not now"), "not now"),
    ]:
        async with handle.subscribe() as events:
            await handle.add_message(HumanMessage('delete_everything {"path": "/tmp/x"}'))
            async for event in events:
                if isinstance(event, StatusChanged) and event.status is Status.INTERRUPTED:
                    break
        interrupt = (await handle.get_state()).interrupt
        assert interrupt is not None
        assert [r.name for r in interrupt.action_requests] == ["delete_everything"]
        async with handle.subscribe() as events:
            await handle.resume([decision])
            async for event in events:
                if isinstance(event, StatusChanged) and event.status is Status.IDLE:
                    break
        state = await handle.get_state()
        result = [m for m in state.messages if isinstance(m, ToolMessage)][-1]
        assert expected in result.text


async def test_a_plain_agent_run_opens_a_session_per_call(definitions: list[Tool]) -> None:
    before = children()
    agent = make_agent(mcp_tools(definitions))
    result = await agent.run(State(messages=[HumanMessage('add {"a": 20, "b": 22}')]))
    assert isinstance(result, Done)
    tool_result = [m for m in result.state.messages if isinstance(m, ToolMessage)][-1]
    assert tool_result.text == "42"
    assert children() == before


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_hundred_agents_with_their_own_servers_leave_no_process_behind(
    definitions: list[Tool],
) -> None:
    before = children()
    mcp = mcp_tools(definitions, connect_timeout=300.0)  # 100 Python starts on a small machine
    async with Runtime() as runtime:
        limit = asyncio.Semaphore(10)

        async def start(i: int) -> AgentHandle:
            async with limit:
                return await runtime.start_agent(make_agent(mcp, f"agent-{i}"))

        handles = await asyncio.gather(*(start(i) for i in range(100)))
        started = children() - before
        assert len(started) == 100
        pids = [await call_pid(handle) for handle in handles]
        assert set(pids) == started  # each agent calls its own server
    assert children() == before
    assert not [pid for pid in pids if psutil.pid_exists(pid)]


# -- streamable HTTP ----------------------------------------------------------------------------


@dataclass
class HttpServer:
    """The test server over streamable HTTP: its URL and its ``FastMCP`` (whose session
    manager knows the sessions it holds)."""

    url: str
    mcp: FastMCP

    def holds(self, session_id: str) -> bool:
        # The manager has no public listing of its sessions: its table is read here, and
        # the protocol's own answer (404 for an ended session) is checked beside it.
        return session_id in self.mcp.session_manager._server_instances

    async def answer_to(self, session_id: str) -> int:
        """The HTTP status a request on ``session_id`` gets."""
        import httpx

        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"mcp-session-id": session_id, "accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as client:
            response = await client.post(self.url, json=ping, headers=headers)
        return response.status_code


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    """The test server over streamable HTTP, served in this process by uvicorn."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mcp = mcp_server.build()
    app = mcp.streamable_http_app()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started)
    yield HttpServer(url=f"http://127.0.0.1:{port}/mcp", mcp=mcp)
    server.should_exit = True
    await task


async def test_streamable_http_sessions_per_agent_server(
    runtime: Runtime, http_server: HttpServer
) -> None:
    servers = {"web": {"transport": "streamable_http", "url": http_server.url}}
    mcp = await MCPTools.discover(servers, include={"web": ["add", "session_id"]})
    assert [tool.name for tool in mcp.tools()] == ["add", "session_id"]
    first = await runtime.start_agent(make_agent(mcp, "a"))
    second = await runtime.start_agent(make_agent(mcp, "b"))
    result = await send(first, 'add {"a": 1, "b": 1}')
    assert result.text == "2"
    a1 = (await send(first, "session_id")).text
    b1 = (await send(second, "session_id")).text
    assert a1
    assert b1
    assert a1 != b1  # a session per agent server
    assert (await send(first, "session_id")).text == a1  # kept while the agent lives
    assert http_server.holds(a1)
    await runtime.stop("a")
    # The stop ended a's session on the server (the client's DELETE), not b's.
    assert not http_server.holds(a1)
    assert await http_server.answer_to(a1) == 404
    assert http_server.holds(b1)
    first = await runtime.start_agent(make_agent(mcp, "a"))
    assert (await send(first, "session_id")).text not in {a1, b1}  # a new one on restart
