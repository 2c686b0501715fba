"""The REST API of the demo: conversations, messages, approvals, files (issue rules 2 and 4).

Every route acts for the caller's identity (the signed cookie); a conversation of another
identity is indistinguishable from one that does not exist (404). Errors are JSON
``{"error": code, "detail": message}`` with one status per decision the client makes:

=====  ====================  ===================================================
 400   ``bad_json``          the body is not JSON
 404   ``not_found``         no such conversation (or file) for this identity
 409   ``conflict``          the agent's status does not allow it (nothing to cancel...)
 422   ``invalid``           the body does not match the schema; ``invalid_decision``
 503   ``unavailable``       the server is starting or shutting down: retry
=====  ====================  ===================================================
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sagents._errors import FileSystemError, PathNotAllowed, SagentsError
from sagents.web._identity import identity_of
from sagents.web._services import WebServices, conversation_json
from sagents.web._socket import DecisionFrame, error_code

__all__ = ["install_error_handlers", "router"]

router = APIRouter(prefix="/api")

_STATUS = {
    "not_found": 404,
    "conflict": 409,
    "invalid_decision": 422,
    "unavailable": 503,
    "bad_path": 400,
    "error": 500,
}


def _services(request: Request) -> WebServices:
    services: WebServices = request.app.state.services
    return services


def _identity(request: Request) -> str:
    identity = identity_of(request.scope)
    if identity is None:  # pragma: no cover - the middleware always sets one for HTTP
        raise RuntimeError("IdentityMiddleware is not installed")
    return identity


Services = Annotated[WebServices, Depends(_services)]
Identity = Annotated[str, Depends(_identity)]
ConversationId = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Body):
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class RenameBody(_Body):
    title: Annotated[str, Field(min_length=1, max_length=200)]


class MessageBody(_Body):
    text: Annotated[str, Field(min_length=1, max_length=20_000)]


class DecisionsBody(_Body):
    decisions: Annotated[list[DecisionFrame], Field(min_length=1, max_length=100)]


@router.get("/me")
async def me(identity: Identity) -> dict[str, Any]:
    """The caller's identity (the scope its conversations belong to)."""
    return {"identity": identity}


@router.get("/conversations")
async def list_conversations(services: Services, identity: Identity) -> dict[str, Any]:
    return {"conversations": await services.list_conversations(identity)}


@router.post("/conversations", status_code=201)
async def create_conversation(
    services: Services, identity: Identity, body: CreateBody | None = None
) -> dict[str, Any]:
    conversation = await services.create_conversation(identity, body.title if body else None)
    return conversation_json(conversation, "not_running")


@router.get("/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str, services: Services, identity: Identity
) -> dict[str, Any]:
    """The whole conversation as a page shows it: messages, todos, pending approval, status."""
    return (await services.snapshot(identity, conversation_id)).to_json()


@router.patch("/conversations/{conversation_id}")
async def rename_conversation(
    conversation_id: str, body: RenameBody, services: Services, identity: Identity
) -> dict[str, Any]:
    conversation = await services.rename(identity, conversation_id, body.title)
    return conversation_json(conversation, services.status(identity, conversation_id))


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, services: Services, identity: Identity
) -> Response:
    await services.delete(identity, conversation_id)
    return Response(status_code=204)


@router.post("/conversations/{conversation_id}/messages", status_code=202)
async def send_message(
    conversation_id: str, body: MessageBody, services: Services, identity: Identity
) -> dict[str, Any]:
    await services.send(identity, conversation_id, body.text)
    return {"status": services.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/cancel", status_code=202)
async def cancel_run(
    conversation_id: str, services: Services, identity: Identity
) -> dict[str, Any]:
    await services.cancel(identity, conversation_id)
    return {"status": services.status(identity, conversation_id)}


@router.post("/conversations/{conversation_id}/decisions", status_code=202)
async def decide(
    conversation_id: str, body: DecisionsBody, services: Services, identity: Identity
) -> dict[str, Any]:
    decisions = [d.model_dump() for d in body.decisions]
    await services.decide(identity, conversation_id, decisions)
    return {"status": services.status(identity, conversation_id)}


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
    """Map sagents errors and request validation to the JSON errors in the module docs."""

    async def sagents_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, PathNotAllowed):
            return _error(400, "bad_path", str(exc))
        if isinstance(exc, FileSystemError):
            return _error(404, "not_found", str(exc))
        code = error_code(exc)
        return _error(_STATUS[code], code, str(exc))

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
