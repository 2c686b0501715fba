"""The REST API over a real server: every endpoint and its error paths."""

from __future__ import annotations

import httpx

from sagents.web._identity import COOKIE_NAME
from tests.web.conftest import Demo, StartDemo, is_status, next_frame


async def create(client: httpx.AsyncClient, **body: str) -> str:
    response = await client.post("/api/conversations", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_health_alive_and_ready(demo: Demo) -> None:
    async with demo.client() as client:
        assert (await client.get("/health/alive")).json() == {"status": "alive"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        demo.services.begin_drain()
        drained = await client.get("/health/ready")
        assert drained.status_code == 503
        assert drained.json() == {"status": "draining"}
        assert (await client.get("/health/alive")).status_code == 200
        refused = await client.post("/api/conversations", json={})
        assert refused.status_code == 503
        assert refused.json()["error"] == "unavailable"


async def test_page_and_static_modules_are_served_without_cdn(demo: Demo) -> None:
    async with demo.client() as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert COOKIE_NAME in page.headers["set-cookie"]
        assert "HttpOnly" in page.headers["set-cookie"]
        assert '<script type="module" src="/static/js/main.js">' in page.text
        for path in ("/static/js/main.js", "/static/js/view.js", "/static/app.css"):
            asset = await client.get(path)
            assert asset.status_code == 200
            # Nothing is fetched from elsewhere at run time.
            assert "https://" not in asset.text
            assert "http://" not in asset.text


async def test_identity_cookie_is_issued_once_and_forgery_gets_a_new_one(demo: Demo) -> None:
    async with demo.client() as client:
        first = (await client.get("/api/me")).json()["identity"]
        again = await client.get("/api/me")
        assert again.json()["identity"] == first
        assert "set-cookie" not in again.headers
    forged = f"{first}.AAAA"
    async with httpx.AsyncClient(base_url=demo.url, cookies={COOKIE_NAME: forged}) as other:
        response = await other.get("/api/me")
        assert response.json()["identity"] != first
        assert "set-cookie" in response.headers


async def test_create_list_rename_delete(demo: Demo) -> None:
    async with demo.client() as client:
        assert (await client.get("/api/conversations")).json() == {"conversations": []}
        first = await create(client, title="First")
        second = await create(client)
        listed = (await client.get("/api/conversations")).json()["conversations"]
        assert {c["id"] for c in listed} == {first, second}
        assert all(c["status"] == "not_running" for c in listed)

        renamed = await client.patch(f"/api/conversations/{second}", json={"title": "Renamed"})
        assert renamed.status_code == 200
        assert renamed.json()["title"] == "Renamed"
        snapshot = (await client.get(f"/api/conversations/{second}")).json()
        assert snapshot["conversation"]["title"] == "Renamed"
        assert snapshot["messages"] == []
        assert snapshot["status"] == "not_running"

        assert (await client.delete(f"/api/conversations/{first}")).status_code == 204
        assert (await client.get(f"/api/conversations/{first}")).status_code == 404
        listed = (await client.get("/api/conversations")).json()["conversations"]
        assert [c["id"] for c in listed] == [second]


async def test_unknown_conversation_is_404_everywhere(demo: Demo) -> None:
    async with demo.client() as client:
        for method, path, body in [
            ("GET", "/api/conversations/nope", None),
            ("PATCH", "/api/conversations/nope", {"title": "x"}),
            ("DELETE", "/api/conversations/nope", None),
            ("POST", "/api/conversations/nope/messages", {"text": "hi"}),
            ("POST", "/api/conversations/nope/cancel", None),
            ("POST", "/api/conversations/nope/decisions", {"decisions": [{"type": "approve"}]}),
        ]:
            response = await client.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "not_found"


async def test_another_identity_gets_404_for_my_conversation(demo: Demo) -> None:
    async with demo.client() as owner, demo.client() as intruder:
        conversation = await create(owner, title="Mine")
        await intruder.get("/api/me")
        base = f"/api/conversations/{conversation}"
        for method, path, body in [
            ("GET", base, None),
            ("PATCH", base, {"title": "stolen"}),
            ("DELETE", base, None),
            ("POST", f"{base}/messages", {"text": "hi"}),
            ("POST", f"{base}/cancel", None),
            ("POST", f"{base}/decisions", {"decisions": [{"type": "approve"}]}),
        ]:
            response = await intruder.request(method, path, json=body)
            assert response.status_code == 404, (method, response.text)
        assert (await intruder.get("/api/conversations")).json() == {"conversations": []}
        # Nothing was changed, and the owner still has it.
        mine = (await owner.get(base)).json()
        assert mine["conversation"]["title"] == "Mine"
        assert mine["messages"] == []


async def test_bad_json_and_schema_errors(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        bad = await client.post(
            f"/api/conversations/{conversation}/messages",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"] == "bad_json"
        for body in [{}, {"text": ""}, {"text": "hi", "extra": 1}, {"text": 3}]:
            response = await client.post(f"/api/conversations/{conversation}/messages", json=body)
            assert response.status_code == 422, body
            assert response.json()["error"] == "invalid"
        for body in [
            {"decisions": []},
            {"decisions": [{"type": "maybe"}]},
            {"decisions": [{"type": "edit"}]},
        ]:
            response = await client.post(f"/api/conversations/{conversation}/decisions", json=body)
            assert response.status_code == 422, body
        long_title = await client.patch(f"/api/conversations/{conversation}", json={"title": ""})
        assert long_title.status_code == 422


async def test_conflicts_when_nothing_runs_or_waits(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        cancel = await client.post(f"/api/conversations/{conversation}/cancel")
        assert cancel.status_code == 409
        assert cancel.json()["error"] == "conflict"
        decide = await client.post(
            f"/api/conversations/{conversation}/decisions",
            json={"decisions": [{"type": "approve"}]},
        )
        assert decide.status_code == 409


async def test_message_approval_and_files_over_http(demo: Demo) -> None:
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            sent = await client.post(
                f"/api/conversations/{conversation}/messages", json={"text": "Actor models"}
            )
            assert sent.status_code == 202
            interrupted = await next_frame(ws, is_status("interrupted"))
            [request] = interrupted["event"]["data"]["action_requests"]
            assert request["name"] == "write_file"
            assert request["arguments"]["file_path"] == "/notes/actor-models.md"

            snapshot = (await client.get(f"/api/conversations/{conversation}")).json()
            assert snapshot["status"] == "interrupted"
            assert (
                snapshot["interrupt"]["action_requests"][0]["tool_call_id"]
                == (request["tool_call_id"])
            )
            assert snapshot["conversation"]["title"] == "Actor models"

            wrong = await client.post(
                f"/api/conversations/{conversation}/decisions",
                json={"decisions": [{"type": "approve"}, {"type": "approve"}]},
            )
            assert wrong.status_code == 422
            assert wrong.json()["error"] == "invalid_decision"

            approved = await client.post(
                f"/api/conversations/{conversation}/decisions",
                json={"decisions": [{"type": "approve"}]},
            )
            assert approved.status_code == 202
            await next_frame(ws, is_status("idle"))

        files = (await client.get("/api/files")).json()["files"]
        assert [f["path"] for f in files] == ["/notes/actor-models.md"]
        content = await client.get("/api/files/content", params={"path": "/notes/actor-models.md"})
        assert content.json()["content"].startswith("# Actor models")
        missing = await client.get("/api/files/content", params={"path": "/notes/none.md"})
        assert missing.status_code == 404
        escape = await client.get("/api/files/content", params={"path": "/../etc/passwd"})
        assert escape.status_code == 400
        assert escape.json()["error"] == "bad_path"

        snapshot = (await client.get(f"/api/conversations/{conversation}")).json()
        kinds = [m["type"] for m in snapshot["messages"]]
        assert kinds[0] == "user"
        assert "assistant" in kinds
        assert "tool_call" in kinds
        assert [t["status"] for t in snapshot["todos"]] == ["completed"] * 3
        write = next(
            m
            for m in snapshot["messages"]
            if m["type"] == "tool_call" and m["content"]["name"] == "write_file"
        )
        assert write["status"] == "completed"
        assert write["metadata"]["decision"]["type"] == "approve"

    # Files belong to their identity: another browser sees none of them.
    async with demo.client() as other:
        assert (await other.get("/api/files")).json() == {"files": []}
        denied = await other.get("/api/files/content", params={"path": "/notes/actor-models.md"})
        assert denied.status_code == 404


async def test_cancel_a_running_agent(start_demo: StartDemo) -> None:
    # A chunk a minute: the run is still going when the cancel arrives, however slow the machine.
    demo = await start_demo(model_delay=60.0)
    async with demo.client() as client:
        conversation = await create(client)
        async with demo.socket(client, conversation) as ws:
            await client.post(f"/api/conversations/{conversation}/messages", json={"text": "x"})
            await next_frame(ws, is_status("running"))
            cancelled = await client.post(f"/api/conversations/{conversation}/cancel")
            assert cancelled.status_code == 202
            await next_frame(ws, is_status("cancelled"))
        snapshot = (await client.get(f"/api/conversations/{conversation}")).json()
        assert snapshot["status"] in ("cancelled", "not_running")


async def test_the_debugger_is_mounted_only_when_enabled(demo: Demo, start_demo: StartDemo) -> None:
    async with demo.client() as client:
        assert (await client.get("/debug/api/agents")).status_code == 404
    with_debugger = await start_demo(debugger=True)
    async with with_debugger.client() as client:
        conversation = await create(client)
        await client.post(f"/api/conversations/{conversation}/messages", json={"text": "hi"})
        agents = (await client.get("/debug/api/agents")).json()["agents"]
        assert [a["conversation_id"] for a in agents] == [conversation]
        assert (await client.get("/debug/")).status_code == 200


async def test_a_conversation_another_worker_runs_is_a_409_with_a_message(
    start_demo: StartDemo,
) -> None:
    """Issue 11 item 6: two workers of one app (one database); the second is told in words."""
    first = await start_demo()
    second = await start_demo()  # the same data folder: the same database and cookie key
    async with first.client() as client:
        conversation = await create(client)
        sent = await client.post(f"/api/conversations/{conversation}/messages", json={"text": "hi"})
        assert sent.status_code == 202, sent.text
        cookie = client.cookies.get(COOKIE_NAME)
    async with second.client() as client:
        client.cookies.set(COOKIE_NAME, str(cookie))
        refused = await client.post(
            f"/api/conversations/{conversation}/messages", json={"text": "again"}
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "owned_elsewhere"
        assert "another server process" in refused.json()["detail"]
        # Reading it needs no ownership.
        assert (await client.get(f"/api/conversations/{conversation}")).status_code == 200
