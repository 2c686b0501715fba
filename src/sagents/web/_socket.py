"""The conversation websocket: live events out, actions in (issue rules 2–4).

``/ws/conversations/{id}?after_seq=N&instance=T`` — one socket per open tab.

**Presence.** Each socket is one viewer of ``conversation:<id>``, tracked under a key of its own
from the handler's task, so it disappears however the socket ends. When the last tab closes, the
agent's grace period starts and it shuts down with reason ``no_viewers``; the next message
restarts it through ``Session.ensure_running`` with its state restored.

**Events out.** A *pump* follows the conversation's agent across server instances. While the
agent runs it forwards that instance's events; when it stops the pump waits, through
``runtime.watch``, for the next instance and subscribes to it with ``after_seq=0``, so the
instance's replay buffer hands over everything it published before the pump got there (nothing
is lost between the watch seeing the first event and the subscription). Frames::

    {"type": "attached", "status": ..., "instance": T, "resumed": bool}
    {"type": "event", "instance": T, "event": {...event.to_json()...}}
    {"type": "detached", "status": "not_running"}
    {"type": "ok", "action": ..., "ref": ...}  |  {"type": "pong", "ref": ...}
    {"type": "error", "code": ..., "message": ..., "ref": ...}

Every server instance numbers its events from 1, so ``instance`` (``AgentInfo.instance``) says
which numbering a ``seq`` belongs to. A tab that reconnects passes the last ``seq`` and
``instance`` it saw: if that instance still runs, the pump replays what the tab missed
(``resumed: true``); otherwise the tab reloads the conversation over HTTP.

**Actions in.** ``{"type": "send", "text": ...}``, ``{"type": "cancel"}``,
``{"type": "decide", "decisions": [...]}``, ``{"type": "ping"}``, each with an optional
``ref`` echoed in the reply. Every inbound frame is checked for size, kind (text), JSON and
schema; a bad one, or an action the agent refuses, gets an error frame — the socket, its handler
and the agent carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sagents._errors import (
    AgentNotRunning,
    ConversationNotFound,
    InvalidDecision,
    InvalidTransition,
    RegistryUnavailable,
    SagentsError,
)
from sagents.events import Event, SubscriptionOverflow
from sagents.web._identity import identity_of
from sagents.web._services import WebServices

__all__ = ["ClientFrame", "conversation_socket", "error_code"]

_log = logging.getLogger("sagents.web")
_connections = itertools.count(1)


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ref: Annotated[str, Field(max_length=64)] | None = None


class SendFrame(_Frame):
    type: Literal["send"]
    text: Annotated[str, Field(min_length=1)]


class CancelFrame(_Frame):
    type: Literal["cancel"]


class PingFrame(_Frame):
    type: Literal["ping"]


class ApproveDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["approve"]


class EditDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["edit"]
    arguments: dict[str, Any]


class RejectDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["reject"]
    message: Annotated[str, Field(max_length=2000)] | None = None


DecisionFrame = Annotated[
    ApproveDecision | EditDecision | RejectDecision, Field(discriminator="type")
]


class DecideFrame(_Frame):
    type: Literal["decide"]
    decisions: Annotated[list[DecisionFrame], Field(min_length=1, max_length=100)]


ClientFrame = Annotated[
    SendFrame | CancelFrame | DecideFrame | PingFrame, Field(discriminator="type")
]
_frames: TypeAdapter[SendFrame | CancelFrame | DecideFrame | PingFrame] = TypeAdapter(ClientFrame)


def error_code(exc: BaseException) -> str:
    """The error code (and HTTP status family) of an exception from the services."""
    if isinstance(exc, ConversationNotFound):
        return "not_found"
    if isinstance(exc, InvalidDecision):
        return "invalid_decision"
    if isinstance(exc, InvalidTransition | AgentNotRunning):
        return "conflict"
    if isinstance(exc, RegistryUnavailable):
        return "unavailable"
    return "error"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class _Connection:
    """One open tab: its socket, its viewer entry and its event pump."""

    def __init__(self, ws: WebSocket, services: WebServices, scope: str, conversation_id: str):
        self.ws = ws
        self.services = services
        self.scope = scope
        self.conversation_id = conversation_id
        self.agent_id = services.agent_id(conversation_id)
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        # The pump and the reader both send; a lock keeps frames whole and in order.
        async with self._send_lock:
            await self.ws.send_text(json.dumps(frame, default=str))

    async def error(self, code: str, message: str, ref: str | None = None) -> None:
        await self.send({"type": "error", "code": code, "message": message, "ref": ref})

    # -- events out ------------------------------------------------------------------------------

    async def pump(self, after_seq: int | None, instance: int | None) -> None:
        services, runtime = self.services, self.services.runtime
        current = services.instance(self.conversation_id)
        resumed = after_seq is not None and instance is not None and current == instance
        after = after_seq if resumed else None
        while True:
            watch = runtime.watch(self.agent_id)
            try:
                if watch.pending:
                    await self.send({"type": "detached", "status": "not_running"})
                    await anext(watch)  # the next instance published its first event
                    after, resumed = 0, False
            finally:
                await watch.aclose()
            try:
                subscription = runtime.agent(self.agent_id).subscribe(after_seq=after)
            except AgentNotRunning:
                after, resumed = 0, False  # it ended already; wait for the next one
                continue
            instance = services.instance(self.conversation_id)
            async with subscription:
                await self.send(
                    {
                        "type": "attached",
                        "status": services.status(self.scope, self.conversation_id),
                        "instance": instance,
                        "resumed": resumed,
                    }
                )
                async for event in subscription:
                    await self._forward(event, instance)
            after, resumed = 0, False

    async def _forward(self, event: Event, instance: int | None) -> None:
        data = event.to_json()
        if isinstance(event, SubscriptionOverflow):
            data["reload"] = True  # the tab missed events: it reloads over HTTP
        await self.send({"type": "event", "instance": instance, "event": data})

    # -- actions in ------------------------------------------------------------------------------

    async def read(self) -> None:
        limit = self.services.config.max_frame_bytes
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.error("bad_frame", "send JSON text frames, not binary ones")
                continue
            if len(text.encode()) > limit:
                await self.error("too_large", f"frames are limited to {limit} bytes")
                continue
            try:
                raw = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
                await self.error("bad_json", "the frame is not valid JSON")
                continue
            try:
                frame = _frames.validate_python(raw)
            except ValidationError as exc:
                ref = raw.get("ref") if isinstance(raw, dict) else None
                await self.error("invalid", _validation_message(exc), ref if _short(ref) else None)
                continue
            await self._act(frame)

    async def _act(self, frame: SendFrame | CancelFrame | DecideFrame | PingFrame) -> None:
        services, scope, cid = self.services, self.scope, self.conversation_id
        try:
            if isinstance(frame, PingFrame):
                await self.send({"type": "pong", "ref": frame.ref})
                return
            if isinstance(frame, SendFrame):
                if len(frame.text) > services.config.max_message_chars:
                    limit = services.config.max_message_chars
                    await self.error("invalid", f"text: at most {limit} characters", frame.ref)
                    return
                await services.send(scope, cid, frame.text)
            elif isinstance(frame, CancelFrame):
                await services.cancel(scope, cid)
            else:
                await services.decide(scope, cid, [d.model_dump() for d in frame.decisions])
        except SagentsError as exc:
            await self.error(error_code(exc), str(exc), frame.ref)
            return
        except Exception:
            _log.exception("websocket action %s on conversation %s failed", frame.type, cid)
            await self.error("internal", "the server failed to do that; try again", frame.ref)
            return
        await self.send({"type": "ok", "action": frame.type, "ref": frame.ref})


def _short(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 64


def _number(text: str | None) -> int | None:
    """A non-negative integer query parameter, or None when absent or not one."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


async def conversation_socket(ws: WebSocket) -> None:
    """The websocket endpoint of one conversation (see the module docs for the protocol)."""
    services: WebServices = ws.app.state.services
    conversation_id = str(ws.path_params["conversation_id"])
    scope = identity_of(ws.scope)
    await ws.accept()
    if not _same_origin(ws):
        # Browsers send cookies on websocket handshakes from other origins of the same site
        # (another port of localhost): only the app's own pages may act for the identity.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.send_text(
                json.dumps({"type": "error", "code": "forbidden", "message": "cross-origin socket"})
            )
            await ws.close(code=4403)
        return
    try:
        if scope is None:
            raise ConversationNotFound("no identity cookie; load the page first")
        await services.conversation(scope, conversation_id)
    except ConversationNotFound as exc:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.send_text(
                json.dumps({"type": "error", "code": "not_found", "message": str(exc)})
            )
            await ws.close(code=4404)
        return
    connection = _Connection(ws, services, scope, conversation_id)
    topic = services.session_config.presence_topic(conversation_id)
    key = f"tab-{next(_connections)}"
    # Tracked from this task: the viewer disappears when the handler ends, however it ends.
    await services.presence.track(topic, key, {"identity": scope})
    after_seq = _number(ws.query_params.get("after_seq"))
    instance = _number(ws.query_params.get("instance"))
    try:
        # Whichever side ends first (the tab left, or the pump failed) ends the other.
        async with asyncio.TaskGroup() as tasks:
            pump = tasks.create_task(_guarded(connection.pump(after_seq, instance)))
            reader = tasks.create_task(_guarded(connection.read()))
            pump.add_done_callback(lambda _: reader.cancel())
            reader.add_done_callback(lambda _: pump.cancel())
    finally:
        await services.presence.untrack(topic, key)
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(code=1011)


def _same_origin(ws: WebSocket) -> bool:
    """No Origin header (not a browser), or the origin is this very host."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == ws.headers.get("host", "").lower()


async def _guarded(work: Any) -> None:
    """Run one side of a connection; a closed socket just ends it, a bug is logged."""
    try:
        await work
    except (WebSocketDisconnect, OSError):
        pass  # the client went away while we were sending or receiving
    except RuntimeError as exc:
        # Starlette's way of saying the socket closed under a send or receive; anything else
        # is a bug worth a traceback.
        if "websocket" not in str(exc).lower() and "close" not in str(exc).lower():
            _log.exception("websocket handler failed")
    except Exception:
        _log.exception("websocket handler failed")
