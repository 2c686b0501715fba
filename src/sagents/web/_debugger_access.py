"""Who may use the live debugger: the access guard in front of every request and websocket.

The debugger shows every conversation and can stop any agent, so it is an operator tool with
two modes, chosen by whether a token is configured:

- **No token: loopback only.** The client must connect from a loopback address (127.0.0.0/8,
  ::1), *and* the ``Host`` header must name a loopback host, *and* no proxy header
  (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) may be present. The client address alone
  is not enough: behind a reverse proxy on the same machine every request comes from 127.0.0.1,
  and a DNS-rebinding page reaches 127.0.0.1 under its own host name. Refused requests get 403.
- **A token.** Every request carries it: ``Authorization: Bearer <token>``, ``?token=<token>``,
  or the cookie set the first time the page was opened with ``?token=``. Opening the page with
  ``?token=`` redirects to the same page without it (so it does not linger in the address bar or
  the history) and sets an ``HttpOnly``, ``SameSite=Strict`` cookie scoped to the debugger's
  path. Missing or wrong tokens get 401. Tokens are compared with :func:`hmac.compare_digest`.

In both modes a request with an ``Origin`` header must come from the debugger's own origin:
browsers send ``Origin`` on cross-site POSTs and websocket handshakes, and websockets are not
protected by the same-origin policy, so without this check any web page the operator visits
could read the event streams of a loopback-only debugger or stop its agents.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import URL, Headers, QueryParams
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sagents._errors import ConfigurationError

__all__ = ["COOKIE_NAME", "AccessGuard"]

#: The cookie that keeps the token after the page was opened with ``?token=``.
COOKIE_NAME = "sagents_debugger_token"

_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _is_loopback_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _host_name(host_header: str) -> str:
    """``Host`` header value without its port (``[::1]:8000`` → ``::1``)."""
    netloc = urlsplit(f"//{host_header}")
    try:
        return (netloc.hostname or "").lower()
    except ValueError:
        return ""


def _is_loopback_host(host_header: str) -> bool:
    name = _host_name(host_header)
    return name == "localhost" or name.endswith(".localhost") or _is_loopback_ip(name)


class AccessGuard:
    """ASGI middleware enforcing the debugger's access rule (see the module docstring).

    Args:
        app: the debugger's routes.
        token: the shared secret, or None for loopback-only access.
    """

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        if token is not None and not token:
            raise ConfigurationError(
                "the debugger token must not be empty; pass None for loopback-only access"
            )
        self._app = app
        self._token = None if token is None else token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._origin_refusal(headers)
        from_query = False
        if refusal is None:
            if self._token is None:
                refusal = self._loopback_refusal(scope, headers)
            else:
                refusal, from_query = self._token_refusal(scope, headers, self._token)
        if refusal is not None:
            status, message = refusal
            if scope["type"] == "websocket":
                # Closing before accepting makes the server answer the handshake with 403.
                await send({"type": "websocket.close", "code": 1008, "reason": message})
                return
            response_headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            response = JSONResponse(
                {"error": message}, status_code=status, headers=response_headers
            )
            await response(scope, receive, send)
            return
        if (
            from_query
            and scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and _route_path(scope) in ("", "/")
        ):
            await _remember_token(scope, self._token)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    # -- the rules -------------------------------------------------------------------------

    @staticmethod
    def _origin_refusal(headers: Headers) -> tuple[int, str] | None:
        origin = headers.get("origin")
        if origin is None:
            return None  # not a browser's cross-origin request (curl, httpx, same-origin GET)
        host = headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            return 403, "cross-origin requests to the debugger are refused; open it directly"
        return None

    @staticmethod
    def _loopback_refusal(scope: Scope, headers: Headers) -> tuple[int, str] | None:
        client = scope.get("client")
        if client is None or not _is_loopback_ip(str(client[0])):
            return 403, (
                "the debugger without a token only serves loopback clients; "
                "connect from this machine or start it with a token"
            )
        if any(name in headers for name in _PROXY_HEADERS):
            return 403, "the debugger without a token is not served through a proxy; set a token"
        if not _is_loopback_host(headers.get("host", "localhost")):
            return 403, (
                "the debugger without a token only answers to a loopback host name "
                "(localhost, 127.0.0.1, [::1]); set a token to serve other names"
            )
        return None

    @staticmethod
    def _token_refusal(
        scope: Scope, headers: Headers, expected: bytes
    ) -> tuple[tuple[int, str] | None, bool]:
        offered: list[tuple[str, bool]] = []
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials:
            offered.append((credentials.strip(), False))
        query_token = QueryParams(scope.get("query_string", b"")).get("token")
        if query_token:
            offered.append((query_token, True))
        cookie = _cookie(headers, COOKIE_NAME)
        if cookie:
            offered.append((cookie, False))
        if not offered:
            return (401, "the debugger needs its token (Authorization: Bearer, or ?token=)"), False
        for candidate, from_query in offered:
            if hmac.compare_digest(candidate.encode(), expected):
                return None, from_query
        return (401, "wrong debugger token"), False


def _cookie(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        value = cookie_parser(header).get(name)
        if value:
            return value
    return None


def _route_path(scope: Scope) -> str:
    """The path inside the debugger's mount point."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _remember_token(scope: Scope, token: bytes | None) -> Response:
    """Redirect to the same URL without ``?token=``, keeping the token in a cookie."""
    url = URL(scope=scope)
    kept = [(k, v) for k, v in QueryParams(url.query).multi_items() if k != "token"]
    location = url.path + (f"?{urlencode(kept)}" if kept else "")
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        (token or b"").decode(),
        path=f"{scope.get('root_path', '').rstrip('/')}/",
        httponly=True,
        samesite="strict",
        secure=url.scheme in ("https", "wss"),
    )
    return response
