"""The conversation websocket: validation of every inbound frame, scope, resume, presence."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from sagents.web._identity import COOKIE_NAME
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
    demo = await start_demo(inactivity_timeout=0.5)
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ws.send(json.dumps({"type": "send", "text": "Sleepy"}))
            await next_frame(ws, is_status("interrupted"))
            await ws.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            await next_frame(ws, is_status("idle"))
            shutdown = await next_frame(ws, is_event("agent_shutdown"))
            assert shutdown["event"]["reason"] == "inactivity"
            assert (await next_frame(ws, lambda f: f["type"] == "detached"))["status"] == (
                "not_running"
            )
            await ws.send(json.dumps({"type": "send", "text": "Awake"}))
            await next_frame(ws, lambda f: f["type"] == "attached")
            await next_frame(ws, is_status("running"))


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
