"""The edge bounds on their own: storable text, tool arguments, the request body limit."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from sagents.web._limits import (
    MAX_DEPTH,
    MAX_KEY_CHARS,
    MAX_STRING_CHARS,
    BodyLimitMiddleware,
    check_arguments,
    check_storable,
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a\x00b", "U+0000"),
        ("\x00", "U+0000"),
        ("half of a pair: \ud83d", "lone surrogate U+D83D"),
        ("\udfff at the start", "lone surrogate U+DFFF"),
    ],
)
def test_text_no_database_stores_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        check_storable(text)


@pytest.mark.parametrize("text", ["", "plain", "emoji \U0001f600 é ß 中", "tab\tand\nnewline"])
def test_ordinary_text_is_storable(text: str) -> None:
    assert check_storable(text) is text


def nested(depth: int) -> dict[str, Any]:
    """``{"k": {"k": ... {}}}`` with ``depth`` levels, built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (nested(MAX_DEPTH + 1), "deeper than"),
        ({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "deeper than"),
        ({"k" * (MAX_KEY_CHARS + 1): 1}, "a key is longer"),
        ({"content": "x" * (MAX_STRING_CHARS + 1)}, "a string is longer"),
        ({"a\x00": 1}, "a key contains U\\+0000"),
        ({"a": ["ok", {"b": "\x00"}]}, "a string contains U\\+0000"),
        ({"a": "\ud800"}, "lone surrogate"),
        ({"a": float("nan")}, "finite"),
        ({"a": float("inf")}, "finite"),
        ({"a": {1, 2}}, "not a JSON value"),
    ],
)
def test_tool_arguments_past_the_bounds_are_refused(arguments: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_arguments(arguments)


def test_tool_arguments_within_the_bounds_are_accepted() -> None:
    arguments = {
        "file_path": "/notes/x.md",
        "content": "x" * MAX_STRING_CHARS,
        # levels: the arguments, the list, the dict, then the nested value's own.
        "k" * MAX_KEY_CHARS: [1, 2.5, True, None, {"deep": nested(MAX_DEPTH - 3)}],
    }
    assert check_arguments(arguments) is arguments


def test_arguments_nested_past_the_recursion_limit_are_measured_without_recursing() -> None:
    deep: list[Any] = []
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper than"):
        check_arguments({"a": deep})


# -- the body limit ------------------------------------------------------------------------------


class Echo:
    """An app that answers with the size of the body it received, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        payload = json.dumps({"size": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})


LIMIT = 1000


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
async def limited(echo: Echo) -> AsyncIterator[httpx.AsyncClient]:
    app = BodyLimitMiddleware(echo, max_bytes=LIMIT)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_a_body_within_the_limit_reaches_the_app_whole(
    limited: httpx.AsyncClient, echo: Echo
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * (LIMIT // 10)

    assert (await limited.post("/", content=b"x" * LIMIT)).json() == {"size": LIMIT}
    assert (await limited.post("/", content=chunks())).json() == {"size": LIMIT}
    assert (await limited.post("/")).json() == {"size": 0}
    assert echo.calls == 3


async def test_a_declared_length_over_the_limit_is_refused_unread(
    limited: httpx.AsyncClient, echo: Echo
) -> None:
    response = await limited.post("/", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == {
        "error": "too_large",
        "detail": f"request bodies are limited to {LIMIT} bytes",
    }
    assert response.headers["connection"] == "close"
    assert echo.calls == 0


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(
    limited: httpx.AsyncClient, echo: Echo
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while True:  # 100 MB and more, if anybody kept reading
            sent += 1
            yield b"x" * 300

    response = await limited.post("/", content=endless())
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert sent == 4  # read up to the first chunk past 1000 bytes, then no more
    assert echo.calls == 0


async def test_a_client_that_leaves_mid_body_gets_no_answer_and_the_app_is_not_called(
    echo: Echo,
) -> None:
    app = BodyLimitMiddleware(echo, max_bytes=LIMIT)
    incoming: list[Message] = [
        {"type": "http.request", "body": b"x", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    await app(scope, receive, send)
    assert sent == []
    assert echo.calls == 0
