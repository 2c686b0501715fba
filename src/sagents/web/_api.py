"""The REST API of the demo: messages, approvals and questions, files.

Listing, creating, loading, renaming and deleting conversations (``/api/conversations``,
``/api/conversations/{id}``) and the websocket are the
:func:`~sagents.web.conversation_router` the demo mounts at ``/api``; this module adds the
demo's own routes beside it, on the same operations
(``WebServices.conversations``). Every route acts for the caller's identity (the signed
cookie); a conversation of another identity is indistinguishable from one that does not exist
(404). Errors are JSON ``{"error": code, "detail": message}`` with one status per decision the
client makes:

=====  ====================  ===================================================
 400   ``bad_json``          the body is not JSON (or is nested past what a parser takes)
 403   ``forbidden``         a state-changing request from another origin
 404   ``not_found``         no such conversation (or file) for this identity
 409   ``conflict``          the agent's status does not allow it (nothing to cancel...)
 413   ``too_large``         the body is over ``WebConfig.max_body_bytes``
 422   ``invalid``           the id, the body or a value does not fit; ``invalid_decision``
 500   ``internal``          the server failed; the detail is in its log, not the answer
 503   ``unavailable``       starting, shutting down, or the storage is down: retry
=====  ====================  ===================================================

What a request may hold is bounded before it is run or stored (``_limits.py``): the body size
(413 before parsing), ids, storable text (no U+0000, no lone surrogate), the shape of edited
tool arguments, and the message length of ``WebConfig.max_message_chars`` — the same bounds as
the websocket's. The origin check (403) and the body limit are middleware (``create_app``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from sagents._errors import FileSystemError, PathNotAllowed, SagentsError
from sagents.runtime._reset import ResetFiles
from sagents.web._client_errors import INTERNAL, client_error
from sagents.web._conversations import Conversations
from sagents.web._identity import identity_of
from sagents.web._limits import ConversationId, StorableText
from sagents.web._protocol import DecisionFrame
from sagents.web._services import WebServices

__all__ = ["install_error_handlers", "router"]

router = APIRouter(prefix="/api")

# Errors Starlette and FastAPI raise themselves (an unknown route, a body no parser takes...).
_HTTP_CODES = {
    400: "bad_json",  # FastAPI's only 400: a body it could not parse (bad UTF-8, too deep...)
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def _services(request: Request) -> WebServices:
    services: WebServices = request.app.state.services
    return services


def _conversations(request: Request) -> Conversations:
    return _services(request).conversations


def _identity(request: Request) -> str:
    identity = identity_of(request.scope)
    if identity is None:  # pragma: no cover - the middleware always sets one for HTTP
        raise RuntimeError("IdentityMiddleware is not installed")
    return identity


Services = Annotated[WebServices, Depends(_services)]
Ops = Annotated[Conversations, Depends(_conversations)]
Identity = Annotated[str, Depends(_identity)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageBody(_Body):
    # The length limit is the configuration's (max_message_chars), checked in the route.
    text: Annotated[StorableText, Field(min_length=1)]


class DecisionsBody(_Body):
    decisions: Annotated[list[DecisionFrame], Field(min_length=1, max_length=100)]


class ResetBody(_Body):
    files: ResetFiles = "keep"


@router.get("/me")
async def me(identity: Identity) -> dict[str, Any]:
    """The caller's identity (the scope its conversations belong to)."""
    return {"identity": identity}


@router.post("/conversations/{conversation_id}/messages", status_code=202)
async def send_message(
    conversation_id: ConversationId,
    body: MessageBody,
    services: Services,
    ops: Ops,
    identity: Identity,
) -> dict[str, Any]:
    limit = services.config.max_message_chars
    if len(body.text) > limit:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long",
                    "loc": ("body", "text"),
                    "msg": f"String should have at most {limit} characters",
                }
            ]
        )
    await ops.send(identity, conversation_id, body.text)
    return {"status": await ops.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/cancel", status_code=202)
async def cancel_run(
    conversation_id: ConversationId, ops: Ops, identity: Identity
) -> dict[str, Any]:
    await ops.cancel(identity, conversation_id)
    return {"status": await ops.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/retry", status_code=202)
async def retry_run(
    conversation_id: ConversationId, ops: Ops, identity: Identity
) -> dict[str, Any]:
    """Run again after a run that ended in an error (409 when there is nothing to retry)."""
    await ops.retry(identity, conversation_id)
    return {"status": await ops.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/decisions", status_code=202)
async def decide(
    conversation_id: ConversationId, body: DecisionsBody, ops: Ops, identity: Identity
) -> dict[str, Any]:
    decisions = [d.model_dump() for d in body.decisions]
    await ops.decide(identity, conversation_id, decisions)
    return {"status": await ops.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/dismiss", status_code=202)
async def dismiss(conversation_id: ConversationId, ops: Ops, identity: Identity) -> dict[str, Any]:
    """Clear the pending approval or question without a decision (409 when nothing waits)."""
    await ops.dismiss(identity, conversation_id)
    return {"status": await ops.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/reset", status_code=202)
async def reset(
    conversation_id: ConversationId,
    ops: Ops,
    identity: Identity,
    body: ResetBody | None = None,
) -> dict[str, Any]:
    """Start the conversation over; its files stay (``"clear"`` is refused: they are shared
    by the identity's conversations)."""
    await ops.reset(identity, conversation_id, body.files if body else "keep")
    return {"status": await ops.status(identity, conversation_id)}


@router.get("/files")
async def list_files(services: Services, identity: Identity) -> dict[str, Any]:
    """The files shared by the caller's conversations."""
    files = await services.list_files(identity)
    return {"files": [{"path": f.path, "size": f.size} for f in files]}


@router.get("/files/content")
async def read_file(path: str, services: Services, identity: Identity) -> dict[str, Any]:
    return {"path": path, "content": await services.read_file(identity, path)}


def _error(status: int, code: str, detail: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Map errors to the JSON errors in the module docs; none of them quotes the database."""

    async def sagents_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, PathNotAllowed):
            return _error(400, "bad_path", str(exc))
        if isinstance(exc, FileSystemError):
            return _error(404, "not_found", str(exc))
        if not isinstance(exc, SagentsError):  # pragma: no cover - registered for SagentsError
            raise exc
        failure = client_error(exc)
        failure.log(exc, f"{request.method} {request.url.path}")
        return _error(failure.status, failure.code, failure.message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException
            raise exc
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = "the body is not valid JSON" if code == "bad_json" else exc.detail
        return JSONResponse(
            {"error": code, "detail": detail}, status_code=exc.status_code, headers=exc.headers
        )

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the client learns only that it failed. Starlette re-raises the exception after
        # this answer, for the server to log with its traceback.
        return _error(INTERNAL.status, INTERNAL.code, INTERNAL.message)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "bad_json", "the body is not valid JSON")
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors[:10]
        ]
        return _error(422, "invalid", detail)

    app.add_exception_handler(SagentsError, sagents_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
