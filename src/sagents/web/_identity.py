"""Per-browser identity: a random id in a cookie signed with HMAC-SHA256.

The demo has no accounts, yet every conversation must belong to someone so that another
browser cannot read it. The first request of a browser gets a fresh random id; the cookie
carries ``<id>.<signature>`` and the signature is checked on every request and websocket, so an
id cannot be forged or guessed. The id is the *scope* handed to persistence and sessions.

Choices: the stdlib ``hmac`` rather than a session library (the cookie holds one opaque id and
nothing else); a pure ASGI middleware rather than a dependency, so HTTP routes, static pages and
websockets all see the same ``scope["state"]["identity"]``; :func:`cookie_identity` hands it to
the conversation router as the caller's scope. Only HTTP requests are given a new identity: a
websocket without a valid cookie has none, and is refused (close code 4404).

**Only the app's own pages act for an identity.** Browsers attach the cookie to requests that
other pages of the same *site* make (another port of localhost, say), so every request that
changes state must come from the app's own origin: see ``_origin.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagents._errors import ConfigurationError

__all__ = [
    "COOKIE_NAME",
    "IdentityMiddleware",
    "Signer",
    "cookie_identity",
    "identity_of",
    "load_secret",
]

COOKIE_NAME = "sagents_identity"
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_MAX_AGE = 365 * 24 * 3600


_KEY_BYTES = 32


def load_secret(data_dir: Path) -> bytes:
    """The signing key kept in ``data_dir/secret.key``, created (mode 0600) on first use.

    The file appears whole or not at all (written aside, then linked into place), so concurrent
    workers agree on one key and a crash never leaves an empty one.

    Raises:
        ConfigurationError: the file exists but does not hold a key of the right size; delete
            it to have a new one made (every browser then gets a new identity).
    """
    path = data_dir / "secret.key"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".secret-")
        try:
            with os.fdopen(fd, "wb") as out:  # mkstemp creates it with mode 0600
                out.write(secrets.token_bytes(_KEY_BYTES))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another worker won: use its key
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        raise ConfigurationError(
            f"{path} holds {len(key)} bytes, not a {_KEY_BYTES}-byte key; delete it to have a "
            "new one made (existing identity cookies then stop being valid)"
        )
    return key


class Signer:
    """Signs and checks identity cookie values."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, identity: str) -> str:
        digest = hmac.new(self._secret, identity.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def new_identity(self) -> str:
        return secrets.token_urlsafe(16)

    def sign(self, identity: str) -> str:
        """The cookie value for ``identity``."""
        return f"{identity}.{self._signature(identity)}"

    def verify(self, value: str | None) -> str | None:
        """The identity in a cookie value, or None when it is missing, malformed or forged."""
        if not value:
            return None
        identity, _, signature = value.partition(".")
        if not _ID.match(identity) or not hmac.compare_digest(
            signature.encode(), self._signature(identity).encode()
        ):
            return None
        return identity


def identity_of(scope: Scope) -> str | None:
    """The verified identity of a request or websocket (set by :class:`IdentityMiddleware`)."""
    state = scope.get("state") or {}
    identity = state.get("identity")
    return identity if isinstance(identity, str) else None


def cookie_identity(connection: HTTPConnection) -> str:
    """The caller's identity, as the scope of the demo's conversations (a FastAPI dependency).

    Raises:
        HTTPException: 404 for a websocket without a valid cookie (the page was not loaded
            first, or the cookie is forged): it has no conversation.
    """
    identity = identity_of(connection.scope)
    if identity is None:  # HTTP requests are always given one by the middleware
        raise HTTPException(404, "no identity cookie; load the page first")
    return identity


class IdentityMiddleware:
    """Puts the browser's identity in ``scope["state"]["identity"]``; issues one when missing."""

    def __init__(self, app: ASGIApp, signer: Signer, *, secure: bool = False) -> None:
        self.app = app
        self.signer = signer
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookies.update(cookie_parser(value.decode("latin-1")))
        identity = self.signer.verify(cookies.get(COOKIE_NAME))
        issue = identity is None and scope["type"] == "http"
        if issue:
            identity = self.signer.new_identity()
        scope.setdefault("state", {})["identity"] = identity
        if not issue:
            await self.app(scope, receive, send)
            return
        cookie = (
            f"{COOKIE_NAME}={self.signer.sign(str(identity))}; Path=/; Max-Age={_MAX_AGE}; "
            "HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else "")
        )

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)
