"""Only the app's own pages act for a caller: the origin check of every state-changing door.

Browsers attach cookies to requests that other pages of the same *site* make (another port of
localhost, say), and a websocket handshake is never subject to CORS: ``SameSite=Lax`` stops
cross-site posts, not those. So every request that changes state — a websocket, a ``POST``,
``PUT``, ``PATCH`` or ``DELETE`` — must come without an ``Origin`` header (not a browser, or a
browser's same-origin request that omits it), from this very host, or from an origin the
application lists. Reads are not checked: the browser keeps their answers from the other page.

The check compares the ``Origin``'s host and port with the request's ``Host`` header rather
than with a configured URL, so it holds behind any name the app is reached by; an application
served to pages of other origins (a separate front-end) lists them.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SameOriginMiddleware", "same_origin"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(headers: Headers, allowed: Collection[str] = ()) -> bool:
    """True when a request has no ``Origin`` header, comes from this very host, or from one of
    the ``allowed`` origins (``"https://app.example.com"``; ``"*"`` allows every origin).

    ``Origin: null`` (a sandboxed frame, a ``file:`` page) is another origin.
    """
    origin = headers.get("origin")
    if origin is None or "*" in allowed:
        return True
    if origin == "null":
        return False
    if origin.rstrip("/").lower() in {a.rstrip("/").lower() for a in allowed}:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


class SameOriginMiddleware:
    """Refuses cross-origin requests that change state (any method but GET, HEAD, OPTIONS).

    Args:
        app: the application.
        prefix: the paths it guards (the REST API); the rest of the app (the debugger has a
            guard of its own) is passed through.
    """

    def __init__(self, app: ASGIApp, *, prefix: str = "/api/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in _SAFE_METHODS
            and scope["path"].startswith(self.prefix)
            and not same_origin(Headers(scope=scope))
        ):
            response = JSONResponse(
                {
                    "error": "forbidden",
                    "detail": "cross-origin requests are refused; use the app's own page",
                },
                status_code=403,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
