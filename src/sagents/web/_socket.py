"""The conversation websocket: live events out, actions in, one socket per open tab.

Served by :func:`~sagents.web.conversation_router` at ``{prefix}/conversations/{id}/ws``
(``?after_seq=N&instance=T`` when a tab reconnects); ``docs/web.md`` is the protocol's
reference. Frames out::

    {"type": "attached", "status": ..., "instance": T, "resumed": bool}
    {"type": "event", "instance": T, "event": {...event.to_json()...}}
    {"type": "detached", "status": "not_running"}
    {"type": "ok", "action": ..., "ref": ...}  |  {"type": "pong", "ref": ...}
    {"type": "error", "code": ..., "message": ..., "ref": ...}

and in: the frames of ``_protocol.py`` (send, cancel, decide, dismiss, reset, retry, ping).

**Presence.** Each socket is one viewer of the conversation's presence topic (the
``SessionConfig``'s), tracked under a key of its own from the handler's task, so it disappears
however the socket ends. When the last tab closes, the agent's grace period starts and it shuts
down with reason ``no_viewers``; the next message restarts it through
``Session.ensure_running`` with its state restored.

**Events out.** A *pump* follows the conversation's agent across server instances. While the
agent runs it forwards that instance's events; when it stops the pump waits, through
``runtime.watch``, for the next instance and subscribes to it with ``after_seq=0``, so the
instance's replay buffer hands over everything it published before the pump got there (nothing
is lost between the watch seeing the first event and the subscription).

Every server instance numbers its events from 1, so ``instance`` (``AgentInfo.instance``) says
which numbering a ``seq`` belongs to. A tab that reconnects passes the last ``seq`` and
``instance`` it saw: if that instance still runs, the pump replays what the tab missed
(``resumed: true``); otherwise the tab reloads the conversation over HTTP.

**A tab that arrives mid-run** (a new tab, a reload: ``resumed: false``) reads the conversation
over HTTP, and a snapshot holds only what was saved: not the reply being streamed, nor why the
last run failed. So right after ``attached`` the pump sends, as ordinary event frames, the
``llm_deltas`` of the message in progress since its first chunk and, when the last run ended in
an error, its ``status_changed`` to ``error`` (the reason is its ``data``), then the
``message_queued`` of each message still waiting for the next turn (they are not in the state
yet) and what the last run said in words once ended (``run_halted``, ``follow_ups_limited``),
all taken from the replay buffer at the very moment the live subscription starts: the
tab shows the whole partial reply, then its live continuation, with no gap and no chunk twice —
for an agent of this process; a Ray host's replay has no such moment (see ``_catch_up``). A
resumed tab needs none of this: the replay after its ``seq`` holds the rest of the deltas or,
once the message is complete and its deltas are compacted away, the whole message as
``llm_message``.

**Actions in.** Every inbound frame is checked for size, kind (text), JSON and schema, with the
bounds the REST door applies too (``_limits.py``); a bad one, or an action the agent refuses,
gets an error frame — the socket, its handler and the agent carry on. The actions themselves
are :class:`~sagents.web._conversations.Conversations`' (one implementation for every door).

**Refusals at connection.** The socket is accepted and checked before anything else; a refusal
is an error frame, then a close whose code is 4000 plus the HTTP status the REST door would
give: 4403 (another origin), the application's auth refusing the caller (4401, 4403... its
``HTTPException``'s status), 4422 (an id no conversation can have), 4404 (no such conversation
for this scope), 4503 (storage unavailable), 4500 (anything else).

**A client that leaves** mid-conversation (before its reply, during a stream) ends the
connection quietly: one debug line, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Collection
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sagents._errors import AgentNotRunning
from sagents._status import Status
from sagents.events import (
    Event,
    FollowUpsLimited,
    LLMDeltas,
    LLMMessage,
    MessageQueued,
    RunHalted,
    StatusChanged,
    SubscriptionOverflow,
)
from sagents.persistence._protocols import Scope
from sagents.runtime._handle import AgentHandle
from sagents.runtime._publisher import Subscription
from sagents.runtime._runtime import Runtime
from sagents.web._client_errors import ClientError, client_error
from sagents.web._conversations import Conversations
from sagents.web._limits import ConversationId
from sagents.web._origin import same_origin
from sagents.web._protocol import (
    MAX_REF_CHARS,
    AnyFrame,
    CancelFrame,
    DecideFrame,
    DismissFrame,
    PingFrame,
    ResetFrame,
    RetryFrame,
    SendFrame,
    frames,
)

__all__ = ["SocketLimits", "serve_socket"]

_log = logging.getLogger("sagents.web")

_conversation_ids: TypeAdapter[str] = TypeAdapter(ConversationId)


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketLimits:
    """What one socket accepts.

    Attributes:
        max_frame_bytes: the largest frame; a larger one gets a ``too_large`` error frame.
        max_message_chars: the longest message a ``send`` frame may carry.
        allowed_origins: origins besides the app's own whose pages may open the socket.
    """

    max_frame_bytes: int = 64 * 1024
    max_message_chars: int = 20_000
    allowed_origins: Collection[str] = ()


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class _Connection:
    """One open tab: its socket, its event pump and its reader of actions."""

    def __init__(
        self,
        ws: WebSocket,
        conversations: Conversations,
        scope: Scope,
        conversation_id: str,
        limits: SocketLimits,
    ) -> None:
        self.ws = ws
        self.conversations = conversations
        self.scope = scope
        self.conversation_id = conversation_id
        self.limits = limits
        self.agent_id = conversations.agent_id(conversation_id)
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
        conversations, runtime = self.conversations, self.conversations.runtime
        current = (await conversations.running(self.scope, self.conversation_id))[1]
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
                catch_up = await _catch_up(runtime, handle, subscription) if after is None else []
            except AgentNotRunning:
                after, resumed = 0, False  # it ended already; wait for the next one
                continue
            status, instance = await conversations.running(self.scope, self.conversation_id)
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
        limit = self.limits.max_frame_bytes
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
                frame = frames.validate_python(raw)
            except ValidationError as exc:
                ref = raw.get("ref") if isinstance(raw, dict) else None
                await self.error("invalid", _validation_message(exc), ref if _short(ref) else None)
                continue
            await self._act(frame)

    async def _act(self, frame: AnyFrame) -> None:
        # Only the action itself is guarded here. A reply that cannot be sent means the client
        # left: that ends the reader (see guarded), and is no failure of the action.
        if isinstance(frame, PingFrame):
            await self.send({"type": "pong", "ref": frame.ref})
            return
        limit = self.limits.max_message_chars
        if isinstance(frame, SendFrame) and len(frame.text) > limit:
            await self.error("invalid", f"text: at most {limit} characters", frame.ref)
            return
        failure: ClientError | None = None
        try:
            await self._apply(frame)
        except Exception as exc:  # a SagentsError the client acts on, or a bug (INTERNAL)
            failure = client_error(exc)
            failure.log(
                exc, f"websocket action {frame.type} on conversation {self.conversation_id}"
            )
        if failure is not None:
            await self.error(failure.code, failure.message, frame.ref)
        else:
            await self.send({"type": "ok", "action": frame.type, "ref": frame.ref})

    async def _apply(self, frame: AnyFrame) -> None:
        conversations, scope, cid = self.conversations, self.scope, self.conversation_id
        match frame:
            case SendFrame(text=text):
                await conversations.send(scope, cid, text)
            case CancelFrame():
                await conversations.cancel(scope, cid)
            case RetryFrame():
                await conversations.retry(scope, cid)
            case DismissFrame():
                await conversations.dismiss(scope, cid)
            case ResetFrame(files=files):
                await conversations.reset(scope, cid, files)
            case DecideFrame(decisions=decisions):
                await conversations.decide(scope, cid, [d.model_dump() for d in decisions])
            case _:  # pragma: no cover - ping is answered before
                raise AssertionError(f"unhandled frame {frame.type}")

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


async def _catch_up(runtime: Runtime, handle: AgentHandle, live: Subscription) -> list[Event]:
    """What a tab arriving now needs besides the snapshot (see the module docs), read from the
    replay buffer: the message in progress, and the messages queued for the next turn (not in
    the snapshot: they are not in the agent's state yet).

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
    info = runtime.agent_info_nowait(handle.agent_id)
    await history.aclose()
    waiting = 0 if info is None else info.queued_messages
    return _in_progress(backlog) + _queued(backlog, waiting) + _notices(backlog)


def _queued(backlog: list[Event], waiting: int) -> list[Event]:
    """The ``message_queued`` events of the ``waiting`` messages queued now: the last ones (a
    follow-up turn takes every queued message at once, in order)."""
    if not waiting:
        return []
    queued: list[Event] = [event for event in backlog if isinstance(event, MessageQueued)]
    return queued[-waiting:]


def _notices(backlog: list[Event]) -> list[Event]:
    """What the last run said in words, once it has ended (a halt's reason, the follow-up
    limit): a page shows them after the conversation, and the snapshot holds neither."""
    started = [
        i
        for i, event in enumerate(backlog)
        if isinstance(event, StatusChanged) and event.status is Status.RUNNING
    ]
    since = started[-1] + 1 if started else 0
    return [event for event in backlog[since:] if isinstance(event, RunHalted | FollowUpsLimited)]


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
    return isinstance(value, str) and len(value) <= MAX_REF_CHARS


def _number(text: str | None) -> int | None:
    """A non-negative integer query parameter, or None when absent or not one."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None


async def _refuse(ws: WebSocket, failure: ClientError) -> None:
    """An error frame, then the close code ``4000 + status`` (the client may be gone already)."""
    frame = {"type": "error", "code": failure.code, "message": failure.message}
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.send_text(json.dumps(frame))
        await ws.close(code=4000 + failure.status)


async def serve_socket(
    ws: WebSocket,
    *,
    conversations: Conversations,
    conversation_id: str,
    scope: Scope,
    refused: ClientError | None,
    limits: SocketLimits,
) -> None:
    """Serve one conversation's socket until either side ends it (see the module docs).

    Args:
        ws: the socket, not accepted yet.
        conversations: the operations, for the application's runtime and configuration.
        conversation_id: the id in the socket's path, unchecked.
        scope: the caller's scope, as the application's auth answered it.
        refused: what the application's auth refused the caller with (then ``scope`` is
            meaningless), or None.
        limits: what the socket accepts.
    """
    await ws.accept()
    if not same_origin(ws.headers, limits.allowed_origins):
        # Browsers send cookies on websocket handshakes from other origins of the same site
        # (another port of localhost), and no CORS applies: only the app's own pages (or the
        # origins it lists) may act for the caller.
        await _refuse(ws, ClientError(status=403, code="forbidden", message="cross-origin socket"))
        return
    if refused is not None:
        await _refuse(ws, refused)
        return
    try:
        conversation_id = _conversation_ids.validate_python(conversation_id)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        await _refuse(
            ws, ClientError(status=422, code="invalid", message=f"conversation id: {reason}")
        )
        return
    try:
        await conversations.get(scope, conversation_id)
    except Exception as exc:
        failure = client_error(exc)
        failure.log(exc, f"websocket of conversation {conversation_id}")
        await _refuse(ws, failure)
        return
    connection = _Connection(ws, conversations, scope, conversation_id, limits)
    after_seq = _number(ws.query_params.get("after_seq"))
    instance = _number(ws.query_params.get("instance"))
    async with _viewer(conversations, scope, conversation_id):
        try:
            # Whichever side ends first (the tab left, or the pump failed) ends the other.
            async with asyncio.TaskGroup() as tasks:
                pump = tasks.create_task(connection.guarded(connection.pump(after_seq, instance)))
                reader = tasks.create_task(connection.guarded(connection.read()))
                pump.add_done_callback(lambda _: reader.cancel())
                reader.add_done_callback(lambda _: pump.cancel())
        finally:
            if ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await ws.close(code=1011)


@contextlib.asynccontextmanager
async def _viewer(
    conversations: Conversations, scope: Scope, conversation_id: str
) -> AsyncIterator[None]:
    """This socket as one viewer of the conversation, for as long as it is open."""
    config = conversations.config
    if config.presence is None:
        yield
        return
    topic = config.presence_topic(conversation_id)
    # Unique across the server's processes: with several workers over one cluster, a counter
    # per process would give two tabs one key (one viewer), and one's leaving would drop both.
    key = f"tab-{uuid.uuid4().hex}"
    # Tracked from this task: the viewer disappears when the handler ends, however it ends.
    viewer = await config.presence.track(topic, key, {"scope": scope, "via": "websocket"})
    try:
        yield
    finally:
        await config.presence.untrack(topic, key, viewer)  # this connection only
