"""Questions, replies, dismiss and reset in the demo (issue 15), through both doors: the
websocket and the REST API, on a real server.

The demo's scripted model asks its three questions when a message says "ask me" (single choice
with "other", multiple choice, free text with suggestions), and walks its usual path otherwise
(a ``write_file`` that waits for approval).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from sagents._errors import InvalidOption
from sagents.session import Session
from sagents.web._client_errors import client_error
from tests.web.conftest import Demo, is_event, is_status, next_frame, wait_until

#: What the person answers: their own words to the first question (it allows "other"), two
#: sections, the suggested file name.
ANSWERS: list[Any] = ["A long essay", ["Key ideas", "Sources"], "supervision.md"]


async def create(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/conversations", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def snapshot(client: httpx.AsyncClient, conversation: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{conversation}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def is_reset_row(frame: dict[str, Any]) -> bool:
    return bool(
        is_event("display_message_saved")(frame)
        and frame["event"]["display_message"]["type"] == "reset"
    )


async def answered(client: httpx.AsyncClient, conversation: str) -> dict[str, Any]:
    """The snapshot once the run's last row (the assistant's answer) is saved: display rows are
    written just after the agent goes idle."""
    found: dict[str, Any] = {}

    async def saved() -> bool:
        found.update(await snapshot(client, conversation))
        return bool(found["messages"]) and found["messages"][-1]["type"] == "assistant"

    await wait_until(saved)
    return found


async def ask(
    ws: ClientConnection, text: str = "Please ask me about supervision"
) -> dict[str, Any]:
    """Send ``text`` and return the interrupt the agent stops with."""
    await ws.send(json.dumps({"type": "send", "text": text}))
    interrupted = await next_frame(ws, is_status("interrupted"))
    return dict(interrupted["event"]["data"])


async def approval(ws: ClientConnection, text: str = "Dismissals") -> dict[str, Any]:
    """Send ``text`` (the default walk) and return the approval the agent waits for."""
    await ws.send(json.dumps({"type": "send", "text": text}))
    interrupted = await next_frame(ws, is_status("interrupted"))
    return dict(interrupted["event"]["data"])


async def reply_text(ws: ClientConnection) -> str:
    """The text of the model's next message with text."""
    while True:
        frame = await next_frame(ws, is_event("llm_message"))
        content = frame["event"]["message"]["data"]["content"]
        if isinstance(content, str) and content:
            return content


def row_of(tool: str, status: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the update of the tool call row of ``tool`` to ``status``."""

    def match(frame: dict[str, Any]) -> bool:
        if not is_event("display_message_updated")(frame):
            return False
        row = frame["event"]["display_message"]
        return bool(row["content"].get("name") == tool and row["status"] == status)

    return match


def answer(*answers: Any) -> dict[str, Any]:
    return {"decisions": [{"type": "answer", "answers": list(answers)}]}


# -- questions -------------------------------------------------------------------------------------


async def test_the_demo_asks_and_an_answer_that_does_not_fit_leaves_the_question(
    demo: Demo,
) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            interrupt = await ask(ws)
            assert interrupt["kind"] == "question"
            [request] = interrupt["action_requests"]
            assert request["name"] == "ask_user"
            assert request["allowed_decisions"] == ["answer", "respond", "reject"]
            questions = request["questions"]
            assert [q["type"] for q in questions] == [
                "single_choice",
                "multiple_choice",
                "free_text",
            ]
            assert questions[0]["recommended"] == "A short summary"
            assert questions[0]["allow_other"] is True
            assert questions[2]["choices"] == ["supervision.md", "notes.md"]

            # "Everything" is not a section the multiple-choice question offers.
            bad = {"type": "answer", "answers": ["A short summary", ["Everything"], "x.md"]}
            await ws.send(json.dumps({"type": "decide", "decisions": [bad], "ref": "bad"}))
            refused = await next_frame(ws, lambda f: f.get("ref") == "bad")
            assert refused["type"] == "error"
            assert refused["code"] == "invalid_decision"
            assert "answer 1 (to 'Which sections do you want?')" in refused["message"]
            assert "'Everything' is not one of the choices" in refused["message"]

            # Nothing changed: the same question still waits, and can be answered.
            kept = await snapshot(client, conversation)
            assert kept["status"] == "interrupted"
            assert (
                kept["interrupt"]["action_requests"][0]["tool_call_id"] == (request["tool_call_id"])
            )
            good = {"type": "answer", "answers": ANSWERS}
            await ws.send(json.dumps({"type": "decide", "decisions": [good], "ref": "good"}))
            assert await next_frame(ws, lambda f: f.get("ref") == "good") == {
                "type": "ok",
                "action": "decide",
                "ref": "good",
            }
            text = await reply_text(ws)
            await next_frame(ws, is_status("idle"))
        done = await snapshot(client, conversation)
    assert text == "Thank you! Noted: A long essay; Key ideas, Sources; supervision.md."
    assert done["interrupt"] is None
    [call] = [m for m in done["messages"] if m["type"] == "tool_call"]
    assert call["content"]["name"] == "ask_user"
    assert call["metadata"]["decision"] == {"type": "answer", "answers": ANSWERS}


@pytest.mark.parametrize(
    ("decision", "said"),
    [
        (
            {"type": "respond", "message": "Keep it short, no sections"},
            "The user replied instead of picking answers: Keep it short, no sections",
        ),
        ({"type": "reject"}, "The user declined to answer."),
    ],
    ids=["reply-instead", "skip"],
)
async def test_reply_instead_or_skip_over_rest(
    demo: Demo, decision: dict[str, Any], said: str
) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ask(ws)
            response = await client.post(
                f"/api/conversations/{conversation}/decisions", json={"decisions": [decision]}
            )
            assert response.status_code == 202, response.text
            text = await reply_text(ws)
            await next_frame(ws, is_status("idle"))
        done = await snapshot(client, conversation)
    assert said in text
    [call] = [m for m in done["messages"] if m["type"] == "tool_call"]
    assert call["metadata"]["decision"]["type"] == decision["type"]


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (answer("A short summary"), "invalid_decision", "expected 3 answer(s)"),
        (answer("A short summary", ["Key ideas"], "  "), "invalid_decision", "non-empty text"),
        (answer("A short summary", [], "x.md"), "invalid_decision", "at least one choice"),
        ({"decisions": [{"type": "approve"}]}, "invalid_decision", "'approve' is not allowed"),
        ({"decisions": [{"type": "respond", "message": " "}]}, "invalid_decision", "'message'"),
        # The shape is bounded at the edge: at most 10 answers, 20 choices, storable text.
        (answer(*["x"] * 11), "invalid", None),
        (answer("A short summary", ["Key ideas"] * 21, "x.md"), "invalid", None),
        (answer("A short summary", ["Key ideas"], 7), "invalid", None),
        (answer("A short summary", ["Key ideas"], {"text": "x.md"}), "invalid", None),
        (answer("A short\x00summary", ["Key ideas"], "x.md"), "invalid", None),
        ({"decisions": [{"type": "respond", "message": "\ud800"}]}, "invalid", None),
        ({"decisions": [{"type": "respond"}]}, "invalid", None),
        ({"decisions": [{"type": "answer", "answers": ["x"], "message": "y"}]}, "invalid", None),
    ],
)
async def test_answers_that_do_not_fit_are_refused_and_the_question_stays(
    demo: Demo, body: dict[str, Any], code: str, says: str | None
) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            interrupt = await ask(ws)
            path = f"/api/conversations/{conversation}/decisions"
            # Escaped JSON, as a browser sends it: a lone surrogate cannot travel otherwise.
            refused = await client.post(
                path, content=json.dumps(body), headers={"content-type": "application/json"}
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"] == code
            if says is not None:
                assert says in refused.json()["detail"]
            kept = await snapshot(client, conversation)
            assert kept["status"] == "interrupted"
            assert kept["interrupt"] == interrupt
            # Still answerable.
            accepted = await client.post(path, json=answer(*ANSWERS))
            assert accepted.status_code == 202, accepted.text
            await next_frame(ws, is_status("idle"))


async def test_an_approval_takes_no_answer_and_no_reply_unless_its_policy_allows_it(
    demo: Demo,
) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            interrupt = await approval(ws)
            assert interrupt["action_requests"][0]["allowed_decisions"] == [
                "approve",
                "edit",
                "reject",
            ]
            path = f"/api/conversations/{conversation}/decisions"
            for decision in (
                {"type": "respond", "message": "I wrote it myself"},
                {"type": "answer", "answers": ["yes"]},
            ):
                refused = await client.post(path, json={"decisions": [decision]})
                assert refused.status_code == 422, refused.text
                assert refused.json()["error"] == "invalid_decision"
            assert (await snapshot(client, conversation))["interrupt"] == interrupt


# -- dismiss ---------------------------------------------------------------------------------------


async def test_dismiss_clears_a_pending_approval_and_the_next_message_runs(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await approval(ws)
            await ws.send(json.dumps({"type": "dismiss", "ref": "d"}))
            # The agent is idle before the reply to the frame goes out.
            await next_frame(ws, is_status("idle"))
            assert await next_frame(ws, lambda f: f.get("ref") == "d") == {
                "type": "ok",
                "action": "dismiss",
                "ref": "d",
            }
            # Its row says it did not run (rows are written after the agent moves on).
            await next_frame(ws, row_of("write_file", "cancelled"))
            after = await snapshot(client, conversation)
            assert after["status"] == "idle"
            assert after["interrupt"] is None
            write = next(
                m
                for m in after["messages"]
                if m["type"] == "tool_call" and m["content"]["name"] == "write_file"
            )
            assert write["status"] == "cancelled"
            assert (await client.get("/api/files")).json() == {"files": []}  # it never ran
            # Nothing waits any more: a second dismiss is a conflict, on both doors.
            await ws.send(json.dumps({"type": "dismiss", "ref": "again"}))
            again = await next_frame(ws, lambda f: f.get("ref") == "again")
            assert again["type"] == "error"
            assert again["code"] == "conflict"
            rest = await client.post(f"/api/conversations/{conversation}/dismiss")
            assert rest.status_code == 409
            assert rest.json()["error"] == "conflict"
            # The conversation goes on.
            assert (await approval(ws, "After the dismissal"))["action_requests"]


async def test_dismiss_over_rest_restarts_an_agent_that_stopped_while_asking(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ask(ws)
        services = demo.services
        assert await Session.stop(services.runtime, services.session_config, conversation)
        assert (await snapshot(client, conversation))["status"] == "not_running"
        dismissed = await client.post(f"/api/conversations/{conversation}/dismiss")
        assert dismissed.status_code == 202, dismissed.text
        assert dismissed.json() == {"status": "idle"}
        assert (await snapshot(client, conversation))["interrupt"] is None

        async def call_cancelled() -> bool:
            after = await snapshot(client, conversation)
            [call] = [m for m in after["messages"] if m["type"] == "tool_call"]
            return bool(call["status"] == "cancelled")

        await wait_until(call_cancelled)  # rows are written after the agent moves on


async def test_dismiss_and_reset_of_a_conversation_that_is_not_yours_are_404(demo: Demo) -> None:
    async with demo.client() as owner, demo.client() as intruder:
        conversation = await create(owner)
        await intruder.get("/api/me")
        for path in ("dismiss", "reset"):
            for who, name in ((intruder, conversation), (owner, "nope")):
                response = await who.post(f"/api/conversations/{name}/{path}")
                assert response.status_code == 404, (path, response.text)
                assert response.json()["error"] == "not_found"


# -- reset -----------------------------------------------------------------------------------------


async def test_reset_starts_the_conversation_over_and_keeps_the_files(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await approval(ws, "Before the reset")
            await ws.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            await next_frame(ws, is_status("idle"))
            before = await answered(client, conversation)
            assert [t["status"] for t in before["todos"]] == ["completed"] * 3

            await ws.send(json.dumps({"type": "reset", "files": "keep", "ref": "r"}))
            reset = await next_frame(ws, is_event("agent_reset"))
            assert reset["event"]["files"] == "keep"
            row = await next_frame(ws, is_reset_row)  # (the answer's row may be announced first)
            assert row["event"]["display_message"]["content"] == {"files": "keep"}
            after = await snapshot(client, conversation)
            assert after["todos"] == []
            assert after["interrupt"] is None
            assert after["status"] == "idle"
            # The rows are a transcript: the old ones stay, and the reset row comes last.
            assert after["messages"][: len(before["messages"])] == before["messages"]
            assert [m["type"] for m in after["messages"][len(before["messages"]) :]] == ["reset"]
            paths = [f["path"] for f in (await client.get("/api/files")).json()["files"]]
            assert paths == ["/notes/before-the-reset.md"]

            # The next message starts a fresh conversation: the model sees only it.
            await approval(ws, "After the reset")
            state = await demo.services.runtime.agent(
                demo.services.agent_id(conversation)
            ).get_state()
            assert [m.content for m in state.messages if m.type == "human"] == ["After the reset"]


async def test_reset_while_a_question_waits_clears_it(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await ask(ws)
            response = await client.post(f"/api/conversations/{conversation}/reset")
            assert response.status_code == 202, response.text
            assert response.json() == {"status": "idle"}
            await next_frame(ws, is_event("agent_reset"))
            # The reset row (rows of the question's turn may still be saved before it).
            await next_frame(ws, is_reset_row)
        after = await snapshot(client, conversation)
    assert after["interrupt"] is None
    assert after["messages"][-1]["type"] == "reset"


async def test_reset_refuses_to_clear_the_files_an_identity_shares(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await approval(ws, "Shared notes")
            await ws.send(json.dumps({"type": "decide", "decisions": [{"type": "approve"}]}))
            await next_frame(ws, is_status("idle"))
            before = await answered(client, conversation)
            path = f"/api/conversations/{conversation}/reset"
            refused = await client.post(path, json={"files": "clear"})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"] == "invalid"
            assert "files='keep'" in refused.json()["detail"]
            await ws.send(json.dumps({"type": "reset", "files": "clear", "ref": "clear"}))
            frame = await next_frame(ws, lambda f: f.get("ref") == "clear")
            assert frame["type"] == "error"
            assert frame["code"] == "invalid"
            for body in ({"files": "all"}, {"files": "keep", "extra": 1}):
                bad = await client.post(path, json=body)
                assert bad.status_code == 422, body
                assert bad.json()["error"] == "invalid"
            # Nothing was reset, and the notes are still there.
            after = await snapshot(client, conversation)
            for key in ("messages", "todos", "interrupt", "status"):
                assert after[key] == before[key], key
            files = (await client.get("/api/files")).json()["files"]
            assert [f["path"] for f in files] == ["/notes/shared-notes.md"]


async def test_dismiss_and_reset_are_refused_while_the_server_drains(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        demo.services.begin_drain()
        for path in ("dismiss", "reset"):
            response = await client.post(f"/api/conversations/{conversation}/{path}")
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"] == "unavailable"


def test_an_invalid_option_is_the_client_s_to_fix_not_a_hidden_failure() -> None:
    failure = client_error(InvalidOption("reset(files='clear'): use files='keep'"))
    assert (failure.status, failure.code, failure.hidden) == (422, "invalid", False)
    assert failure.message == "reset(files='clear'): use files='keep'"
