"""Regression tests of the REST API's edge: what a client may send, and what it is told.

Each defect found by probing the demo has a test named after it. The app runs in-process behind
httpx's ASGI transport (its lifespan entered by hand), so no server or socket is involved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sagents._errors import PersistenceFailed, StateError
from sagents._status import Status
from sagents.events import StatusChanged
from sagents.persistence._protocols import DisplayMessage
from sagents.session._session import Session
from sagents.web import WebServices, create_app
from tests.web.conftest import demo_config

BASE = "http://testserver"


@contextlib.asynccontextmanager
async def running_app(tmp_path: Path, **overrides: Any) -> AsyncIterator[Api]:
    app = create_app(demo_config(tmp_path, model_delay=0.0, **overrides))
    async with app.router.lifespan_context(app):
        # raise_app_exceptions=False: a bug answers 500 here as it would over a real server.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield Api(client=client, services=app.state.services)


class Api:
    """The app's HTTP client and its services."""

    def __init__(self, *, client: httpx.AsyncClient, services: WebServices) -> None:
        self.client = client
        self.services = services

    async def create(self) -> str:
        response = await self.client.post("/api/conversations", json={})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def snapshot(self, conversation: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/conversations/{conversation}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def until(self, conversation: str, status: Status, after: int = 0) -> int:
        """Wait for the agent to reach ``status`` after event ``after``; return that event's seq.

        The events are replayed from the agent's buffer, so the status may have been reached
        before the call.
        """
        handle = self.services.runtime.agent(self.services.agent_id(conversation))
        async with handle.subscribe(after_seq=after) as events:
            async for event in events:
                if isinstance(event, StatusChanged) and event.status == status:
                    return event.seq
        raise AssertionError(f"the agent stopped before it was {status.value}")

    async def interrupted(self) -> tuple[str, int]:
        """A conversation waiting for approval of a ``write_file`` call, and the event's seq."""
        conversation = await self.create()
        sent = await self.client.post(
            f"/api/conversations/{conversation}/messages", json={"text": "Edge cases"}
        )
        assert sent.status_code == 202, sent.text
        return conversation, await self.until(conversation, Status.INTERRUPTED)


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(tmp_path: Path) -> AsyncIterator[StartApi]:
    """Start the app in-process with configuration overrides."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Api:
            return await stack.enter_async_context(running_app(tmp_path, **overrides))

        yield start


@pytest.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = dict(response.json())
    assert body["error"] == code, body
    return body


def routes(conversation: str) -> list[tuple[str, str, Any]]:
    """The six routes of one conversation, each with a valid body."""
    base = f"/api/conversations/{conversation}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"title": "x"}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"text": "hi"}),
        ("POST", f"{base}/cancel", None),
        ("POST", f"{base}/decisions", {"decisions": [{"type": "approve"}]}),
    ]


# -- 1. ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["a" * 256, "a" * 5000, "nul%00id"])  # %00: U+0000
async def test_defect_conversation_id_over_255_characters_is_a_422_on_every_route(
    api: Api, bad_id: str
) -> None:
    for method, path, body in routes(bad_id):
        response = await api.client.request(method, path, json=body)
        error = assert_error(response, 422, "invalid")
        assert error["detail"][0]["loc"] == ["path", "conversation_id"], (method, path)
    # The longest id the store accepts is merely unknown.
    assert_error(await api.client.get(f"/api/conversations/{'a' * 255}"), 404, "not_found")


# -- 2. bodies, strings, nesting -----------------------------------------------------------------


async def test_defect_100_mb_decisions_body_is_refused_with_413_before_parsing(api: Api) -> None:
    conversation = await api.create()
    megabytes = 0

    async def hundred_megabytes() -> AsyncIterator[bytes]:
        nonlocal megabytes
        yield b'{"decisions": [{"type": "reject", "message": "'
        for _ in range(100):
            megabytes += 1
            yield b"x" * (1 << 20)
        yield b'"}]}'

    path = f"/api/conversations/{conversation}/decisions"
    response = await api.client.post(path, content=hundred_megabytes())
    assert_error(response, 413, "too_large")
    assert megabytes == 1  # the first megabyte is past the limit: nothing more was read
    declared = await api.client.post(path, content=b" " * (api.services.config.max_body_bytes + 1))
    assert_error(declared, 413, "too_large")
    assert (await api.snapshot(conversation))["status"] == "not_running"


async def test_defect_huge_key_in_edit_arguments_is_refused(api: Api) -> None:
    conversation, _ = await api.interrupted()
    path = f"/api/conversations/{conversation}/decisions"

    def edit(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"decisions": [{"type": "edit", "arguments": arguments}]}

    huge = await api.client.post(path, json=edit({"k" * (20 << 20): 1}))
    assert_error(huge, 413, "too_large")
    long_key = await api.client.post(path, json=edit({"k" * 300: 1}))
    assert "a key is longer" in assert_error(long_key, 422, "invalid")["detail"][0]["msg"]
    long_string = await api.client.post(path, json=edit({"content": "x" * 200_001}))
    assert "a string is longer" in assert_error(long_string, 422, "invalid")["detail"][0]["msg"]
    # Nothing was stored, and the approval still waits.
    snapshot = await api.snapshot(conversation)
    assert snapshot["status"] == "interrupted"
    assert "k" * 300 not in json.dumps(snapshot)


async def test_defect_edit_arguments_nested_300_deep_are_refused_and_get_keeps_working(
    api: Api,
) -> None:
    conversation, interrupted = await api.interrupted()
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"k": deep}
    arguments = {"file_path": "/notes/edge-cases.md", "content": deep}
    response = await api.client.post(
        f"/api/conversations/{conversation}/decisions",
        json={"decisions": [{"type": "edit", "arguments": arguments}]},
    )
    assert "deeper than" in assert_error(response, 422, "invalid")["detail"][0]["msg"]
    assert (await api.snapshot(conversation))["status"] == "interrupted"
    # A body nested past what the JSON parser takes is not JSON to us.
    too_deep = b'{"decisions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await api.client.post(
        f"/api/conversations/{conversation}/decisions",
        content=too_deep,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "bad_json")
    approved = await api.client.post(
        f"/api/conversations/{conversation}/decisions", json={"decisions": [{"type": "approve"}]}
    )
    assert approved.status_code == 202, approved.text
    await api.until(conversation, Status.IDLE, after=interrupted)
    assert (await api.snapshot(conversation))["status"] == "idle"


async def test_a_conversation_already_holding_deep_or_unpaired_content_stays_readable(
    api: Api,
) -> None:
    """Stored before the edge refused such values: its page must still load."""
    conversation = await api.create()
    scope = (await api.client.get("/api/me")).json()["identity"]
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"k": deep}
    await api.services.store.append_display_messages(
        scope,
        conversation,
        [
            DisplayMessage(conversation_id=conversation, type="user", content={"deep": deep}),
            DisplayMessage(conversation_id=conversation, type="user", content={"text": "\ud800"}),
        ],
    )
    messages = (await api.snapshot(conversation))["messages"]
    assert messages[0]["content"] == {"deep": deep}
    assert messages[1]["content"] == {"text": "\ud800"}


async def test_defect_rest_message_limit_reads_max_message_chars(start_api: StartApi) -> None:
    api = await start_api(max_message_chars=10)
    conversation = await api.create()
    path = f"/api/conversations/{conversation}/messages"
    error = assert_error(await api.client.post(path, json={"text": "x" * 11}), 422, "invalid")
    assert error["detail"] == [
        {"loc": ["body", "text"], "msg": "String should have at most 10 characters"}
    ]
    assert (await api.snapshot(conversation))["status"] == "not_running"
    assert (await api.client.post(path, json={"text": "x" * 10})).status_code == 202


# -- 3. NUL, lone surrogates, storage errors ----------------------------------------------------


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "ok\x00then", "\udc00 low"])
async def test_defect_nul_and_lone_surrogates_are_refused_in_every_stored_text(
    api: Api, bad: str
) -> None:
    conversation = await api.create()
    base = f"/api/conversations/{conversation}"
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/api/conversations", {"title": bad}),
        ("PATCH", base, {"title": bad}),
        ("POST", f"{base}/messages", {"text": bad}),
        ("POST", f"{base}/decisions", {"decisions": [{"type": "reject", "message": bad}]}),
        ("POST", f"{base}/decisions", {"decisions": [{"type": "edit", "arguments": {"a": bad}}]}),
        ("POST", f"{base}/decisions", {"decisions": [{"type": "edit", "arguments": {bad: 1}}]}),
        ("POST", f"{base}/decisions", {"decisions": [{"type": "edit", "arguments": {"a": [bad]}}]}),
    ]
    for method, path, body in requests:
        # json.dumps escapes both as \u0000 and \ud800: valid JSON, as a browser would send it.
        content = json.dumps(body).encode()
        response = await api.client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
        assert_error(response, 422, "invalid")
    # The agent never ran and nothing was stored.
    snapshot = await api.snapshot(conversation)
    assert snapshot["status"] == "not_running"
    assert snapshot["messages"] == []
    assert snapshot["conversation"]["title"] is None
    listed = (await api.client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [conversation]


POSTGRES_URL = os.environ.get(
    "SAGENTS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@contextlib.asynccontextmanager
async def scratch_postgres_database() -> AsyncIterator[str]:
    """A new, empty database on the test server (the app migrates it), dropped afterwards."""
    asyncpg = pytest.importorskip("asyncpg")
    admin_url = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        admin = await asyncpg.connect(admin_url, timeout=5)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}")
    name = f"sagents_web_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_defect_nul_message_on_postgresql_is_refused_and_later_saves_work(
    tmp_path: Path,
) -> None:
    async with (
        scratch_postgres_database() as url,
        running_app(tmp_path, database_url=url) as api,
    ):
        conversation = await api.create()
        path = f"/api/conversations/{conversation}/messages"
        refused = await api.client.post(path, json={"text": "before\x00after"})
        assert_error(refused, 422, "invalid")
        assert (await api.snapshot(conversation))["status"] == "not_running"
        # The conversation is untouched: a real message runs, and its state is saved.
        assert (await api.client.post(path, json={"text": "Clean text"})).status_code == 202
        interrupted = await api.until(conversation, Status.INTERRUPTED)
        approved = await api.client.post(
            f"/api/conversations/{conversation}/decisions",
            json={"decisions": [{"type": "approve"}]},
        )
        assert approved.status_code == 202, approved.text
        await api.until(conversation, Status.IDLE, after=interrupted)
        scope = (await api.client.get("/api/me")).json()["identity"]
        services = api.services
        # Stopping saves the state: the save that a stored U+0000 used to break.
        await Session.stop(
            services.runtime, services.session_config, conversation, reason="test", scope=scope
        )
        stored = await services.store.load_state(scope, conversation)
        assert stored is not None
        assert [m.content for m in stored.state.messages if m.type == "human"] == ["Clean text"]
        snapshot = await api.snapshot(conversation)
        assert snapshot["conversation"]["title"] == "Clean text"
        assert snapshot["messages"][0]["content"] == {"text": "Clean text"}


SQL = 'could not load conversation: UndefinedTableError: relation "sagents_conversations" ...'


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (PersistenceFailed(SQL), 503, "unavailable"),
        (StateError(f"{SQL}: invalid byte sequence for encoding UTF8: 0x00"), 500, "internal"),
        (RuntimeError(SQL), 500, "internal"),
    ],
)
async def test_defect_database_errors_never_reach_the_client_verbatim(
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
    status: int,
    code: str,
) -> None:
    conversation = await api.create()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise failure

    for method in ("get_conversation", "update_conversation", "delete_conversation"):
        monkeypatch.setattr(api.services.store, method, broken)
    with caplog.at_level(logging.DEBUG):
        for method, path, body in routes(conversation):
            response = await api.client.request(method, path, json=body)
            error = assert_error(response, status, code)
            assert "sagents_conversations" not in response.text
            assert "relation" not in str(error["detail"])
    if isinstance(failure, PersistenceFailed | StateError):
        # The operator finds the detail in the log. (A RuntimeError is a bug: Starlette answers,
        # then re-raises it for the server to log with its traceback.)
        assert any(r.exc_info and r.exc_info[1] is failure for r in caplog.records)


# -- 4. origin -----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://evil.example", "null"])
async def test_defect_cross_origin_state_changing_requests_are_refused(
    api: Api, origin: str
) -> None:
    conversation = await api.create()
    foreign = {"Origin": origin}
    created = await api.client.post("/api/conversations", headers=foreign)
    assert_error(created, 403, "forbidden")
    for method, path, body in routes(conversation):
        if method == "GET":
            continue
        response = await api.client.request(method, path, json=body, headers=foreign)
        assert_error(response, 403, "forbidden")
    # Nothing changed; reading is not refused (the browser keeps the answer from that page).
    listed = await api.client.get("/api/conversations", headers=foreign)
    assert [c["id"] for c in listed.json()["conversations"]] == [conversation]
    assert (await api.snapshot(conversation))["conversation"]["title"] is None


async def test_same_origin_and_origin_less_requests_are_accepted(api: Api) -> None:
    for headers in ({"Origin": BASE}, {"Origin": BASE.upper()}, {}):
        response = await api.client.post("/api/conversations", headers=headers)
        assert response.status_code == 201, (headers, response.text)


# -- random bodies ------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: Python's JSON parser takes them
    | st.text(max_size=20)
    | st.sampled_from(["\x00", "\ud800", "a\udfffb", "approve", "edit", "reject"])
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@st.composite
def _deep(draw: st.DrawFn) -> str:
    """Nesting as deep as a few thousand levels, as JSON text (json.dumps would recurse)."""
    depth = draw(st.integers(1, 3000))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
    return opening * depth + "1" + closing * depth


@st.composite
def _big(draw: st.DrawFn) -> str:
    size = draw(st.sampled_from([1_000, 20_001, 200_001, 300_000]))
    return json.dumps(draw(st.sampled_from(["x", "\x00", "é"])) * size)


def _text(value: Any) -> str:
    return json.dumps(value)


_plain = st.text(min_size=1, max_size=30).map(_text)  # mostly valid: some requests succeed
_value = _plain | _json.map(_text) | _deep() | _big()


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[str, str]:
    """A route and a JSON text body of roughly its shape, or of none."""
    route = draw(st.sampled_from(["messages", "decisions", "rename"]))
    value = draw(_value)
    shapes = {
        "messages": ['{"text": %s}', "%s"],
        "rename": ['{"title": %s}', "%s"],
        "decisions": [
            '{"decisions": %s}',
            '{"decisions": [{"type": "edit", "arguments": %s}]}',
            '{"decisions": [{"type": "edit", "arguments": {"content": %s}}]}',
            '{"decisions": [{"type": "reject", "message": %s}]}',
            '{"decisions": [{"type": "edit", "arguments": {"file_path": %s, "content": "x"}}]}',
            '{"decisions": [%s]}',
            "%s",
        ],
    }
    return route, draw(st.sampled_from(shapes[route])) % value


@pytest.fixture
async def fuzzed(api: Api) -> tuple[Api, str]:
    return api, await api.create()


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies())
async def test_random_json_bodies_get_a_4xx_json_error_or_success_never_a_500(
    fuzzed: tuple[Api, str], body: tuple[str, str]
) -> None:
    api, conversation = fuzzed
    route, content = body
    method, path = {
        "messages": ("POST", f"/api/conversations/{conversation}/messages"),
        "decisions": ("POST", f"/api/conversations/{conversation}/decisions"),
        "rename": ("PATCH", f"/api/conversations/{conversation}"),
    }[route]
    response = await api.client.request(
        method, path, content=content.encode(), headers={"content-type": "application/json"}
    )
    event(f"{route}: {response.status_code}")
    if response.status_code >= 400:
        assert response.status_code < 500, (content[:200], response.text[:500])
        assert response.headers["content-type"].startswith("application/json")
        assert isinstance(response.json()["error"], str)
    # Whatever was accepted, the conversation still loads.
    await api.snapshot(conversation)
