"""API tests of the live debugger (``sagents.web._debugger``): every endpoint, every error path.

HTTP goes through ``httpx.ASGITransport`` (the client address is set per test); the websocket
needs a real server, so those tests run uvicorn on 127.0.0.1 and connect with ``websockets``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from sagents import ConfigurationError, Runtime, Status, telemetry
from sagents.events import AgentShutdown
from sagents.middleware._file_system import FILE_SYSTEM_TOOLS
from sagents.web._debugger import DebuggerApp, debugger_app
from sagents.web._debugger_access import COOKIE_NAME
from sagents.web._debugger_telemetry import TELEMETRY_EVENTS
from tests.web.debugger_helpers import demo_agent, host_app, serve, wait_for, wait_status

SRC = Path(__file__).parents[2] / "src" / "sagents"


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with Runtime() as rt:
        yield rt


@pytest.fixture
async def debugger(runtime: Runtime) -> AsyncIterator[DebuggerApp]:
    async with debugger_app(runtime) as app:
        yield app


def client(
    app: Any,
    *,
    address: str = "127.0.0.1",
    base_url: str = "http://localhost",
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=host_app(app), client=(address, 51234))
    return httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers)


@contextlib.asynccontextmanager
async def token_client(runtime: Runtime, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a debugger whose token is ``s3cret``."""
    async with debugger_app(runtime, token="s3cret") as app, client(app, **kwargs) as http:
        yield http


async def interrupted_agent(runtime: Runtime, agent_id: str = "alpha") -> None:
    """Start the demo agent and run it until it asks to approve ``write_file``."""
    handle = await runtime.start_agent(demo_agent(agent_id), conversation_id=f"conv-{agent_id}")
    await handle.add_message("asyncio supervision")
    await wait_status(runtime, agent_id, Status.INTERRUPTED)


# -- the agent list ------------------------------------------------------------------------------


async def test_list_agents_reports_every_column(runtime: Runtime, debugger: DebuggerApp) -> None:
    await interrupted_agent(runtime, "beta")
    await runtime.start_agent(demo_agent("alpha"), inactivity_timeout=None)
    async with client(debugger) as http:
        response = await http.get("/debug/api/agents")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    alpha, beta = response.json()["agents"]
    assert alpha["id"] == "alpha"
    assert alpha["status"] == "idle"
    assert alpha["message_count"] == 0
    assert alpha["inactivity_remaining"] is None  # disabled
    assert alpha["conversation_id"] is None
    assert beta["id"] == "beta"
    assert beta["status"] == "interrupted"
    assert beta["has_interrupt"] is True
    assert beta["message_count"] >= 3
    assert beta["todo_count"] == 3
    assert beta["conversation_id"] == "conv-beta"
    assert 0 < beta["inactivity_remaining"] <= 300.0
    assert beta["uptime"] > 0
    assert beta["viewer_count"] == 0
    assert beta["subscriber_count"] == 0


async def test_list_is_empty_without_agents(debugger: DebuggerApp) -> None:
    async with client(debugger) as http:
        assert (await http.get("/debug/api/agents")).json() == {"agents": []}


async def test_runtime_not_running_is_503(runtime: Runtime, debugger: DebuggerApp) -> None:
    await runtime.shutdown()
    async with client(debugger) as http:
        response = await http.get("/debug/api/agents")
    assert response.status_code == 503
    assert "retry" in response.json()["error"]


# -- one agent -----------------------------------------------------------------------------------


async def test_agent_detail_has_info_and_state(runtime: Runtime, debugger: DebuggerApp) -> None:
    await interrupted_agent(runtime)
    async with client(debugger) as http:
        response = await http.get("/debug/api/agents/alpha")
    assert response.status_code == 200
    body = response.json()
    assert body["agent"]["id"] == "alpha"
    assert body["agent"]["status"] == "interrupted"
    state = body["state"]
    assert [m["type"] for m in state["messages"][:2]] == ["human", "ai"]
    assert state["messages"][0]["data"]["content"] == "asyncio supervision"
    assert [t["id"] for t in state["todos"]] == ["research", "write", "review"]
    assert state["interrupt"]["action_requests"][0]["name"] == "write_file"
    assert isinstance(state["metadata"], dict)
    # Each middleware with its debug_summary(), in order.
    assert body["middleware"] == [
        {
            "name": "TodoList",
            "key": "todo_list",
            "summary": {"tools": "write_todos", "inline": "False"},
        },
        {
            "name": "FileSystem",
            "key": "file_system",
            "summary": {"tools": ", ".join(FILE_SYSTEM_TOOLS)},
        },
        {
            "name": "HumanInTheLoop",
            "key": "human_in_the_loop",
            "summary": {"interrupt_on": "{'write_file': True}"},
        },
    ]


async def test_agent_ids_with_slashes_work(runtime: Runtime, debugger: DebuggerApp) -> None:
    await runtime.start_agent(demo_agent("team/one"))
    async with client(debugger) as http:
        response = await http.get("/debug/api/agents/team%2Fone")
        assert response.json()["agent"]["id"] == "team/one"
        assert (await http.post("/debug/api/agents/team/one/stop")).status_code == 200
    assert runtime.list_running_agents() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/debug/api/agents/ghost"),
        ("POST", "/debug/api/agents/ghost/stop"),
        ("POST", "/debug/api/agents/ghost/cancel"),
    ],
)
async def test_unknown_agent_is_404(debugger: DebuggerApp, method: str, path: str) -> None:
    async with client(debugger) as http:
        response = await http.request(method, path)
    assert response.status_code == 404
    assert response.json() == {"error": "agent 'ghost' is not running"}


async def test_stop_ends_the_agent_with_reason_debugger(
    runtime: Runtime, debugger: DebuggerApp
) -> None:
    handle = await runtime.start_agent(demo_agent("alpha"))
    async with handle.subscribe() as events, client(debugger) as http:
        response = await http.post("/debug/api/agents/alpha/stop")
        assert response.status_code == 200
        assert response.json() == {"stopped": "alpha"}
        last = [event async for event in events][-1]
    assert isinstance(last, AgentShutdown)
    assert last.reason == "debugger"
    assert runtime.list_running_agents() == []


async def test_cancel_without_a_run_is_409(runtime: Runtime, debugger: DebuggerApp) -> None:
    await runtime.start_agent(demo_agent("alpha"))
    async with client(debugger) as http:
        response = await http.post("/debug/api/agents/alpha/cancel")
    assert response.status_code == 409
    assert response.json()["error"]
    assert await runtime.get_status("alpha") is Status.IDLE


async def test_cancel_stops_the_run(runtime: Runtime, debugger: DebuggerApp) -> None:
    handle = await runtime.start_agent(demo_agent("alpha", delay=0.05))
    await handle.add_message("a slow topic")
    await wait_status(runtime, "alpha", Status.RUNNING)
    async with client(debugger) as http:
        response = await http.post("/debug/api/agents/alpha/cancel")
    assert response.status_code == 200
    assert response.json() == {"cancelled": "alpha"}
    assert await runtime.get_status("alpha") is Status.CANCELLED


async def test_wrong_method_and_unknown_path(debugger: DebuggerApp) -> None:
    async with client(debugger) as http:
        wrong_method = await http.get("/debug/api/agents/alpha/stop")
        unknown = await http.get("/debug/api/nothing-here")
        post_list = await http.post("/debug/api/agents")
    # GET .../stop reads an agent called "alpha/stop": ids may contain slashes.
    assert wrong_method.status_code == 404
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Not Found"}
    assert post_list.status_code == 405
    assert post_list.json() == {"error": "Method Not Allowed"}
    assert "GET" in post_list.headers["allow"]


# -- telemetry -----------------------------------------------------------------------------------


async def test_telemetry_counts_every_event(runtime: Runtime, debugger: DebuggerApp) -> None:
    async with client(debugger) as http:
        before = (await http.get("/debug/api/telemetry")).json()["counters"]
        await interrupted_agent(runtime)
        after = (await http.get("/debug/api/telemetry")).json()["counters"]
    assert set(before) == {".".join(event) for event in TELEMETRY_EVENTS}
    assert set(before.values()) == {0}
    assert after["sagents.agent.start"] == 1
    assert after["sagents.execution.start"] == 1
    assert after["sagents.execution.interrupt"] == 1
    assert after["sagents.llm.request"] == after["sagents.llm.response"] == 2
    assert after["sagents.tool.start"] == after["sagents.tool.stop"] == 1  # write_todos


def test_telemetry_events_cover_every_call_site() -> None:
    # Call sites name events by their telemetry constants (telemetry.AGENT_START...).
    emitted: set[tuple[str, ...]] = set()
    for path in SRC.rglob("*.py"):
        if path.name == "telemetry.py":
            continue
        for match in re.finditer(r"telemetry\.([A-Z][A-Z_]+)\b", path.read_text()):
            value = getattr(telemetry, match[1])
            if isinstance(value, tuple) and all(isinstance(part, str) for part in value):
                emitted.add(value)
    assert emitted
    assert set(telemetry.EVENTS) <= set(TELEMETRY_EVENTS)
    assert emitted <= set(TELEMETRY_EVENTS)


def _debugger_handlers() -> list[str]:
    return sorted(
        {hid for hid, _ in telemetry.list_handlers() if hid.startswith("sagents.web.debugger")}
    )


async def test_telemetry_handler_lives_with_the_lifespan(runtime: Runtime) -> None:
    app = debugger_app(runtime)
    handler_id = app.counters.handler_id
    assert _debugger_handlers() == [handler_id]
    async with serve(host_app(app)):
        assert _debugger_handlers() == [handler_id]
    assert _debugger_handlers() == []
    await runtime.start_agent(demo_agent("after"))
    assert app.counters.snapshot()["sagents.agent.start"] == 0  # no longer counting
    async with app:
        assert _debugger_handlers() == [handler_id]
    await app.aclose()  # idempotent
    assert _debugger_handlers() == []


async def test_two_apps_count_independently_and_gc_detaches(runtime: Runtime) -> None:
    first, second = debugger_app(runtime), debugger_app(runtime)
    assert len(_debugger_handlers()) == 2
    await runtime.start_agent(demo_agent("alpha"))
    assert first.counters.snapshot()["sagents.agent.start"] == 1
    assert second.counters.snapshot()["sagents.agent.start"] == 1
    await first.aclose()
    del second
    gc.collect()
    assert _debugger_handlers() == []


# -- the page ------------------------------------------------------------------------------------


async def test_page_is_served_relative_to_its_mount(debugger: DebuggerApp) -> None:
    async with client(debugger) as http:
        page = await http.get("/debug/")
        script = await http.get("/debug/static/app.js")
        module = await http.get("/debug/static/render.js")
        style = await http.get("/debug/static/style.css")
        missing = await http.get("/debug/static/nope.js")
    assert page.status_code == 200
    assert '<base href="/debug/">' in page.text
    assert "{{base}}" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.status_code == module.status_code == style.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "import" in script.text
    assert "text/css" in style.headers["content-type"]
    assert missing.status_code == 404


def test_bad_configuration_is_refused() -> None:
    runtime = Runtime()
    with pytest.raises(ConfigurationError, match="token"):
        debugger_app(runtime, token="")
    with pytest.raises(ConfigurationError, match="interval"):
        debugger_app(runtime, interval=0)
    assert _debugger_handlers() == []  # nothing attached by a refused app


# -- access: loopback only -----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
async def test_loopback_clients_are_served(debugger: DebuggerApp, address: str) -> None:
    async with client(debugger, address=address) as http:
        assert (await http.get("/debug/api/agents")).status_code == 200


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.2", "::2", "not-an-ip"])
async def test_other_clients_get_403(debugger: DebuggerApp, address: str) -> None:
    async with client(debugger, address=address) as http:
        for response in (
            await http.get("/debug/"),
            await http.get("/debug/api/agents"),
            await http.post("/debug/api/agents/alpha/stop"),
        ):
            assert response.status_code == 403
            assert "loopback" in response.json()["error"]


@pytest.mark.parametrize(
    ("headers", "word"),
    [
        ({"X-Forwarded-For": "203.0.113.9"}, "proxy"),
        ({"Forwarded": "for=203.0.113.9"}, "proxy"),
        ({"X-Real-IP": "203.0.113.9"}, "proxy"),
        ({"Host": "debug.example.com"}, "host name"),
        ({"Host": "attacker.test:8000"}, "host name"),
    ],
)
async def test_loopback_mode_refuses_proxies_and_foreign_hosts(
    debugger: DebuggerApp, headers: dict[str, str], word: str
) -> None:
    async with client(debugger, headers=headers) as http:
        response = await http.get("/debug/api/agents")
    assert response.status_code == 403
    assert word in response.json()["error"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:9", "[::1]:8000", "app.localhost"])
async def test_loopback_host_names_are_accepted(debugger: DebuggerApp, host: str) -> None:
    async with client(debugger, headers={"Host": host}) as http:
        assert (await http.get("/debug/api/agents")).status_code == 200


async def test_cross_origin_requests_are_refused(runtime: Runtime, debugger: DebuggerApp) -> None:
    await runtime.start_agent(demo_agent("alpha"))
    async with client(debugger) as http:
        foreign = await http.post(
            "/debug/api/agents/alpha/stop", headers={"Origin": "http://evil.test"}
        )
        null = await http.get("/debug/api/agents", headers={"Origin": "null"})
        same = await http.get("/debug/api/agents", headers={"Origin": "http://localhost"})
    assert foreign.status_code == null.status_code == 403
    assert "cross-origin" in foreign.json()["error"]
    assert same.status_code == 200
    assert runtime.list_running_agents() == ["alpha"]


# -- access: with a token ------------------------------------------------------------------------


async def test_token_mode_needs_the_token(runtime: Runtime) -> None:
    async with token_client(
        runtime, address="10.0.0.5", base_url="http://debug.example.com"
    ) as http:
        missing = await http.get("/debug/api/agents")
        wrong = await http.get("/debug/api/agents", headers={"Authorization": "Bearer nope"})
        wrong_query = await http.get("/debug/api/agents?token=nope")
        basic = await http.get("/debug/api/agents", headers={"Authorization": "Basic s3cret"})
        bearer = await http.get("/debug/api/agents", headers={"Authorization": "Bearer s3cret"})
        query = await http.get("/debug/api/agents?token=s3cret")
    assert missing.status_code == wrong.status_code == wrong_query.status_code == 401
    assert basic.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "token" in missing.json()["error"]
    assert wrong.json() == {"error": "wrong debugger token"}
    assert bearer.status_code == query.status_code == 200


async def test_token_in_the_page_url_becomes_a_cookie(runtime: Runtime) -> None:
    async with token_client(
        runtime, address="10.0.0.5", base_url="http://debug.example.com"
    ) as http:
        redirect = await http.get("/debug/?token=s3cret&x=1")
        assert redirect.status_code == 303
        assert redirect.headers["location"] == "/debug/?x=1"
        cookie = redirect.headers["set-cookie"]
        assert f"{COOKIE_NAME}=s3cret" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/debug/" in cookie
        # The client keeps the cookie: later requests need nothing else.
        assert (await http.get("/debug/")).status_code == 200
        assert (await http.get("/debug/api/telemetry")).status_code == 200
        http.cookies.clear()
        http.cookies.set(COOKIE_NAME, "forged", domain="debug.example.com")
        assert (await http.get("/debug/api/agents")).status_code == 401


async def test_token_mode_still_refuses_cross_origin(runtime: Runtime) -> None:
    async with token_client(runtime, headers={"Authorization": "Bearer s3cret"}) as http:
        response = await http.get("/debug/api/agents", headers={"Origin": "http://evil.test"})
    assert response.status_code == 403


# -- the websocket -------------------------------------------------------------------------------


async def receive(socket: ClientConnection, wanted: str, **fields: Any) -> dict[str, Any]:
    """The next message of type ``wanted`` whose fields match (others are skipped)."""
    while True:
        message: dict[str, Any] = json.loads(await socket.recv())
        if message["type"] == wanted and all(message.get(k) == v for k, v in fields.items()):
            return message


async def receive_event(socket: ClientConnection, channel: str, event_type: str) -> dict[str, Any]:
    while True:
        message = await receive(socket, "event", channel=channel)
        if message["event"]["type"] == event_type:
            return message


async def test_websocket_streams_the_list_and_telemetry(runtime: Runtime) -> None:
    app = debugger_app(runtime, interval=0.05)
    async with serve(host_app(app)) as base, connect(f"{_ws(base)}/debug/ws") as socket:
        first = await receive(socket, "agents")
        assert first["agents"] == []
        assert first["ready"] is True
        assert set(first["telemetry"]) == {".".join(e) for e in TELEMETRY_EVENTS}
        await runtime.start_agent(demo_agent("alpha"), conversation_id="c1")
        while not (update := await receive(socket, "agents"))["agents"]:
            pass
        (row,) = update["agents"]
        assert row["id"] == "alpha"
        assert row["conversation_id"] == "c1"
        assert update["telemetry"]["sagents.agent.start"] == 1


async def test_websocket_follows_the_selected_agent(runtime: Runtime) -> None:
    app = debugger_app(runtime, interval=0.05)
    handle = await runtime.start_agent(demo_agent("alpha"))
    async with serve(host_app(app)) as base, connect(f"{_ws(base)}/debug/ws") as socket:
        await socket.send(json.dumps({"type": "select", "agent_id": "alpha"}))
        selected = await receive(socket, "selected")
        assert selected == {"type": "selected", "agent_id": "alpha", "running": True}
        # The debugger subscribed to both channels before acknowledging... or right after:
        await wait_for(lambda: runtime.agent_info_nowait("alpha").subscriber_count == 2)
        await handle.add_message("asyncio")
        status = await receive_event(socket, "main", "status_changed")
        assert status["agent_id"] == "alpha"
        assert status["event"]["status"] == "running"
        update = await receive_event(socket, "debug", "agent_state_update")
        assert update["event"]["state"]["messages"][0]["data"]["content"] == "asyncio"
        todos = await receive_event(socket, "main", "todos_updated")
        assert len(todos["event"]["todos"]) == 3
        await receive_event(socket, "main", "status_changed")  # interrupted
        # Unselecting detaches both subscriptions.
        await socket.send(json.dumps({"type": "select", "agent_id": None}))
        assert (await receive(socket, "selected"))["agent_id"] is None
        await wait_for(lambda: runtime.agent_info_nowait("alpha").subscriber_count == 0)


async def test_websocket_follows_an_agent_across_restarts(runtime: Runtime) -> None:
    app = debugger_app(runtime, interval=0.05)
    await runtime.start_agent(demo_agent("alpha"))
    async with serve(host_app(app)) as base:
        async with connect(f"{_ws(base)}/debug/ws?agent_id=alpha") as socket:
            assert (await receive(socket, "selected"))["running"] is True
            await wait_for(lambda: runtime.agent_info_nowait("alpha").subscriber_count == 2)
            await runtime.stop("alpha", reason="maintenance")
            shutdown = await receive_event(socket, "main", "agent_shutdown")
            assert shutdown["event"]["reason"] == "maintenance"
            handle = await runtime.start_agent(demo_agent("alpha"))
            await handle.add_message("again")
            status = await receive_event(socket, "main", "status_changed")
            assert status["event"]["status"] == "running"
        # Closing the socket detaches its subscriptions.
        await wait_for(lambda: runtime.agent_info_nowait("alpha").subscriber_count == 0)


async def test_websocket_selecting_an_agent_that_is_not_running(runtime: Runtime) -> None:
    app = debugger_app(runtime, interval=0.05)
    async with serve(host_app(app)) as base, connect(f"{_ws(base)}/debug/ws") as socket:
        await socket.send(json.dumps({"type": "select", "agent_id": "later"}))
        assert (await receive(socket, "selected")) == {
            "type": "selected",
            "agent_id": "later",
            "running": False,
        }
        handle = await runtime.start_agent(demo_agent("later"))
        await handle.add_message("hello")
        status = await receive_event(socket, "main", "status_changed")
        assert status["agent_id"] == "later"


async def test_websocket_while_the_runtime_is_down(runtime: Runtime) -> None:
    app = debugger_app(runtime, interval=0.05)
    async with serve(host_app(app)) as base, connect(f"{_ws(base)}/debug/ws") as socket:
        await runtime.shutdown()
        assert (await receive(socket, "agents", ready=False))["agents"] == []
        await socket.send(json.dumps({"type": "select", "agent_id": "alpha"}))
        assert (await receive(socket, "selected"))["running"] is False


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("not json", "send JSON text messages"),
        ('{"type": "dance"}', "unknown message"),
        ("[1, 2]", "unknown message"),
        ('{"type": "select", "agent_id": 7}', "agent_id must be"),
        ('{"type": "select", "agent_id": ""}', "agent_id must be"),
        (b"\x00binary", "send JSON text messages"),
    ],
)
async def test_websocket_bad_messages_get_an_error(
    runtime: Runtime, payload: str | bytes, error: str
) -> None:
    app = debugger_app(runtime, interval=0.05)
    async with serve(host_app(app)) as base, connect(f"{_ws(base)}/debug/ws") as socket:
        await socket.send(payload)
        message = await receive(socket, "error")
        assert error in message["error"]
        # The socket stays usable.
        await socket.send(json.dumps({"type": "select", "agent_id": None}))
        assert (await receive(socket, "selected"))["agent_id"] is None


async def test_websocket_access_rules(runtime: Runtime) -> None:
    app = debugger_app(runtime, token="s3cret", interval=0.05)
    async with serve(host_app(app)) as base:
        url = f"{_ws(base)}/debug/ws"
        for kwargs in (
            {},
            {"additional_headers": {"Authorization": "Bearer wrong"}},
            {
                "additional_headers": {"Authorization": "Bearer s3cret"},
                "origin": "http://evil.test",
            },
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, **kwargs):
                    pass
            assert refused.value.response.status_code == 403
        for url_, kwargs in (
            (url, {"additional_headers": {"Authorization": "Bearer s3cret"}}),
            (f"{url}?token=s3cret", {}),
            (url, {"additional_headers": {"Cookie": f"{COOKIE_NAME}=s3cret"}}),
        ):
            async with connect(url_, **kwargs) as socket:
                assert (await receive(socket, "agents"))["ready"] is True


def connect(url: str, **kwargs: Any) -> ws_connect:
    # Unbounded: these tests stop reading mid-stream, and a client whose queue is full stops
    # reading the socket, so it would not see the server's close frame until its timeout.
    return ws_connect(url, max_queue=None, **kwargs)


def _ws(base: str) -> str:
    return base.replace("http://", "ws://", 1)
