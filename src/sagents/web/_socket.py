"""The conversation websocket: live events out, actions in.

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

**A tab that arrives mid-run** (a new tab, a reload: ``resumed: false``) reads the conversation
over HTTP, and a snapshot holds only what was saved: not the reply being streamed, nor why the
last run failed. So right after ``attached`` the pump sends, as ordinary event frames, the
``llm_deltas`` of the message in progress since its first chunk and, when the last run ended in
an error, its ``status_changed`` to ``error`` (the reason is its ``data``), both taken from the
replay buffer at the very moment the live subscription starts: the tab shows the whole partial
reply, then its live continuation, with no gap and no chunk twice — for an agent of this
process; a Ray host's replay has no such moment (see ``_catch_up``). A resumed tab needs none of
this: the replay after its ``seq`` holds the rest of the deltas or, once the message is complete
and its deltas are compacted away, the whole message as ``llm_message``.

**Actions in.** ``{"type": "send", "text": ...}``, ``{"type": "cancel"}``,
``{"type": "decide", "decisions": [...]}`` (approve, edit, reject, respond — or answer a
question: ``{"type": "answer", "answers": [...]}``), ``{"type": "dismiss"}`` (clear a pending
approval or question without deciding), ``{"type": "reset", "files": "keep"}`` (start the
conversation over), ``{"type": "retry"}`` (run again after a run that ended in an error),
``{"type": "ping"}``, each with an optional ``ref`` echoed in the reply. The frames bound the
shape of a decision (how many answers, how many choices); whether it fits the pending call is
the core's check (``parse_decisions``), answered with ``invalid_decision``.
Every inbound frame is checked for size, kind (text), JSON and schema, with the bounds the REST
API applies too (storable text, the shape of edited arguments: see ``_limits.py``); a bad one,
or an action the agent refuses, gets an error frame — the socket, its handler and the agent
carry on.

**Refusals at connection.** Before anything else the socket is accepted and checked; a refusal
is an error frame, then a close whose code is 4000 plus the HTTP status the REST API would give:
4403 (another origin), 4422 (an id no conversation can have), 4404 (no such conversation for
this identity), 4503 (storage unavailable), 4500 (anything else).

**Errors out.** :func:`client_error` is the one translation of sagents errors for both doors:
what the client reads never quotes the database (its messages can name tables and values); the
detail goes to the log.

**A client that leaves** mid-conversation (before its reply, during a stream) ends the
connection quietly: one debug line, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sagents._errors import (
    AgentNotRunning,
    ConversationNotFound,
    ConversationOwnedElsewhere,
    InvalidDecision,
    InvalidOption,
    InvalidTransition,
    PersistenceFailed,
    RegistryUnavailable,
    SagentsError,
    StateConflict,
)
from sagents._interrupt import MAX_CHOICES, MAX_QUESTIONS
from sagents._status import Status
from sagents.events import (
    Event,
    LLMDeltas,
    LLMMessage,
    StatusChanged,
    SubscriptionOverflow,
)
from sagents.runtime._handle import AgentHandle
from sagents.runtime._publisher import Subscription
from sagents.runtime._reset import ResetFiles
from sagents.web._identity import identity_of, same_origin
from sagents.web._limits import ConversationId, StorableText, ToolArguments
from sagents.web._services import WebServices

__all__ = ["INTERNAL", "ClientError", "ClientFrame", "client_error", "conversation_socket"]

_log = logging.getLogger("sagents.web")


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ref: Annotated[str, Field(max_length=64)] | None = None


class SendFrame(_Frame):
    type: Literal["send"]
    # The length limit is the configuration's (max_message_chars), checked on use.
    text: Annotated[StorableText, Field(min_length=1)]


class CancelFrame(_Frame):
    type: Literal["cancel"]


class PingFrame(_Frame):
    type: Literal["ping"]


class RetryFrame(_Frame):
    type: Literal["retry"]


class ApproveDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["approve"]


class EditDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["edit"]
    arguments: ToolArguments


class RejectDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["reject"]
    message: Annotated[StorableText, Field(max_length=2000)] | None = None


class RespondDecision(BaseModel):
    """The person answers in place of the call (a question, or an approval that allows it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["respond"]
    # Empty or overlong text is refused by the core, with the words a person reads.
    message: StorableText


#: One answer: a choice or text, or the choices of a multiple-choice question.
AnswerValue = StorableText | Annotated[list[StorableText], Field(max_length=MAX_CHOICES)]


class AnswerDecision(BaseModel):
    """The answers to a call's questions, one per question, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["answer"]
    answers: Annotated[list[AnswerValue], Field(max_length=MAX_QUESTIONS)]


DecisionFrame = Annotated[
    ApproveDecision | EditDecision | RejectDecision | RespondDecision | AnswerDecision,
    Field(discriminator="type"),
]


class DecideFrame(_Frame):
    type: Literal["decide"]
    decisions: Annotated[list[DecisionFrame], Field(min_length=1, max_length=100)]


class DismissFrame(_Frame):
    type: Literal["dismiss"]


class ResetFrame(_Frame):
    type: Literal["reset"]
    files: ResetFiles = "keep"


_AnyFrame = (
    SendFrame | CancelFrame | DecideFrame | DismissFrame | ResetFrame | RetryFrame | PingFrame
)
ClientFrame = Annotated[_AnyFrame, Field(discriminator="type")]
_frames: TypeAdapter[_AnyFrame] = TypeAdapter(ClientFrame)
_conversation_ids: TypeAdapter[str] = TypeAdapter(ConversationId)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientError:
    """What a client is told about a failure: an HTTP status, an error code, a message.

    Attributes:
        hidden: the message does not say what failed (the cause may quote the database); the
            cause goes to the log instead (:meth:`log`).
    """

    status: int
    code: str
    message: str
    hidden: bool = False

    def log(self, exc: BaseException, doing: str) -> None:
        """Log the cause of a hidden failure for the operator; the client was told the rest."""
        if not self.hidden:
            return
        if self.status == 503:  # retryable: the client was told to try again
            _log.warning("%s: unavailable for now: %r", doing, exc, exc_info=exc)
        else:
            _log.error("%s failed: %r", doing, exc, exc_info=exc)


#: An unexpected failure of the server (a bug, or storage refusing a value).
INTERNAL = ClientError(
    status=500,
    code="internal",
    message="the server could not do that; try again, or reload the page",
    hidden=True,
)
_RETRY = ClientError(
    status=503,
    code="unavailable",
    message="the server cannot do that right now; try again in a moment",
    hidden=True,
)


def client_error(exc: SagentsError) -> ClientError:
    """Translate an error of the services into what the client is told (REST and websocket).

    The errors a client acts on keep their message. Storage errors and unexpected ones get a
    generic message — a storage error quotes the database driver, which can name tables,
    columns and stored values — and are marked ``hidden``: the caller logs their cause.
    """
    if isinstance(exc, ConversationNotFound):
        return ClientError(status=404, code="not_found", message=str(exc))
    if isinstance(exc, InvalidDecision):
        return ClientError(status=422, code="invalid_decision", message=str(exc))
    if isinstance(exc, InvalidOption):
        # A value the request chose that the operation refuses (a reset clearing files shared
        # with other conversations): the client's to change, and the message says how.
        return ClientError(status=422, code="invalid", message=str(exc))
    if isinstance(exc, InvalidTransition | AgentNotRunning):
        return ClientError(status=409, code="conflict", message=str(exc))
    if isinstance(exc, RegistryUnavailable):
        return ClientError(status=503, code="unavailable", message=str(exc))
    if isinstance(exc, ConversationOwnedElsewhere):
        # Another worker or host runs it: said in words (the owner's name is an operator's
        # detail, not the visitor's), and retryable: the lease passes when that process stops.
        return ClientError(
            status=409,
            code="owned_elsewhere",
            message=(
                "This conversation is open in another server process right now; try again in "
                "a few seconds."
            ),
        )
    if isinstance(exc, StateConflict):
        return ClientError(
            status=409,
            code="conflict",
            message="This conversation changed elsewhere; reload the page to see it.",
        )
    # PersistenceFailed: the database is unreachable or timed out. Other errors may declare
    # themselves worth a retry (e.g. a conversation run by another process for now).
    if isinstance(exc, PersistenceFailed) or getattr(exc, "retryable", False) is True:
        return _RETRY
    return INTERNAL


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
        self._gone_logged = False

    async def send(self, frame: dict[str, Any]) -> None:
        # The pump and the reader both send; a lock keeps frames whole and in order.
        async with self._send_lock:
            await self.ws.send_text(json.dumps(frame, default=str))

    async def error(self, code: str, message: str, ref: str | None = None) -> None:
        await self.send({"type": "error", "code": code, "message": message, "ref": ref})

    # -- events out ------------------------------------------------------------------------------

    async def pump(self, after_seq: int | None, instance: int | None) -> None:
        services, runtime = self.services, self.services.runtime
        current = (await services.running(self.scope, self.conversation_id))[1]
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
                handle = runtime.agent(self.agent_id)
                subscription = handle.subscribe(after_seq=after)
                # Taken with no await since the subscription: exactly what came before it.
                catch_up = await _catch_up(handle, subscription) if after is None else []
            except AgentNotRunning:
                after, resumed = 0, False  # it ended already; wait for the next one
                continue
            status, instance = await services.running(self.scope, self.conversation_id)
            async with subscription:
                await self.send(
                    {
                        "type": "attached",
                        "status": status,
                        "instance": instance,
                        "resumed": resumed,
                    }
                )
                for event in catch_up:
                    await self._forward(event, instance)
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

    async def _act(self, frame: _AnyFrame) -> None:
        # Only the action itself is guarded here. A reply that cannot be sent means the client
        # left: that ends the reader (see guarded), and is no failure of the action.
        services, scope, cid = self.services, self.scope, self.conversation_id
        if isinstance(frame, PingFrame):
            await self.send({"type": "pong", "ref": frame.ref})
            return
        limit = services.config.max_message_chars
        if isinstance(frame, SendFrame) and len(frame.text) > limit:
            await self.error("invalid", f"text: at most {limit} characters", frame.ref)
            return
        failure: ClientError | None = None
        try:
            if isinstance(frame, SendFrame):
                await services.send(scope, cid, frame.text)
            elif isinstance(frame, CancelFrame):
                await services.cancel(scope, cid)
            elif isinstance(frame, RetryFrame):
                await services.retry(scope, cid)
            elif isinstance(frame, DismissFrame):
                await services.dismiss(scope, cid)
            elif isinstance(frame, ResetFrame):
                await services.reset(scope, cid, frame.files)
            else:
                await services.decide(scope, cid, [d.model_dump() for d in frame.decisions])
        except SagentsError as exc:
            failure = client_error(exc)
            failure.log(exc, f"websocket action {frame.type} on conversation {cid}")
        except Exception as exc:
            failure = INTERNAL
            failure.log(exc, f"websocket action {frame.type} on conversation {cid}")
        if failure is not None:
            await self.error(failure.code, failure.message, frame.ref)
        else:
            await self.send({"type": "ok", "action": frame.type, "ref": frame.ref})

    async def guarded(self, work: Awaitable[None]) -> None:
        """Run one side of the connection; the client leaving just ends it, a bug is logged."""
        try:
            await work
        except (WebSocketDisconnect, OSError) as exc:
            self._client_left(exc)
        except RuntimeError as exc:
            # Starlette's way of refusing a send or receive on a socket that has closed (its
            # WebSocketDisconnected, in recent versions); any other RuntimeError is a bug.
            if not self._closed():
                _log.exception("websocket handler of conversation %s failed", self.conversation_id)
            else:
                self._client_left(exc)
        except Exception:
            _log.exception("websocket handler of conversation %s failed", self.conversation_id)

    def _closed(self) -> bool:
        return WebSocketState.DISCONNECTED in (self.ws.client_state, self.ws.application_state)

    def _client_left(self, exc: BaseException) -> None:
        # Both sides (the pump and the reader) see it; one line per connection is enough.
        if not self._gone_logged:
            self._gone_logged = True
            _log.debug(
                "websocket of conversation %s: the client left (%s)",
                self.conversation_id,
                type(exc).__name__,
            )


async def _catch_up(handle: AgentHandle, live: Subscription) -> list[Event]:
    """What a tab arriving now needs besides the snapshot (see the module docs), read from the
    replay buffer.

    Call it right after subscribing ``live``, with no ``await`` in between: a second, local
    subscription hands over its replay at once, so what is read here ends exactly where
    ``live`` begins. An agent in another process (the Ray backend) delivers its replay later,
    in batches, with no such boundary: it is not caught up (the tab sees the reply from where
    it arrived, as before).
    """
    if type(live) is not Subscription:
        return []
    history = handle.subscribe(after_seq=0)
    backlog: list[Event] = []
    while (event := history.get_nowait()) is not None:
        backlog.append(event)
    await history.aclose()
    return _in_progress(backlog)


def _in_progress(backlog: list[Event]) -> list[Event]:
    """The deltas of the message being streamed, whole, or the change to ``error`` that ended
    the last run; nothing else (the snapshot has the rest).

    The replay buffer drops a message's deltas once the message is complete, so the deltas
    after the last ``llm_message`` or status change are those of the message in progress —
    unless the buffer evicted older events meanwhile (its overflow marker): a message may then
    have lost its first chunks, and half a reply is not sent as if it were whole.
    """
    partial: list[Event] = []
    whole = True
    failure: StatusChanged | None = None
    for event in backlog:
        if isinstance(event, LLMDeltas):
            if whole:
                partial.append(event)
        elif isinstance(event, SubscriptionOverflow):
            partial, whole = [], False
        elif isinstance(event, LLMMessage | StatusChanged):
            partial, whole = [], True
            if isinstance(event, StatusChanged):
                failure = event if event.status is Status.ERROR else None
    return [failure] if failure is not None else partial


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


async def _refuse(ws: WebSocket, status: int, code: str, message: str) -> None:
    """An error frame, then the close code ``4000 + status`` (the client may be gone already)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.send_text(json.dumps({"type": "error", "code": code, "message": message}))
        await ws.close(code=4000 + status)


async def conversation_socket(ws: WebSocket) -> None:
    """The websocket endpoint of one conversation (see the module docs for the protocol)."""
    services: WebServices = ws.app.state.services
    scope = identity_of(ws.scope)
    await ws.accept()
    if not same_origin(ws.headers):
        # Browsers send cookies on websocket handshakes from other origins of the same site
        # (another port of localhost): only the app's own pages may act for the identity.
        await _refuse(ws, 403, "forbidden", "cross-origin socket")
        return
    try:
        conversation_id = _conversation_ids.validate_python(ws.path_params["conversation_id"])
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        await _refuse(ws, 422, "invalid", f"conversation id: {reason}")
        return
    try:
        if scope is None:
            raise ConversationNotFound("no identity cookie; load the page first")
        await services.conversation(scope, conversation_id)
    except Exception as exc:
        failure = client_error(exc) if isinstance(exc, SagentsError) else INTERNAL
        failure.log(exc, f"websocket of conversation {conversation_id}")
        await _refuse(ws, failure.status, failure.code, failure.message)
        return
    connection = _Connection(ws, services, scope, conversation_id)
    topic = services.session_config.presence_topic(conversation_id)
    # Unique across the server's processes: with several workers over one cluster, a counter
    # per process would give two tabs one key (one viewer), and one's leaving would drop both.
    key = f"tab-{uuid.uuid4().hex}"
    # Tracked from this task: the viewer disappears when the handler ends, however it ends.
    viewer = await services.presence.track(topic, key, {"identity": scope})
    after_seq = _number(ws.query_params.get("after_seq"))
    instance = _number(ws.query_params.get("instance"))
    try:
        # Whichever side ends first (the tab left, or the pump failed) ends the other.
        async with asyncio.TaskGroup() as tasks:
            pump = tasks.create_task(connection.guarded(connection.pump(after_seq, instance)))
            reader = tasks.create_task(connection.guarded(connection.read()))
            pump.add_done_callback(lambda _: reader.cancel())
            reader.add_done_callback(lambda _: pump.cancel())
    finally:
        await services.presence.untrack(topic, key, viewer)  # this connection only
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
