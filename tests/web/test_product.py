"""The conversation socket for a person's tab (issue 14): exact streams after a reload or a
dropped connection, the error of a failed run, and its retry.

The model is held mid-reply by the test (``GatedModel``), so "mid-stream" is a state the test
waits for, not a moment it hopes to hit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from websockets.asyncio.client import ClientConnection

from sagents._status import Status
from sagents.events import (
    Event,
    FollowUpsLimited,
    LLMDeltas,
    LLMMessage,
    RunHalted,
    StatusChanged,
    SubscriptionOverflow,
    TodosUpdated,
)
from sagents.web._socket import _in_progress, _notices
from tests.web.conftest import Demo, demo_config, is_event, is_status, next_frame, running_demo
from tests.web.product_helpers import (
    GatedModel,
    Switch,
    flaky_model,
    gated_model,
)

REPLY = "Let me plan how to research 'Streams'."


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[tuple[Demo, GatedModel]]:
    model = gated_model(hold_at=4)
    async with running_demo(demo_config(tmp_path), model=model) as demo:
        yield demo, model


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[tuple[Demo, Switch]]:
    switch = Switch()
    async with running_demo(demo_config(tmp_path), model=flaky_model(switch)) as demo:
        yield demo, switch


async def conversation(client: httpx.AsyncClient) -> str:
    await client.get("/api/me")
    response = await client.post("/api/conversations", json={})
    return str(response.json()["id"])


def text_of(frame: dict[str, Any]) -> str:
    deltas = frame["event"]["deltas"]
    return "".join(d["data"]["content"] for d in deltas if isinstance(d["data"]["content"], str))


async def read_until(
    ws: ClientConnection, stop: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Every frame up to and including the first one matching ``stop``."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await next_frame(ws, lambda _: True)
        frames.append(frame)
        if stop(frame):
            return frames


def streamed(frames: list[dict[str, Any]]) -> str:
    """The reply a page rebuilds from these frames: its deltas, or the whole message once it
    arrives (the replay buffer drops the deltas of a complete message)."""
    text = ""
    for frame in frames:
        if is_event("llm_deltas")(frame):
            text += text_of(frame)
        elif is_event("llm_message")(frame):
            return str(frame["event"]["message"]["data"]["content"])
    return text


async def test_a_tab_arriving_mid_stream_gets_the_reply_from_its_first_chunk(
    gated: tuple[Demo, GatedModel],
) -> None:
    demo, model = gated
    async with demo.client() as client:
        cid = await conversation(client)
        async with demo.socket(client, cid) as first:
            await first.send(json.dumps({"type": "send", "text": "Streams"}))
            await model.wait_held()
            # A reload: a new socket with no seq, while four chunks are out already.
            async with demo.socket(client, cid) as reloaded:
                attached = await next_frame(reloaded, lambda f: f["type"] == "attached")
                assert attached["resumed"] is False
                model.release()
                frames = await read_until(reloaded, is_event("llm_message"))
    deltas = [f for f in frames if is_event("llm_deltas")(f)]
    assert "".join(text_of(f) for f in deltas) == REPLY  # no gap, nothing twice
    assert text_of(deltas[0]).startswith("Let ")
    seqs = [f["event"]["seq"] for f in frames if f["type"] == "event"]
    assert seqs == sorted(set(seqs))
    # Only the message in progress is caught up: not the user's row, which the snapshot has.
    assert not any(is_event("display_message_saved")(f) for f in frames)


async def test_a_resumed_socket_gets_the_rest_of_the_reply_exactly(
    gated: tuple[Demo, GatedModel],
) -> None:
    demo, model = gated
    async with demo.client() as client:
        cid = await conversation(client)
        # Another tab stays open meanwhile, so the agent keeps running without the first one.
        async with demo.socket(client, cid):
            async with demo.socket(client, cid) as ws:
                await ws.send(json.dumps({"type": "send", "text": "Streams"}))
                attached = await next_frame(ws, lambda f: f["type"] == "attached")
                await model.wait_held()
                seen = await read_until(ws, lambda f: streamed([f]) == "me p")
            last, instance = seen[-1]["event"]["seq"], attached["instance"]
            async with demo.socket(client, cid, after_seq=last, instance=instance) as resumed:
                again = await next_frame(resumed, lambda f: f["type"] == "attached")
                assert again["resumed"] is True
                model.release()
                rest = await read_until(resumed, is_event("llm_message"))
    before = "".join(streamed([f]) for f in seen)
    after = [f for f in rest if is_event("llm_deltas")(f)]
    assert before == "Let me p"
    assert before + "".join(text_of(f) for f in after) == REPLY


async def test_a_socket_resumed_after_the_message_completed_gets_it_whole(
    gated: tuple[Demo, GatedModel],
) -> None:
    demo, model = gated
    async with demo.client() as client:
        cid = await conversation(client)
        async with demo.socket(client, cid) as other_tab:
            async with demo.socket(client, cid) as ws:
                await ws.send(json.dumps({"type": "send", "text": "Streams"}))
                attached = await next_frame(ws, lambda f: f["type"] == "attached")
                await model.wait_held()
                seen = await read_until(ws, lambda f: streamed([f]) == "me p")
            # While this tab is away the message completes: its deltas leave the replay buffer.
            model.release()
            await next_frame(other_tab, is_status("interrupted"))
            last, instance = seen[-1]["event"]["seq"], attached["instance"]
            async with demo.socket(client, cid, after_seq=last, instance=instance) as resumed:
                await next_frame(resumed, lambda f: f["type"] == "attached" and f["resumed"])
                rest = await read_until(resumed, is_event("llm_message"))
    assert not any(is_event("llm_deltas")(f) for f in rest)
    assert streamed(rest) == REPLY  # the page shows the whole reply, not "Let me p"


async def test_a_tab_arriving_after_a_failed_run_is_told_why(
    flaky: tuple[Demo, Switch],
) -> None:
    demo, _ = flaky
    async with demo.client() as client:
        cid = await conversation(client)
        async with demo.socket(client, cid) as ws:
            await ws.send(json.dumps({"type": "send", "text": "Fails"}))
            await next_frame(ws, is_status("error"))
            async with demo.socket(client, cid) as reloaded:
                attached = await next_frame(reloaded, lambda f: f["type"] == "attached")
                assert attached["status"] == "error"
                failure = await next_frame(reloaded, lambda f: f["type"] == "event")
    assert is_status("error")(failure)
    assert "the provider is unreachable" in failure["event"]["data"]


async def test_retry_runs_again_after_a_failed_run(flaky: tuple[Demo, Switch]) -> None:
    demo, switch = flaky
    async with demo.client() as client:
        cid = await conversation(client)
        async with demo.socket(client, cid) as ws:
            await ws.send(json.dumps({"type": "retry", "ref": "early"}))
            refused = await next_frame(ws, lambda f: f.get("ref") == "early")
            assert refused["type"] == "error"
            assert refused["code"] == "conflict"
            assert "nothing to retry" in refused["message"]
            await ws.send(json.dumps({"type": "send", "text": "Retry me"}))
            await next_frame(ws, is_status("error"))
            switch.failing = False
            await ws.send(json.dumps({"type": "retry", "ref": "again"}))
            accepted = await next_frame(ws, lambda f: f.get("ref") == "again")
            assert accepted == {"type": "ok", "action": "retry", "ref": "again"}
            await next_frame(ws, is_status("interrupted"))
        snapshot = (await client.get(f"/api/conversations/{cid}")).json()
    texts = [m["content"].get("text") for m in snapshot["messages"] if m["type"] == "user"]
    assert texts == ["Retry me"]  # a retry runs again; it does not send the message twice


# -- what a tab arriving now is caught up with (the replay buffer's part) -------------------------


def deltas(seq: int, text: str) -> LLMDeltas:
    return LLMDeltas(agent_id="a", seq=seq, deltas=[AIMessageChunk(content=text)])


def status(seq: int, value: Status, data: Any = None) -> StatusChanged:
    return StatusChanged(agent_id="a", seq=seq, status=value, data=data)


def message(seq: int, text: str) -> LLMMessage:
    return LLMMessage(agent_id="a", seq=seq, message=AIMessage(content=text))


def todos(seq: int) -> TodosUpdated:
    return TodosUpdated(agent_id="a", seq=seq, todos=[])


def test_only_the_message_in_progress_is_caught_up() -> None:
    backlog: list[Event] = [
        status(1, Status.RUNNING),
        message(2, "first"),
        todos(3),
        deltas(4, "sec"),
        todos(5),
        deltas(6, "ond"),
    ]
    assert _in_progress(backlog) == [backlog[3], backlog[5]]


def test_deltas_of_an_ended_run_are_not_caught_up() -> None:
    # Cancelled mid-reply: the deltas stay in the buffer (no message compacted them).
    backlog: list[Event] = [
        status(1, Status.RUNNING),
        deltas(2, "half"),
        status(3, Status.CANCELLED),
    ]
    assert _in_progress(backlog) == []


def test_a_failed_run_is_caught_up_with_its_reason() -> None:
    failed = status(3, Status.ERROR, "the model failed")
    assert _in_progress([status(1, Status.RUNNING), deltas(2, "x"), failed]) == [failed]
    assert _in_progress([failed, status(4, Status.RUNNING)]) == []


def test_the_last_run_s_words_are_caught_up_once_it_ended() -> None:
    halted = RunHalted(agent_id="a", seq=3, reason="the budget is spent")
    limited = FollowUpsLimited(agent_id="a", seq=7, max_follow_ups=2, added=1)
    earlier = RunHalted(agent_id="a", seq=1, reason="an older run")
    idle = status(4, Status.IDLE)
    assert _notices([earlier, status(2, Status.RUNNING), halted, idle]) == [halted]
    assert _notices([status(5, Status.RUNNING), limited, status(8, Status.IDLE)]) == [limited]
    # A run in progress has said nothing yet; the next run's start clears the last one's.
    assert _notices([halted, idle, status(9, Status.RUNNING)]) == []


def test_a_reply_whose_start_was_evicted_is_not_sent_as_if_whole() -> None:
    overflow = SubscriptionOverflow(agent_id="a", seq=10, dropped=10)
    assert _in_progress([overflow, deltas(11, "ck brown fox")]) == []
    after_a_message = [overflow, message(11, "done"), deltas(12, "The ")]
    assert _in_progress(after_a_message) == [after_a_message[2]]


async def test_retry_over_http_after_a_failed_run(flaky: tuple[Demo, Switch]) -> None:
    demo, switch = flaky
    async with demo.client() as client:
        cid = await conversation(client)
        refused = await client.post(f"/api/conversations/{cid}/retry")
        assert refused.status_code == 409
        assert "nothing to retry" in refused.json()["detail"]
        async with demo.socket(client, cid) as ws:
            await ws.send(json.dumps({"type": "send", "text": "Retry me"}))
            await next_frame(ws, is_status("error"))
            switch.failing = False
            accepted = await client.post(f"/api/conversations/{cid}/retry")
            assert accepted.status_code == 202
            await next_frame(ws, is_status("interrupted"))


async def test_a_failed_run_is_in_the_server_log(
    flaky: tuple[Demo, Switch], caplog: pytest.LogCaptureFixture
) -> None:
    demo, _ = flaky
    caplog.set_level("WARNING", logger="sagents.server")
    async with demo.client() as client:
        cid = await conversation(client)
        async with demo.socket(client, cid) as ws:
            await ws.send(json.dumps({"type": "send", "text": "Fails"}))
            await next_frame(ws, is_status("error"))
    [record] = [r for r in caplog.records if "the run failed" in r.getMessage()]
    assert record.name == "sagents.server"
    assert "the provider is unreachable" in record.getMessage()
