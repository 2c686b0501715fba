"""The conversation websocket: validation of every inbound frame, scope, resume, presence."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import httpx
import pytest
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from sagents._errors import PersistenceFailed, StateError
from sagents.web._conversations import Conversations
from sagents.web._identity import COOKIE_NAME
from sagents.web._protocol import PingFrame, SendFrame
from sagents.web._socket import SocketLimits, _Connection
from tests.web.conftest import Demo, StartDemo, is_event, is_status, next_frame, wait_until


async def create(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/conversations", json={})
    return str(response.json()["id"])


async def status_of(client: httpx.AsyncClient, conversation: str) -> str:
    return str((await client.get(f"/api/conversations/{conversation}")).json()["status"])


async def test_first_frame_says_the_agent_is_not_running(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            frame = json.loads(await ws.recv())
            assert frame == {"type": "detached", "status": "not_running"}


async def test_bad_frames_get_error_frames_and_the_socket_carries_on(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await next_frame(ws, lambda f: f["type"] == "detached")
            cases = [
                ("{nope", "bad_json"),
                ("[" * 3_000, "bad_json"),  # nested too deep for the JSON parser
                (b"\x00\x01binary", "bad_frame"),
                ("x" * (demo.config.max_frame_bytes + 1), "too_large"),
                (json.dumps([1, 2]), "invalid"),
                (json.dumps({"type": "launch_missiles"}), "invalid"),
                (json.dumps({"type": "send"}), "invalid"),
                (json.dumps({"type": "send", "text": ""}), "invalid"),
                (json.dumps({"type": "send", "text": "hi", "extra": True}), "invalid"),
                (json.dumps({"type": "decide", "decisions": [{"type": "maybe"}]}), "invalid"),
                (json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}), "conflict"),
                (json.dumps({"type": "cancel", "ref": "c1"}), "conflict"),
            ]
            for frame, code in cases:
                await ws.send(frame)
                error = await next_frame(ws, lambda f: f["type"] == "error")
                assert error["code"] == code, (frame[:40], error)
            assert error["ref"] == "c1"
            await ws.send(json.dumps({"type": "ping", "ref": "p"}))
            assert await next_frame(ws, lambda f: f["type"] == "pong") == {
                "type": "pong",
                "ref": "p",
            }
            # The agent is unaffected: a real message still runs.
            await ws.send(json.dumps({"type": "send", "text": "still fine", "ref": "s"}))
            assert (await next_frame(ws, lambda f: f["type"] == "ok"))["ref"] == "s"
            await next_frame(ws, is_status("interrupted"))


async def test_a_message_longer_than_allowed_is_refused(start_demo: StartDemo) -> None:
    demo = await start_demo(max_message_chars=10)
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ws.send(json.dumps({"type": "send", "text": "x" * 11}))
            error = await next_frame(ws, lambda f: f["type"] == "error")
            assert error["code"] == "invalid"
        assert await status_of(client, conversation) == "not_running"


@pytest.mark.parametrize("who", ["stranger", "nobody"])
async def test_another_identity_is_refused(demo: Demo, who: str) -> None:
    async with demo.client() as owner, demo.client() as stranger:
        conversation = await create(owner)
        if who == "stranger":
            await stranger.get("/api/me")  # a valid identity of its own
        async with demo.socket(stranger, conversation) as ws:
            frame = json.loads(await ws.recv())
            assert frame["type"] == "error"
            assert frame["code"] == "not_found"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4404


async def test_unknown_conversation_is_refused(demo: Demo) -> None:
    async with demo.client() as client:
        await client.get("/api/me")
        async with demo.socket(client, "does-not-exist") as ws:
            assert json.loads(await ws.recv())["code"] == "not_found"


async def test_two_tabs_see_the_same_events_live(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with (
            demo.socket(client, conversation) as one,
            demo.socket(client, conversation) as two,
        ):
            await one.send(json.dumps({"type": "send", "text": "Two tabs"}))
            first = await next_frame(one, is_status("interrupted"))
            second = await next_frame(two, is_status("interrupted"))
            assert first["event"]["seq"] == second["event"]["seq"]
            assert first["instance"] == second["instance"]
            await two.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            done_one = await next_frame(one, is_status("idle"))
            done_two = await next_frame(two, is_status("idle"))
            assert done_one == done_two


async def test_a_reconnecting_tab_resumes_from_its_last_seq(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as keeper:
            await keeper.send(json.dumps({"type": "send", "text": "Resume"}))
            interrupted = await next_frame(keeper, is_status("interrupted"))
            instance, seen = interrupted["instance"], interrupted["event"]["seq"]
            # The tab is gone while the run goes on; the other tab keeps the agent alive.
            await keeper.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            idle = await next_frame(keeper, is_status("idle"))
            async with demo.socket(client, conversation, after_seq=seen, instance=instance) as back:
                attached = await next_frame(back, lambda f: f["type"] == "attached")
                assert attached["resumed"] is True
                assert attached["instance"] == instance
                replayed = await next_frame(back, lambda f: f["type"] == "event")
                assert replayed["event"]["seq"] == seen + 1
                last = await next_frame(back, is_status("idle"))
                assert last["event"]["seq"] == idle["event"]["seq"]
            # Another instance's numbering is never resumed: the tab reloads instead.
            async with demo.socket(
                client, conversation, after_seq=seen, instance=instance + 1000
            ) as stale:
                attached = await next_frame(stale, lambda f: f["type"] == "attached")
                assert attached["resumed"] is False
            # A nonsensical position is ignored, never a broken socket.
            async with demo.socket(client, conversation, after_seq=-1, instance=instance) as odd:
                attached = await next_frame(odd, lambda f: f["type"] == "attached")
                assert attached["resumed"] is False


async def test_closing_the_last_tab_shuts_the_agent_down_and_a_message_restores_it(
    demo: Demo,
) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ws.send(json.dumps({"type": "send", "text": "Presence"}))
            await next_frame(ws, is_status("interrupted"))
            await ws.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            await next_frame(ws, is_status("idle"))
            agent_id = demo.services.agent_id(conversation)
            info = await demo.services.runtime.agent_info(agent_id)
            assert info is not None
            assert info.viewer_count == 1
        # No tab: after the grace period the agent stops with reason no_viewers.
        async with demo.services.runtime.watch(agent_id) as watch:
            async for event in watch:
                if event.type == "agent_shutdown":
                    assert event.reason == "no_viewers"  # type: ignore[attr-defined]
                    break

        async def stopped() -> bool:
            return await status_of(client, conversation) == "not_running"

        await wait_until(stopped)
        before = (await client.get(f"/api/conversations/{conversation}")).json()
        assert len(before["messages"]) > 5

        async with demo.socket(client, conversation) as ws:
            await next_frame(ws, lambda f: f["type"] == "detached")
            await ws.send(json.dumps({"type": "send", "text": "Again"}))
            attached = await next_frame(ws, lambda f: f["type"] == "attached")
            assert attached["resumed"] is False
            user = await next_frame(ws, is_event("display_message_saved"))
            assert user["event"]["display_message"]["content"] == {"text": "Again"}
            assert user["event"]["display_message"]["sequence"] == len(before["messages"]) + 1
            await next_frame(ws, is_status("interrupted"))
            state = await demo.services.runtime.agent(agent_id).get_state()
            # The restored state holds the first exchange, then the new message.
            texts = [m.content for m in state.messages if m.type == "human"]
            assert texts == ["Presence", "Again"]


async def test_inactivity_shuts_the_agent_down_even_with_a_tab_open(
    start_demo: StartDemo,
) -> None:
    # The server runs on real time, so the test never acts while the timeout counts: it waits
    # for each shutdown (the bounds are generous), and what the server does between a start and
    # the message that follows it takes far less than the timeout, however loaded the machine.
    demo = await start_demo(inactivity_timeout=2.0)

    async def until_stopped_for_inactivity(ws: ClientConnection) -> None:
        shutdown = await next_frame(ws, is_event("agent_shutdown"), timeout=30)
        assert shutdown["event"]["reason"] == "inactivity"
        detached = await next_frame(ws, lambda f: f["type"] == "detached", timeout=30)
        assert detached["status"] == "not_running"

    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ws.send(json.dumps({"type": "send", "text": "Sleepy"}))
            await next_frame(ws, is_status("interrupted"), timeout=30)
            await until_stopped_for_inactivity(ws)  # waiting for approval counts as inactive
            # The decision restarts it from its saved state; once the run is over, it stops again.
            await ws.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            await next_frame(ws, lambda f: f["type"] == "attached", timeout=30)
            await next_frame(ws, is_status("idle"), timeout=30)
            await until_stopped_for_inactivity(ws)
            await ws.send(json.dumps({"type": "send", "text": "Awake"}))
            await next_frame(ws, lambda f: f["type"] == "attached", timeout=30)
            await next_frame(ws, is_status("running"), timeout=30)


async def test_a_socket_from_another_origin_is_refused(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        cookie = client.cookies.get(COOKIE_NAME)
        async with connect(
            demo.ws_url(conversation),
            additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
            origin=Origin("http://localhost:3000"),
        ) as ws:
            assert json.loads(await ws.recv())["code"] == "forbidden"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4403
        # The page's own origin is accepted.
        async with connect(
            demo.ws_url(conversation),
            additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
            origin=Origin(demo.url),
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "detached"


# -- regressions of the edge campaign ------------------------------------------------------------


async def refused_with(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error frame of a refused socket, and its close code."""
    frame = json.loads(await ws.recv())
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None, "closed without a close frame"
    return frame, closed.value.rcvd.code


@pytest.mark.parametrize("bad_id", ["a" * 256, "a" * 5000, "nul%00id"])  # %00: U+0000
async def test_defect_conversation_id_over_255_characters_closes_the_socket_with_4422(
    demo: Demo, bad_id: str
) -> None:
    async with demo.client() as client:
        await client.get("/api/me")
        async with demo.socket(client, bad_id) as ws:
            frame, code = await refused_with(ws)
        assert frame["type"] == "error"
        assert frame["code"] == "invalid"
        assert frame["message"].startswith("conversation id:")
        assert code == 4422


async def test_defect_nul_and_lone_surrogates_in_frames_get_invalid_error_frames(
    demo: Demo,
) -> None:
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"k": deep}

    def edit(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"type": "decide", "decisions": [{"type": "edit", "arguments": arguments}]}

    frames = [
        {"type": "send", "text": "before\x00after"},
        {"type": "send", "text": "half a pair \ud83d"},
        {"type": "decide", "decisions": [{"type": "reject", "message": "\x00"}]},
        edit({"file_path": "/notes/x.md\x00"}),
        edit({"\udc00": 1}),
        edit({"content": deep}),
        edit({"k" * 300: 1}),
    ]
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await next_frame(ws, lambda f: f["type"] == "detached")
            for i, frame in enumerate(frames):
                # json.dumps escapes them (\u0000, \ud83d): valid JSON, as a browser sends it.
                await ws.send(json.dumps({**frame, "ref": f"r{i}"}))
                error = await next_frame(ws, lambda f: f["type"] == "error")
                assert (error["code"], error["ref"]) == ("invalid", f"r{i}"), error
            await ws.send(json.dumps({"type": "ping", "ref": "p"}))
            assert (await next_frame(ws, lambda f: f["type"] == "pong"))["ref"] == "p"
        snapshot = (await client.get(f"/api/conversations/{conversation}")).json()
        assert snapshot["status"] == "not_running"
        assert snapshot["messages"] == []


SQL = 'could not load conversation: UndefinedTableError: relation "sagents_conversations" ...'


async def test_defect_storage_errors_reach_the_socket_as_generic_errors(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await next_frame(ws, lambda f: f["type"] == "detached")

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise PersistenceFailed(SQL)

            monkeypatch.setattr(demo.services.store, "get_conversation", broken)
            # An action: an error frame, and the socket carries on.
            await ws.send(json.dumps({"type": "send", "text": "hi", "ref": "s"}))
            error = await next_frame(ws, lambda f: f["type"] == "error")
            assert (error["code"], error["ref"]) == ("unavailable", "s")
            assert "sagents_conversations" not in error["message"]
            await ws.send(json.dumps({"type": "ping"}))
            await next_frame(ws, lambda f: f["type"] == "pong")


@pytest.mark.parametrize(
    ("failure", "code", "close"),
    [
        (PersistenceFailed(SQL), "unavailable", 4503),
        (StateError(SQL), "internal", 4500),
        (ValueError(SQL), "internal", 4500),  # not a sagents error: a bug, still answered
    ],
)
async def test_defect_a_socket_refused_by_a_storage_error_gets_a_close_frame(
    demo: Demo, monkeypatch: pytest.MonkeyPatch, failure: Exception, code: str, close: int
) -> None:
    async with demo.client() as client:
        conversation = await create(client)

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise failure

        monkeypatch.setattr(demo.services.store, "get_conversation", broken)
        async with demo.socket(client, conversation) as ws:
            frame, received = await refused_with(ws)
        assert (frame["code"], received) == (code, close)
        assert "sagents_conversations" not in frame["message"]


async def test_defect_a_client_that_leaves_before_its_reply_logs_no_error_traceback(
    demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    tabs = 8
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(caplog.handler)
    try:
        async with demo.client() as client:
            conversation = await create(client)
            topic = demo.services.session_config.presence_topic(conversation)
            all_gone = asyncio.Event()
            unsubscribe = demo.services.presence.subscribe(
                topic, lambda count: all_gone.set() if count == 0 else None
            )
            try:
                with caplog.at_level(logging.DEBUG, logger="sagents.web"):
                    sockets = [await demo.socket(client, conversation) for _ in range(tabs)]
                    for ws in sockets:  # each one is a viewer once it has its first frame
                        await next_frame(ws, lambda f: f["type"] == "detached")
                    for i, ws in enumerate(sockets):
                        await ws.send(json.dumps({"type": "send", "text": f"gone {i}"}))
                        ws.transport.abort()  # no close frame: the tab crashed
                    for ws in sockets:
                        await ws.wait_closed()
                    async with asyncio.timeout(10):
                        await all_gone.wait()  # every handler has ended
            finally:
                unsubscribe()
    finally:
        server_log.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
    left = [r for r in caplog.records if "the client left" in r.getMessage()]
    assert all(r.levelno == logging.DEBUG for r in left)
    assert len(left) <= tabs


class _StubConversations:
    def agent_id(self, conversation_id: str) -> str:
        return f"conversation-{conversation_id}"


class _Socket:
    """A socket whose client left: Starlette raises on every send, as uvicorn tells it to.

    It receives the ``incoming`` text frames (which came in before the client left), then the
    disconnect."""

    def __init__(
        self, client: WebSocketState, application: WebSocketState, incoming: Sequence[str] = ()
    ) -> None:
        self.client_state = client
        self.application_state = application
        self.incoming = list(incoming)
        self.replies: list[dict[str, Any]] = []  # what the server tried to send

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return {"type": "websocket.receive", "text": self.incoming.pop(0)}
        return {"type": "websocket.disconnect", "code": 1006}

    async def send_text(self, text: str) -> None:
        self.replies.append(json.loads(text))
        self.application_state = WebSocketState.DISCONNECTED
        raise WebSocketDisconnect(1006)


def connection_on(socket: _Socket) -> _Connection:
    return _Connection(
        cast(WebSocket, socket),
        cast(Conversations, _StubConversations()),
        "s",
        "c1",
        SocketLimits(max_message_chars=5),
    )


async def _raise(exc: BaseException) -> None:
    raise exc


async def test_a_client_that_left_is_logged_once_at_debug_and_a_bug_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = connection_on(_Socket(WebSocketState.DISCONNECTED, WebSocketState.CONNECTED))
    with caplog.at_level(logging.DEBUG, logger="sagents.web"):
        # The pump and the reader each find the socket gone, in the ways Starlette says it.
        await connection.guarded(_raise(WebSocketDisconnect(1006)))
        await connection.guarded(_raise(OSError("connection reset")))
        await connection.guarded(_raise(RuntimeError('Cannot call "send" once a close message')))
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.DEBUG, None)]
    caplog.clear()

    connection = connection_on(_Socket(WebSocketState.CONNECTED, WebSocketState.CONNECTED))
    with caplog.at_level(logging.DEBUG, logger="sagents.web"):
        await connection.guarded(_raise(RuntimeError("a bug")))
        await connection.guarded(_raise(KeyError("another")))
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.ERROR]
    assert all(r.exc_info is not None for r in caplog.records)


@pytest.mark.parametrize(
    ("frame", "reply"),
    [
        (PingFrame(type="ping", ref="p"), {"type": "pong", "ref": "p"}),
        (
            SendFrame(type="send", text="longer than five"),
            {"type": "error", "code": "invalid", "message": "text: at most 5 characters"},
        ),
    ],
    ids=["pong", "error frame"],
)
async def test_defect_a_reply_to_a_client_that_left_is_logged_once_at_debug(
    caplog: pytest.LogCaptureFixture, frame: PingFrame | SendFrame, reply: dict[str, Any]
) -> None:
    # The reader handles a frame that came in just before the client left: its reply fails.
    # (These replies used to be inside the action's "except Exception", logged as a failure.)
    socket = _Socket(
        WebSocketState.CONNECTED, WebSocketState.CONNECTED, incoming=[frame.model_dump_json()]
    )
    connection = connection_on(socket)
    with caplog.at_level(logging.DEBUG, logger="sagents.web"):
        await connection.guarded(connection.read())
    # The action's own reply (not a refusal of the frame) is what failed.
    assert [{k: r[k] for k in reply} for r in socket.replies] == [reply]
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.DEBUG, None)]
    assert "the client left" in caplog.records[0].getMessage()
