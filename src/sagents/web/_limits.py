"""What a client may send: ids, texts, tool arguments and request bodies, bounded at the edge.

The REST routes and the websocket are the only doors through which outside data reaches the
agents and the database, so both apply the same bounds here, before anything runs or is stored:

* **Body size.** :class:`BodyLimitMiddleware` reads an HTTP request body chunk by chunk and
  answers 413 as soon as it passes ``WebConfig.max_body_bytes``, before any JSON parsing; a body
  that announces a larger ``Content-Length`` is refused unread. A 100 MB body therefore costs
  at most the limit in memory. (The websocket bounds each frame by ``max_frame_bytes``.)
* **Storable text.** Conversation ids, messages, titles, rejection messages and every string and
  key of edited tool arguments must be text that every database stores: no U+0000 (PostgreSQL
  refuses it in ``text`` and ``jsonb``) and no lone surrogate (not Unicode at all: it has no
  UTF-8 encoding). Refused here, they never reach the agent's state — once there, every later
  save of that conversation would fail.
* **Shape of tool arguments.** At most :data:`MAX_DEPTH` levels of nesting, keys of at most
  :data:`MAX_KEY_CHARS` and strings of at most :data:`MAX_STRING_CHARS` characters, finite
  numbers. Arguments are stored, shown to every tab and sent to the model; a value nested a few
  hundred levels deep is accepted by a JSON parser but not by every serializer after it.
* **Ids.** :data:`ConversationId`: 1 to 255 characters, the store's own limit, and storable.

The store checks ids too, but only after the request got that far (and as a ``ValueError``):
bounding at the edge gives the client a precise 4xx answer and keeps the agent untouched.

Why a middleware of our own rather than Starlette's ``RequestBodyLimitMiddleware``: that one
answers a too-large declared body with a plain-text 413, while every error of this API is JSON.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sagents.persistence._common import MAX_ID_LENGTH

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_CHARS",
    "MAX_STRING_CHARS",
    "MAX_TITLE_CHARS",
    "BodyLimitMiddleware",
    "ConversationId",
    "StorableText",
    "Title",
    "ToolArguments",
    "check_arguments",
    "check_storable",
]

#: The deepest nesting accepted in edited tool arguments (the arguments object is level 1).
MAX_DEPTH = 32
#: The longest key accepted in edited tool arguments.
MAX_KEY_CHARS = 256
#: The longest string accepted in edited tool arguments (a file's content, say).
MAX_STRING_CHARS = 200_000
#: The longest conversation title.
MAX_TITLE_CHARS = 200

# U+0000, and the surrogate code points, which only ever appear in a ``str`` alone (a JSON
# "\ud800" escape): a valid pair is decoded into one character above U+FFFF.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_storable(text: str) -> str:
    """Return ``text`` unless it holds a character no database stores.

    Raises:
        ValueError: ``text`` contains U+0000 or a lone surrogate.
    """
    found = _UNSTORABLE.search(text)
    if found is None:
        return text
    if found.group() == "\x00":
        raise ValueError(
            f"contains U+0000 (NUL) at position {found.start()}, which cannot be stored; remove it"
        )
    raise ValueError(
        f"contains a lone surrogate U+{ord(found.group()):04X} at position {found.start()}, "
        "which is not valid Unicode; send UTF-8 text"
    )


def check_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Return ``arguments`` unless they exceed the bounds of edited tool arguments.

    The walk is iterative, so even a value nested past Python's recursion limit is measured
    without recursing.

    Raises:
        ValueError: too deep, a key or string too long or not storable, a non-finite number, or
            a value that is not JSON.
    """
    pending: list[tuple[Any, int]] = [(arguments, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise ValueError(f"keys must be strings, got {type(key).__name__}")
                    _check_string(key, MAX_KEY_CHARS, "a key")
                    pending.append((item, depth + 1))
            else:
                pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_string(value, MAX_STRING_CHARS, "a string")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"numbers must be finite, got {value}")
        elif value is not None and not isinstance(value, bool | int):
            raise ValueError(f"{type(value).__name__} is not a JSON value")
    return arguments


def _check_string(text: str, limit: int, what: str) -> None:
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    try:
        check_storable(text)
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None


#: Text that can be stored: a message, a rejection message.
StorableText = Annotated[str, AfterValidator(check_storable)]

#: A conversation id as a client may name one: what the store accepts, and storable.
ConversationId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    AfterValidator(check_storable),
]

#: A conversation title.
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS),
    AfterValidator(check_storable),
]

#: Edited tool arguments (a human-approval ``edit`` decision).
ToolArguments = Annotated[dict[str, Any], AfterValidator(check_arguments)]


class BodyLimitMiddleware:
    """Refuse HTTP request bodies over ``max_bytes`` with a JSON 413, before the app parses them.

    The body is read here, chunk by chunk, and handed to the app whole once it is known to fit;
    every route of the app takes small JSON bodies, so holding one in memory is the cost the
    app would pay anyway. A client that leaves mid-body gets no answer (there is nobody to
    answer).

    Args:
        app: the application.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # http.disconnect: the client left before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: wait for the disconnect
            message: Message = {"type": "http.request", "body": body, "more_body": False}
            body = None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The rest of the body stays unread: the connection cannot be reused, so say so.
        response = JSONResponse(
            {
                "error": "too_large",
                "detail": f"request bodies are limited to {self.max_bytes} bytes",
            },
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # the server refuses a malformed length itself; count the bytes instead
