"""The live debugger: an operator page over one runtime, served at ``/debug`` by the demo.

It shows the running agents (status, messages, uptime, viewers, subscribers, inactivity
remaining), updated live; for the agent you pick, its ``main`` and ``debug`` event streams and its
current state (messages, todos, metadata, interrupt), with stop and cancel buttons; and counters
of every telemetry event. See ``docs/debugger.md``.

Endpoints, relative to where the app is mounted (all JSON; errors are ``{"error": "..."}``):

====================================  ========================================================
``GET  /``                            the page (plain HTML and ES modules, no build step)
``GET  /api/agents``                  ``{"agents": [...]}``, one :func:`agent_json` per agent
``GET  /api/agents/{id}``             ``{"agent": ..., "state": State.to_dict()}``; 404
``POST /api/agents/{id}/stop``        stop it (reason ``"debugger"``); 404
``POST /api/agents/{id}/cancel``      cancel its run; 404, 409 when nothing runs
``GET  /api/telemetry``               ``{"counters": {"sagents.llm.response": 3, ...}}``
``WS   /ws``                          the live feed (below)
====================================  ========================================================

The websocket sends ``{"type": "agents", "agents": [...], "telemetry": {...}, "ready": bool}``
every ``interval`` seconds. The client sends ``{"type": "select", "agent_id": "..."}`` (or
``null`` to stop following); the server answers ``{"type": "selected", ...}`` and then streams
that agent's events as ``{"type": "event", "agent_id", "channel", "event": event.to_json()}``.
Following uses ``runtime.watch``, so it survives restarts of the agent, and after a
``subscription_overflow`` (a slow browser) it re-attaches and carries on.

Choices: the agent list is read with ``runtime.agent_infos()`` (with a distributed backend,
the agents of the whole cluster, each with the host it runs on) and never counts as activity, so
watching the page does not keep idle agents alive; reading an agent's state does, so the
page reads it only when you pick an agent or its status changes, and otherwise updates it from
``agent_state_update`` debug events. The debugger's own subscriptions show in
``subscriber_count`` and, while it follows an agent, the loop builds debug events.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from sagents._errors import (
    AgentNotRunning,
    ConfigurationError,
    InvalidTransition,
    RegistryUnavailable,
)
from sagents._resource import AsyncResource
from sagents.events import Channel, SubscriptionOverflow
from sagents.execution import Middleware
from sagents.persistence import scope_key
from sagents.runtime import AgentInfo, Runtime
from sagents.web._debugger_access import AccessGuard
from sagents.web._debugger_telemetry import TelemetryCounters

__all__ = ["DebuggerApp", "agent_json", "debugger_app"]

STATIC_DIR = Path(__file__).parent / "static" / "debug"
#: The reason given to ``runtime.stop`` by the stop button.
STOP_REASON = "debugger"
_CHANNELS: tuple[Channel, ...] = ("main", "debug")
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'self'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def debugger_app(
    runtime: Runtime, *, token: str | None = None, interval: float = 1.0
) -> DebuggerApp:
    """The live debugger of ``runtime`` as an ASGI app, to mount (e.g. at ``/debug``).

    Args:
        runtime: the runtime whose agents it shows.
        token: the shared secret every request must carry; None serves loopback clients only.
        interval: seconds between two agent lists on the websocket.

    Raises:
        ConfigurationError: an empty token or a non-positive interval.
    """
    return DebuggerApp(runtime, token=token, interval=interval)


def agent_json(info: AgentInfo) -> dict[str, Any]:
    """The JSON row of one agent in the debugger's list.

    Its ``scope`` is the scope's key (:func:`sagents.persistence.scope_key`: a text scope
    as itself, a tuple or a dataclass as the text the stores keep), so the row stays JSON.
    """
    try:
        scope = scope_key(info.scope)
    except ConfigurationError:
        # No stable key (an agent started outside sessions with such a scope): shown, not keyed.
        scope = repr(info.scope)
    return {
        "id": info.agent_id,
        "status": info.status.value,
        "message_count": info.message_count,
        "uptime": info.uptime,
        "viewer_count": info.viewer_count,
        "subscriber_count": info.subscriber_count,
        "inactivity_remaining": info.inactivity_remaining,
        "conversation_id": info.conversation_id,
        "has_interrupt": info.has_interrupt,
        "queued_messages": info.queued_messages,
        "todo_count": info.todo_count,
        "scope": scope,
        "metadata": info.metadata,
        "node": info.node,
    }


def _summary(middleware: Middleware) -> Mapping[str, object] | str:
    """The middleware's ``debug_summary()``; a failing one is said, not a failed page."""
    try:
        return middleware.debug_summary()
    except Exception as exc:
        return f"debug_summary() failed: {type(exc).__name__}: {exc}"


def _dumps(payload: Any) -> str:
    # ``default=str``: middleware data and tool results may hold anything; show, do not fail.
    return json.dumps(payload, default=str, separators=(",", ":"), ensure_ascii=False)


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _dumps(content).encode()


def _error(status: int, message: str) -> Response:
    return _JSON({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


class DebuggerApp(AsyncResource):
    """The debugger's ASGI app (build it with :func:`debugger_app`).

    Its telemetry handler is attached from construction until the app's lifespan ends, or until
    :meth:`aclose`. Starlette does not run the lifespan of mounted apps, so a host app enters it
    from its own lifespan: ``async with debugger: yield``. An app dropped without either is
    detached when garbage-collected.
    """

    def __init__(self, runtime: Runtime, *, token: str | None, interval: float) -> None:
        if not interval > 0:
            raise ConfigurationError(f"the debugger interval must be positive, got {interval!r}")
        self.runtime = runtime
        self.interval = interval
        self._page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        routes = [
            Route("/", self._index, methods=["GET"]),
            Route("/api/agents", self._list, methods=["GET"]),
            Route("/api/telemetry", self._telemetry, methods=["GET"]),
            Route("/api/agents/{agent_id:path}/stop", self._stop, methods=["POST"]),
            Route("/api/agents/{agent_id:path}/cancel", self._cancel, methods=["POST"]),
            Route("/api/agents/{agent_id:path}", self._detail, methods=["GET"]),
            WebSocketRoute("/ws", self._socket),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        self._routes = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={
                HTTPException: self._http_error,
                AgentNotRunning: self._not_running,
                InvalidTransition: self._invalid_transition,
                RegistryUnavailable: self._unavailable,
            },
        )
        self._app: ASGIApp = AccessGuard(self._routes, token=token)
        # Last, so that a refused configuration never attaches a handler.
        self.counters = TelemetryCounters()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def __aenter__(self) -> Self:
        self.counters.attach()
        return self

    async def aclose(self) -> None:
        """Detach the telemetry handler (the counts stay readable); idempotent."""
        self.counters.detach()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: object) -> AsyncIterator[None]:
        async with self:
            yield

    # -- reading -------------------------------------------------------------------------------

    async def agents(self) -> list[dict[str, Any]]:
        """The running agents, sorted by id (never counts as activity).

        Raises:
            RegistryUnavailable: the runtime is starting or stopping.
        """
        infos = await self.runtime.agent_infos()
        return [agent_json(info) for info in sorted(infos, key=lambda info: info.agent_id)]

    async def _overview(self) -> dict[str, Any]:
        try:
            agents, ready = await self.agents(), self.runtime.ready()
        except RegistryUnavailable:
            agents, ready = [], False
        return {
            "type": "agents",
            "agents": agents,
            "telemetry": self.counters.snapshot(),
            "ready": ready,
        }

    # -- HTTP ----------------------------------------------------------------------------------

    async def _index(self, request: Request) -> Response:
        base = html.escape(f"{request.scope.get('root_path', '').rstrip('/')}/", quote=True)
        return HTMLResponse(self._page.replace("{{base}}", base), headers=_PAGE_HEADERS)

    async def _list(self, request: Request) -> Response:
        return _JSON({"agents": await self.agents()}, headers={"Cache-Control": "no-store"})

    async def _telemetry(self, request: Request) -> Response:
        return _JSON({"counters": self.counters.snapshot()}, headers={"Cache-Control": "no-store"})

    async def _detail(self, request: Request) -> Response:
        handle = self.runtime.agent(request.path_params["agent_id"])
        info = await handle.info()
        state = await handle.export_state()
        agent = await handle.get_agent()
        middleware = [
            {"name": mw.name, "key": mw.key, "summary": _summary(mw)}
            for mw in agent.middleware_instances
        ]
        return _JSON(
            {"agent": agent_json(info), "state": state, "middleware": middleware},
            headers={"Cache-Control": "no-store"},
        )

    async def _stop(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        await self.runtime.stop(agent_id, reason=STOP_REASON)
        return _JSON({"stopped": agent_id})

    async def _cancel(self, request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        await self.runtime.cancel(agent_id)
        return _JSON({"cancelled": agent_id})

    @staticmethod
    async def _http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # registered for HTTPException only
            return _error(500, "internal error")
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @staticmethod
    async def _not_running(request: Request, exc: Exception) -> Response:
        return _error(404, f"agent {request.path_params.get('agent_id')!r} is not running")

    @staticmethod
    async def _invalid_transition(request: Request, exc: Exception) -> Response:
        return _error(409, f"{exc}")

    @staticmethod
    async def _unavailable(request: Request, exc: Exception) -> Response:
        return _error(503, f"{exc}")

    # -- the websocket -------------------------------------------------------------------------

    async def _socket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        socket = _Socket(websocket)
        following: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tasks:
            ticker = tasks.create_task(self._tick(socket))
            try:
                wanted: str | None = websocket.query_params.get("agent_id") or None
                if wanted is not None:
                    following = await self._select(socket, tasks, None, wanted)
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    request = _parse_request(message)
                    if isinstance(request, str):
                        await socket.send({"type": "error", "error": request})
                        continue
                    following = await self._select(socket, tasks, following, request.agent_id)
            finally:
                socket.closed = True
                ticker.cancel()
                if following is not None:
                    following.cancel()

    async def _select(
        self,
        socket: _Socket,
        tasks: asyncio.TaskGroup,
        previous: asyncio.Task[None] | None,
        agent_id: str | None,
    ) -> asyncio.Task[None] | None:
        if previous is not None:
            previous.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        try:
            running = agent_id is not None and await self.runtime.get_status(agent_id) is not None
        except RegistryUnavailable:
            running = False
        await socket.send({"type": "selected", "agent_id": agent_id, "running": running})
        if agent_id is None:
            return None
        return tasks.create_task(self._follow(socket, agent_id))

    async def _tick(self, socket: _Socket) -> None:
        # A periodic push, not a poll for a condition: uptimes and deadlines change every second.
        while True:
            if not await socket.send(await self._overview()):
                return
            await asyncio.sleep(self.interval)

    async def _follow(self, socket: _Socket, agent_id: str) -> None:
        async with asyncio.TaskGroup() as tasks:
            for channel in _CHANNELS:
                tasks.create_task(self._stream(socket, agent_id, channel))

    async def _stream(self, socket: _Socket, agent_id: str, channel: Channel) -> None:
        while not socket.closed:
            async with self.runtime.watch(agent_id, channel) as events:
                async for event in events:
                    payload = {
                        "type": "event",
                        "agent_id": agent_id,
                        "channel": channel,
                        "event": event.to_json(),
                    }
                    if not await socket.send(payload):
                        return
                    if isinstance(event, SubscriptionOverflow):
                        break  # that subscription ended: watch the current instance again


class _Request:
    __slots__ = ("agent_id",)

    def __init__(self, agent_id: str | None) -> None:
        self.agent_id = agent_id


def _parse_request(message: Mapping[str, Any]) -> _Request | str:
    """A client message, or the error to send back."""
    text = message.get("text")
    if text is None:
        return "send JSON text messages"
    try:
        data = json.loads(text)
    except ValueError:
        return "send JSON text messages"
    if not isinstance(data, dict) or data.get("type") != "select":
        return 'unknown message; send {"type": "select", "agent_id": "..."}'
    agent_id = data.get("agent_id")
    if agent_id is not None and (not isinstance(agent_id, str) or not agent_id):
        return "agent_id must be a non-empty string or null"
    return _Request(agent_id)


class _Socket:
    """One websocket with a lock, so the ticker and the event streams never interleave frames."""

    __slots__ = ("_lock", "_websocket", "closed")

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, payload: dict[str, Any]) -> bool:
        """Send one message; False once the client is gone (the caller then stops)."""
        if self.closed:
            return False
        text = _dumps(payload)
        async with self._lock:
            try:
                await self._websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True
                return False
        return True
