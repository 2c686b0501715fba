"""``conversation_router`` in an application of its own, without a browser: the app's auth on
both doors (HTTP and the websocket), scopes kept apart, resume from a ``seq``, the plug points.

Each test serves a small FastAPI app on uvicorn (a free port): a header or query token mapping
to a scope, ``MemoryPersistence``, an agent that streams an echo of each message.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException, Query
from langchain_core.messages import BaseMessage, HumanMessage
from starlette.requests import HTTPConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from sagents import (
    Agent,
    LocalPresence,
    Runtime,
    SessionConfig,
    SessionOptions,
    SingleFactoryRouter,
)
from sagents._errors import ConfigurationError, RegistryUnavailable
from sagents.persistence import MemoryPersistence
from sagents.session import FactoryConfig
from sagents.testing import Reply, ScriptedChatModel
from sagents.web import ConversationAction, conversation_router
from tests.web.conftest import is_status, next_frame, serving, wait_until


def echo(messages: list[BaseMessage]) -> Reply:
    said = [m for m in messages if isinstance(m, HumanMessage)][-1]
    return Reply(text=f"echo: {said.content}", chunk_size=3)


class EchoFactory:
    """An agent that streams back what it was told."""

    def create_agent(self, agent_id: str, config: FactoryConfig) -> tuple[Agent, SessionOptions]:
        model = ScriptedChatModel(responder=echo, record_prompts=False)
        return Agent(agent_id=agent_id, model=model), SessionOptions()


@dataclass(frozen=True)
class Tenant:
    """A scope that is not a string: an organisation and a user."""

    org: str
    user: int


TOKENS = {"ada": Tenant("acme", 1), "bob": Tenant("acme", 2)}


def user(x_token: str = Header(""), token: str = Query("")) -> Tenant:
    found = TOKENS.get(token or x_token)
    if found is None:
        raise HTTPException(401, "who are you?")
    return found


async def banned(token: str = Query("")) -> Tenant:
    """Async, and refusing with 403: a caller that is known but not allowed."""
    if token == "ada":
        return TOKENS["ada"]
    raise HTTPException(403, "not you")


def session_config(store: MemoryPersistence | None = None) -> SessionConfig:
    store = store or MemoryPersistence()
    return SessionConfig(
        factory_router=SingleFactoryRouter(EchoFactory()),
        agent_persistence=store,
        display_message_persistence=store,
        presence=LocalPresence(),
        grace_period=60.0,
        inactivity_timeout=None,
    )


@dataclass
class App:
    url: str
    runtime: Runtime
    config: SessionConfig

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"X-Token": token} if token else {}
        return httpx.AsyncClient(base_url=f"{self.url}/chat", headers=headers, timeout=10)

    def socket(self, conversation: str, token: str | None, **query: Any) -> Any:
        if token is not None:
            query["token"] = token
        params = "&".join(f"{k}={v}" for k, v in query.items())
        ws = self.url.replace("http", "ws", 1)
        return connect(f"{ws}/chat/conversations/{conversation}/ws?{params}", open_timeout=5)


@contextlib.asynccontextmanager
async def chat_app(**options: Any) -> AsyncIterator[App]:
    """An app with the router at ``/chat`` (``options`` go to ``conversation_router``)."""
    config = options.pop("config", None) or session_config()
    runtime = Runtime()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime:
            yield

    app = FastAPI(lifespan=lifespan)
    options.setdefault("scope", user)
    app.include_router(conversation_router(runtime, config, **options), prefix="/chat")
    async with serving(app) as url:
        yield App(url=url, runtime=runtime, config=config)


async def create(client: httpx.AsyncClient) -> str:
    response = await client.post("/conversations", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def refused_with(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error frame of a refused socket, and its close code."""
    frame = json.loads(await ws.recv())
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None, "closed without a close frame"
    return frame, closed.value.rcvd.code


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == kind


# -- the application's auth ----------------------------------------------------------------------


async def test_the_app_s_auth_guards_both_doors() -> None:
    async with chat_app() as app:
        async with app.client("ada") as ada:
            conversation = await create(ada)
        async with app.client() as nobody:
            for method, path in [
                ("GET", "/conversations"),
                ("POST", "/conversations"),
                ("GET", f"/conversations/{conversation}"),
            ]:
                response = await nobody.request(method, path)
                assert response.status_code == 401, (method, path)
            # The client is public: a page loads it before anyone signs in.
            script = await nobody.get("/sagents-client.js")
            assert script.status_code == 200
            assert script.headers["content-type"].startswith("text/javascript")
            assert "export function connect" in script.text
        for token in (None, "mallory"):
            async with app.socket(conversation, token) as ws:
                frame, code = await refused_with(ws)
            assert frame == {"type": "error", "code": "unauthorized", "message": "who are you?"}
            assert code == 4401
        async with app.socket(conversation, "ada") as ws:
            assert (await next_frame(ws, lambda f: True))["type"] == "detached"


async def test_a_refusal_keeps_its_status_as_the_close_code() -> None:
    async with chat_app(scope=banned) as app:
        async with app.client() as client:
            created = await client.post("/conversations", params={"token": "ada"})
            conversation = created.json()["id"]
            assert (await client.get("/conversations", params={"token": "bob"})).status_code == 403
        async with app.socket(conversation, "bob") as ws:
            frame, code = await refused_with(ws)
        assert (frame["code"], frame["message"], code) == ("forbidden", "not you", 4403)
        async with app.socket(conversation, "ada") as ws:
            assert (await next_frame(ws, lambda f: True))["type"] == "detached"


# -- scopes --------------------------------------------------------------------------------------


async def test_two_scopes_are_kept_apart() -> None:
    async with chat_app() as app, app.client("ada") as ada, app.client("bob") as bob:
        mine = await create(ada)
        theirs = await create(bob)
        listed = (await ada.get("/conversations")).json()["conversations"]
        assert [c["id"] for c in listed] == [mine]
        assert (await bob.get(f"/conversations/{mine}")).json()["error"] == "not_found"
        assert (await bob.get(f"/conversations/{mine}")).status_code == 404
        async with app.socket(mine, "bob") as ws:
            frame, code = await refused_with(ws)
        assert (frame["code"], code) == ("not_found", 4404)
        # Ada's conversation runs as Ada's: Bob's list and snapshot still know nothing of it.
        async with app.socket(mine, "ada") as ws:
            await ws.send(json.dumps({"type": "send", "text": "hello", "ref": "m1"}))
            await next_frame(ws, is_status("idle"))
        info = await app.runtime.agent_info(app.config.agent_id_for(mine))
        assert info is not None
        assert info.scope == Tenant("acme", 1)
        assert [c["id"] for c in (await bob.get("/conversations")).json()["conversations"]] == [
            theirs
        ]
        snapshot = (await ada.get(f"/conversations/{mine}")).json()
        assert [m["type"] for m in snapshot["messages"]] == ["user", "assistant"]
        assert snapshot["messages"][1]["content"]["text"] == "echo: hello"
        assert snapshot["conversation"]["title"] == "hello"  # the first words of the first message


# -- the socket ----------------------------------------------------------------------------------


async def test_a_socket_resumes_after_its_last_seq() -> None:
    async with chat_app() as app, app.client("ada") as ada:
        conversation = await create(ada)
        async with app.socket(conversation, "ada") as ws:
            await next_frame(ws, is_type("detached"))
            await ws.send(json.dumps({"type": "send", "text": "one two three four"}))
            attached = await next_frame(ws, is_type("attached"))
            seen: list[dict[str, Any]] = []
            while not seen or not is_status("idle")({"type": "event", "event": seen[-1]}):
                seen.append((await next_frame(ws, is_type("event")))["event"])
        instance = attached["instance"]
        middle = seen[len(seen) // 2]["seq"]
        # Reconnecting with the last seq seen within this instance: the rest is replayed.
        async with app.socket(conversation, "ada", after_seq=middle, instance=instance) as ws:
            again = await next_frame(ws, lambda f: True)
            assert again == {
                "type": "attached",
                "status": "idle",
                "instance": instance,
                "resumed": True,
            }
            replayed = [(await next_frame(ws, is_type("event")))["event"]]
            while replayed[-1] != seen[-1]:
                replayed.append((await next_frame(ws, is_type("event")))["event"])
        seqs = [event["seq"] for event in replayed]
        assert seqs == sorted(seqs)
        assert seqs[0] > middle
        assert all(event in seen for event in replayed)  # nothing new, nothing twice
        # Another instance's numbering: no resume, the page reloads the snapshot instead.
        async with app.socket(conversation, "ada", after_seq=middle, instance=instance + 1) as ws:
            assert (await next_frame(ws, lambda f: True))["resumed"] is False


async def test_actions_are_answered_and_a_bad_frame_does_not_end_the_socket() -> None:
    async with chat_app(max_message_chars=10) as app, app.client("ada") as ada:
        conversation = await create(ada)
        async with app.socket(conversation, "ada") as ws:
            await ws.send(json.dumps({"type": "cancel", "ref": "c"}))
            refused = await next_frame(ws, is_type("error"))
            assert (refused["code"], refused["ref"]) == ("conflict", "c")
            await ws.send(json.dumps({"type": "send", "text": "x" * 11, "ref": "long"}))
            too_long = await next_frame(ws, is_type("error"))
            assert (too_long["code"], too_long["ref"]) == ("invalid", "long")
            await ws.send("not json")
            assert (await next_frame(ws, is_type("error")))["code"] == "bad_json"
            await ws.send(json.dumps({"type": "ping", "ref": "p"}))
            assert await next_frame(ws, is_type("pong")) == {"type": "pong", "ref": "p"}


async def test_the_socket_is_a_viewer_of_the_conversation() -> None:
    async with chat_app() as app, app.client("ada") as ada:
        conversation = await create(ada)
        presence = app.config.presence
        assert presence is not None
        topic = app.config.presence_topic(conversation)
        async with app.socket(conversation, "ada") as ws:
            await next_frame(ws, is_type("detached"))
            viewers = await presence.list(topic)
            assert [meta for metas in viewers.values() for meta in metas] == [
                {"scope": Tenant("acme", 1), "via": "websocket"}
            ]

        async def gone() -> bool:  # the handler ends after the close: the viewer goes with it
            return not await presence.list(topic)

        await wait_until(gone)


# -- origins and plug points ---------------------------------------------------------------------


async def test_other_origins_are_refused_unless_listed() -> None:
    elsewhere = "http://localhost:3000"
    for allowed, expected in [((), 403), ((elsewhere,), 201)]:
        async with chat_app(allowed_origins=allowed) as app, app.client("ada") as ada:
            created = await ada.post("/conversations", headers={"Origin": elsewhere})
            assert created.status_code == expected
            conversation = await create(ada)
            ws_url = app.url.replace("http", "ws", 1)
            async with connect(
                f"{ws_url}/chat/conversations/{conversation}/ws?token=ada",
                origin=Origin(elsewhere),
            ) as ws:
                first = json.loads(await ws.recv())
                if expected == 403:
                    assert first["code"] == "forbidden"
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 4403
                else:
                    assert first["type"] == "detached"


async def test_a_conversation_is_renamed_and_deleted_by_its_own_scope_only() -> None:
    seen: list[tuple[str, str | None]] = []

    async def record(action: ConversationAction) -> None:
        seen.append((action.kind, action.conversation_id))

    async with (
        chat_app(before_action=record) as app,
        app.client("ada") as ada,
        app.client("bob") as bob,
    ):
        mine = await create(ada)
        async with app.socket(mine, "ada") as ws:  # its agent runs
            await ws.send(json.dumps({"type": "send", "text": "hello", "ref": "m1"}))
            await next_frame(ws, is_status("idle"))
            # Bob knows nothing of it: he can neither rename nor delete it.
            for attempt in (
                bob.patch(f"/conversations/{mine}", json={"title": "mine now"}),
                bob.delete(f"/conversations/{mine}"),
            ):
                refused = await attempt
                assert (refused.status_code, refused.json()["error"]) == (404, "not_found")
            renamed = await ada.patch(f"/conversations/{mine}", json={"title": "Plans"})
            assert renamed.status_code == 200
            assert renamed.json()["title"] == "Plans"
            assert renamed.json()["status"] == "idle"
            other_origin = await ada.delete(
                f"/conversations/{mine}", headers={"Origin": "http://localhost:3000"}
            )
            assert other_origin.status_code == 403
            assert (await ada.delete(f"/conversations/{mine}")).status_code == 204
        assert app.config.agent_id_for(mine) not in app.runtime.list_running_agents()
        assert (await ada.get(f"/conversations/{mine}")).status_code == 404
        assert (await ada.get("/conversations")).json()["conversations"] == []
        assert (await ada.delete(f"/conversations/{mine}")).status_code == 404
    # Each of them went through before_action first (Bob's too; not the other origin's).
    assert [kind for kind, _ in seen if kind in ("rename", "delete")] == [
        "rename",
        "delete",
        "rename",
        "delete",
        "delete",
    ]


async def test_before_action_can_refuse_an_action() -> None:
    seen: list[ConversationAction] = []

    async def draining(action: ConversationAction) -> None:
        seen.append(action)
        if action.kind != "cancel":
            raise RegistryUnavailable("shutting down; try again in a moment")

    async with chat_app(before_action=draining) as app, app.client("ada") as ada:
        refused = await ada.post("/conversations", json={"title": "x"})
        assert refused.status_code == 503
        assert refused.json() == {
            "error": "unavailable",
            "detail": "shutting down; try again in a moment",
        }
        store = app.config.agent_persistence
        assert isinstance(store, MemoryPersistence)
        conversation = (await store.create_conversation(Tenant("acme", 1))).id
        async with app.socket(conversation, "ada") as ws:
            await ws.send(json.dumps({"type": "send", "text": "hi", "ref": "s"}))
            assert (await next_frame(ws, is_type("error")))["code"] == "unavailable"
    assert [(a.kind, a.scope, a.conversation_id) for a in seen] == [
        ("create", Tenant("acme", 1), None),
        ("send", Tenant("acme", 1), conversation),
    ]


async def test_the_runtime_and_configuration_may_come_from_the_connection() -> None:
    config = session_config()
    runtime = Runtime()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime:
            app.state.runtime = runtime
            yield

    def runtime_of(connection: HTTPConnection) -> Runtime:
        found: Runtime = connection.app.state.runtime
        return found

    app = FastAPI(lifespan=lifespan)
    router = conversation_router(runtime_of, lambda _: config, scope=user)
    app.include_router(router, prefix="/chat")
    async with serving(app) as url:
        served = App(url=url, runtime=runtime, config=config)
        async with served.client("ada") as ada:
            conversation = await create(ada)
        async with served.socket(conversation, "ada") as ws:
            await ws.send(json.dumps({"type": "send", "text": "hi"}))
            frame = await next_frame(ws, is_event_of("llm_message"))
            assert frame["event"]["message"]["data"]["content"] == "echo: hi"


def is_event_of(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "event" and frame["event"]["type"] == kind


def test_a_configuration_without_a_conversation_store_is_refused_at_once() -> None:
    config = SessionConfig(factory_router=SingleFactoryRouter(EchoFactory()))
    with pytest.raises(ConfigurationError, match="ConversationStore"):
        conversation_router(Runtime(), config)
    with pytest.raises(ConfigurationError, match="allowed_origins"):
        conversation_router(Runtime(), session_config(), allowed_origins="http://x")
    with pytest.raises(ConfigurationError, match="max_frame_bytes"):
        conversation_router(Runtime(), session_config(), max_frame_bytes=0)
