"""What a client is told about a failure: one translation of sagents errors for every door.

The REST routes and the websocket answer the same error with the same HTTP status and code
(the websocket as an error frame, or as the close code ``4000 + status`` when it refuses a
connection). The errors a client acts on keep their message. Storage errors and unexpected
ones get a generic message — a storage error quotes the database driver, which can name
tables, columns and stored values — and are marked ``hidden``: the caller logs their cause for
the operator (:meth:`ClientError.log`), the client never reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.exceptions import HTTPException

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

__all__ = ["INTERNAL", "ClientError", "client_error", "refusal"]

_log = logging.getLogger("sagents.web")


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

    def to_json(self) -> dict[str, str]:
        """The body of an HTTP error answer: ``{"error": code, "detail": message}``."""
        return {"error": self.code, "detail": self.message}


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


def client_error(exc: BaseException) -> ClientError:
    """Translate an error of the conversation operations into what the client is told.

    Anything that is not a :class:`~sagents.SagentsError` is a bug: :data:`INTERNAL`.
    """
    if not isinstance(exc, SagentsError):
        return INTERNAL
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


# The codes of the refusals an application's auth answers with (its HTTPException).
_REFUSAL_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    422: "invalid",
    429: "too_many_requests",
    503: "unavailable",
}


def refusal(exc: HTTPException) -> ClientError:
    """What a client is told when the application's auth refuses it (its ``HTTPException``)."""
    status = exc.status_code if 400 <= exc.status_code <= 599 else 403
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else "refused"
    return ClientError(status=status, code=_REFUSAL_CODES.get(status, "refused"), message=detail)
