"""``conversation_router``: sagents' conversations in any FastAPI app.

What the web demo does for itself, as a router an application mounts with its own auth and its
own :class:`~sagents.SessionConfig` (the factory of its agents, their persistence, presence and
timeouts)::

    app.include_router(conversation_router(runtime, config, scope=current_user), prefix="/chat")

Under the prefix:

=========================================  ==================================================
``GET /conversations``                     the caller's conversations, with their status
``POST /conversations``                    a new one (``{"title"?}``), 201
``GET /conversations/{id}``                what a page shows on load: display messages, todos,
                                           the pending interrupt, the status and instance
``PATCH /conversations/{id}``              rename it (``{"title"}``)
``DELETE /conversations/{id}``             stop its agent and delete it, 204
``WS /conversations/{id}/ws``              the conversation live: events out, actions in
                                           (``_socket.py``; the reference is ``docs/web.md``)
``GET /sagents-client.js``                 the browser client of the socket (an ES module)
=========================================  ==================================================

**Auth is the application's.** ``scope`` is a FastAPI dependency answering the caller's scope
(a user id, an account, any hashable value): every conversation belongs to the scope that
created it, and another scope is told it does not exist. The dependency refuses a caller by
raising ``HTTPException``; on the socket — where FastAPI would deny the handshake, which a
browser only sees as close code 1006, indistinguishable from a network failure — the socket is
accepted instead and closed with ``4000 + status`` (4401, 4403) after an error frame, so the
client knows not to retry. The dependency runs for HTTP requests and websockets alike: it
declares ``Header``, ``Cookie`` or ``Query`` parameters, or an ``HTTPConnection``, not a
``Request``. (Browsers cannot set headers on a websocket: a token travels as a cookie or in
the socket's query string.) A ``yield`` dependency cannot have its refusal turned into a close
code; its refusal denies the handshake.

**Origins.** Whatever changes state (the socket, ``POST``, ``PATCH``, ``DELETE``) must come
from the app's own origin, without an ``Origin`` header, or from ``allowed_origins``
(``_origin.py``): cookie-based auth would otherwise act for pages of other origins.

**What it does not do.** No body-size limit (the only body is a title; put a limit in front of
the app, as for any FastAPI app), no files.
Errors of the conversation operations are answered ``{"error": code, "detail": message}``
(``_client_errors.py``); request validation errors are the app's (FastAPI's 422).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run
# time, and the dependencies are locals of conversation_router that a string would not find.

import inspect
import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeAlias

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from sagents._errors import ConfigurationError
from sagents.persistence._protocols import ConversationStore, Scope
from sagents.runtime._runtime import Runtime
from sagents.session._config import SessionConfig
from sagents.web._client_errors import ClientError, client_error, refusal
from sagents.web._conversations import NOT_RUNNING, BeforeAction, Conversations, conversation_json
from sagents.web._limits import ConversationId, Title
from sagents.web._origin import same_origin
from sagents.web._socket import SocketLimits, serve_socket

__all__ = ["CLIENT_FILE", "CLIENT_PATH", "ConfigSource", "RuntimeSource", "conversation_router"]

#: The runtime, or a callable answering it for a request or websocket (e.g. one started in the
#: app's lifespan: ``lambda conn: conn.app.state.runtime``).
RuntimeSource: TypeAlias = Runtime | Callable[[HTTPConnection], Runtime]
#: The session configuration, or a callable answering it for a request or websocket.
ConfigSource: TypeAlias = SessionConfig | Callable[[HTTPConnection], SessionConfig]

#: The browser client, shipped in the package.
CLIENT_FILE = Path(__file__).parent / "static" / "sagents-client.js"
#: Where the router serves it, under its prefix.
CLIENT_PATH = "/sagents-client.js"


class CreateBody(BaseModel):
    """The body of ``POST /conversations`` (optional)."""

    model_config = ConfigDict(extra="forbid")
    title: Title | None = None


class RenameBody(BaseModel):
    """The body of ``PATCH /conversations/{id}``."""

    model_config = ConfigDict(extra="forbid")
    title: Title


class _AsciiJSON(JSONResponse):
    """JSON escaped to ASCII, nested as deep as the JSON parser allows.

    A conversation is stored content; whatever it holds, its page must load. The escape keeps a
    lone surrogate stored before the edge refused them from breaking the UTF-8 encoding, and
    the stdlib encoder takes any nesting that came in as JSON (pydantic's response serializer
    stops far sooner, which made such a conversation unreadable).
    """

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _answer(failure: ClientError) -> JSONResponse:
    return JSONResponse(failure.to_json(), status_code=failure.status)


_CROSS_ORIGIN = ClientError(
    status=403,
    code="forbidden",
    message="cross-origin requests are refused; use the app's own page",
)


@dataclass(frozen=True, slots=True)
class _Admission:
    """What the application's auth answered for a socket: a scope, or a refusal."""

    scope: Scope = None
    refused: ClientError | None = None


def _no_scope() -> Scope:
    return None


def _admission(dependency: Callable[..., Any]) -> Callable[..., Awaitable[_Admission]]:
    """The scope dependency for the socket, its refusal (``HTTPException``) kept as a value.

    FastAPI answers a dependency's ``HTTPException`` on a websocket by denying the handshake;
    the socket wants to close with a code the client can read instead. So this wrapper has the
    dependency's parameters (FastAPI solves them as for the dependency itself) and calls it,
    catching the refusal. A ``yield`` dependency is used as it is.
    """
    if inspect.isgeneratorfunction(dependency) or inspect.isasyncgenfunction(dependency):

        async def as_is(found: Annotated[Any, Depends(dependency)]) -> _Admission:
            return _Admission(scope=found)

        return as_is

    call = getattr(dependency, "__call__", None)  # noqa: B004 - a callable instance's method
    is_async = inspect.iscoroutinefunction(dependency) or inspect.iscoroutinefunction(call)

    async def admit(**values: Any) -> _Admission:
        try:
            if is_async:
                found = await dependency(**values)
            else:  # as FastAPI runs a sync dependency: off the event loop
                found = await run_in_threadpool(dependency, **values)
        except HTTPException as exc:
            return _Admission(refused=refusal(exc))
        return _Admission(scope=found)

    admit.__signature__ = inspect.signature(dependency, eval_str=True)  # type: ignore[attr-defined]
    return admit


def conversation_router(
    runtime: RuntimeSource,
    config: ConfigSource,
    *,
    scope: Callable[..., Any] | None = None,
    store: ConversationStore | None = None,
    before_action: BeforeAction | None = None,
    allowed_origins: Collection[str] = (),
    max_frame_bytes: int = 64 * 1024,
    max_message_chars: int = 20_000,
) -> APIRouter:
    """A router serving conversations to the application's callers (see the module docs).

    Mount it with ``app.include_router(conversation_router(...), prefix="/chat")``; the
    runtime must be started (e.g. in the app's lifespan) before requests come.

    Args:
        runtime: the runtime, or a callable answering it for a connection.
        config: the ``SessionConfig`` of the conversations, or a callable answering it.
        scope: a FastAPI dependency answering the caller's scope; it raises
            ``HTTPException`` to refuse the caller (HTTP: that status; websocket: close code
            ``4000 + status``). None: one scope, ``None``, for everyone.
        store: where conversations are kept (listed, created, checked); default: the
            configuration's persistence that is a ``ConversationStore``.
        before_action: awaited with a :class:`~sagents.web.ConversationAction` before each
            action (create, send, retry, cancel, decide, dismiss, reset); it raises a
            ``SagentsError`` to refuse it (e.g. ``RegistryUnavailable`` while draining: 503).
        allowed_origins: origins besides the app's own whose pages may open the socket and
            create conversations (``"https://app.example.com"``; ``"*"``: any).
        max_frame_bytes: the largest websocket frame accepted.
        max_message_chars: the longest message accepted.

    Raises:
        ConfigurationError: an option is invalid, or (with a fixed runtime and configuration)
            no conversation store is found.
    """
    if isinstance(allowed_origins, str):
        raise ConfigurationError("allowed_origins: a collection of origins, not one string")
    for name, value in (
        ("max_frame_bytes", max_frame_bytes),
        ("max_message_chars", max_message_chars),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigurationError(f"conversation_router: {name} must be a positive int")
    limits = SocketLimits(
        max_frame_bytes=max_frame_bytes,
        max_message_chars=max_message_chars,
        allowed_origins=tuple(allowed_origins),
    )
    fixed: Conversations | None = None
    if isinstance(runtime, Runtime) and isinstance(config, SessionConfig):
        fixed = Conversations(runtime, config, store, before_action=before_action)

    def conversations(conn: HTTPConnection) -> Conversations:
        if fixed is not None:
            return fixed
        the_runtime = runtime if isinstance(runtime, Runtime) else runtime(conn)
        the_config = config if isinstance(config, SessionConfig) else config(conn)
        return Conversations(the_runtime, the_config, store, before_action=before_action)

    dependency = scope or _no_scope
    Ops = Annotated[Conversations, Depends(conversations)]
    Caller = Annotated[Any, Depends(dependency)]
    Admission = Annotated[_Admission, Depends(_admission(dependency))]
    router = APIRouter()

    @router.get("/conversations", summary="The caller's conversations")
    async def list_conversations(ops: Ops, caller: Caller) -> Response:
        try:
            return _AsciiJSON({"conversations": await ops.list_json(caller)})
        except Exception as exc:
            return _failed(exc, "listing conversations")

    @router.post("/conversations", status_code=201, summary="Create a conversation")
    async def create_conversation(
        request: Request, ops: Ops, caller: Caller, body: CreateBody | None = None
    ) -> Response:
        if not same_origin(request.headers, limits.allowed_origins):
            return _answer(_CROSS_ORIGIN)
        try:
            created = await ops.create(caller, body.title if body else None)
        except Exception as exc:
            return _failed(exc, "creating a conversation")
        return _AsciiJSON(conversation_json(created, NOT_RUNNING), status_code=201)

    @router.get("/conversations/{conversation_id}", summary="A conversation, as a page shows it")
    async def get_conversation(
        conversation_id: ConversationId, ops: Ops, caller: Caller
    ) -> Response:
        """Display messages, todos, the pending interrupt, the status and the agent's instance."""
        try:
            return _AsciiJSON((await ops.snapshot(caller, conversation_id)).to_json())
        except Exception as exc:
            return _failed(exc, f"loading conversation {conversation_id}")

    @router.patch("/conversations/{conversation_id}", summary="Rename a conversation")
    async def rename_conversation(
        request: Request,
        conversation_id: ConversationId,
        body: RenameBody,
        ops: Ops,
        caller: Caller,
    ) -> Response:
        if not same_origin(request.headers, limits.allowed_origins):
            return _answer(_CROSS_ORIGIN)
        try:
            renamed = await ops.rename(caller, conversation_id, body.title)
            status = await ops.status(caller, conversation_id)
        except Exception as exc:
            return _failed(exc, f"renaming conversation {conversation_id}")
        return _AsciiJSON(conversation_json(renamed, status))

    @router.delete(
        "/conversations/{conversation_id}", status_code=204, summary="Delete a conversation"
    )
    async def delete_conversation(
        request: Request, conversation_id: ConversationId, ops: Ops, caller: Caller
    ) -> Response:
        """Stops its agent and deletes it with its messages and files (``Session.delete``)."""
        if not same_origin(request.headers, limits.allowed_origins):
            return _answer(_CROSS_ORIGIN)
        try:
            await ops.delete(caller, conversation_id)
        except Exception as exc:
            return _failed(exc, f"deleting conversation {conversation_id}")
        return Response(status_code=204)

    @router.websocket("/conversations/{conversation_id}/ws")
    async def conversation_socket(
        ws: WebSocket, conversation_id: str, ops: Ops, caller: Admission
    ) -> None:
        await serve_socket(
            ws,
            conversations=ops,
            conversation_id=conversation_id,
            scope=caller.scope,
            refused=caller.refused,
            limits=limits,
        )

    @router.get(CLIENT_PATH, include_in_schema=False)
    async def client() -> FileResponse:
        return FileResponse(
            CLIENT_FILE, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    return router


def _failed(exc: Exception, doing: str) -> JSONResponse:
    failure = client_error(exc)
    failure.log(exc, doing)
    return _answer(failure)
