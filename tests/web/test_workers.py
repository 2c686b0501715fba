"""``sagents demo --workers N`` and ``--ray-address``: several server processes over one Ray
cluster serve the same conversations.

One demo runs two uvicorn workers on a local Ray cluster it starts; a second demo joins that
cluster on another port, so that the test picks which process serves each request. A
conversation is opened through the first, watched and approved through the second; an
identity's second conversation starts on the host that holds its files; the debugger of either
lists every agent with its host. Stopping the joined demo leaves the agents running; stopping
the first stops the hosts, and every agent's state is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect
from websockets.asyncio.client import ClientConnection, connect

from sagents.persistence.sql import SqlPersistence, sqlite_url
from sagents.web._identity import COOKIE_NAME
from tests.web.conftest import chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs sagents[ray]"),
]


class Demo:
    """A ``sagents demo`` process and what it printed on start."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, cluster: str | None):
        self.process = process
        self.url = url
        self.cluster = cluster

    async def stop(self) -> str:
        """SIGTERM, then its exit status must be 0; what it printed afterwards."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await self.process.wait()
        assert self.process.stdout is not None
        out = (await self.process.stdout.read()).decode()
        assert code == 0, out
        return out


async def start_demo(log: Path, *args: str, env: dict[str, str] | None = None) -> Demo:
    with log.open("wb") as errors:  # read when it fails; the child keeps its own copy
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagents.cli",
            "demo",
            "--port",
            "0",
            "--debugger",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    assert process.stdout is not None
    url, cluster = None, None
    async with asyncio.timeout(120):
        while cluster is None:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError(
                    f"sagents demo {args} exited before it served:\n{log.read_text()}"
                )
            if line.startswith("sagents demo: open "):
                url = line.split()[-1].rstrip("/")
            elif "agents on Ray at " in line:
                cluster = line.split("agents on Ray at ")[-1].strip()
    assert url is not None
    return Demo(process, url, cluster)


@pytest.fixture
async def demos(tmp_path: Path) -> AsyncIterator[list[Demo]]:
    started: list[Demo] = []
    try:
        yield started
    finally:
        for demo in reversed(started):  # the joined one first: the first owns the cluster
            if demo.process.returncode is None:
                demo.process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        await demo.process.wait()
                except TimeoutError:
                    demo.process.kill()
                    await demo.process.wait()


async def frames_until(ws: ClientConnection, found: Callable[[dict[str, Any]], bool]) -> None:
    async with asyncio.timeout(30):
        while not found(json.loads(await ws.recv())):
            pass


def status_is(status: str) -> Callable[[dict[str, Any]], bool]:
    def found(frame: dict[str, Any]) -> bool:
        event = frame.get("event", {})
        return bool(event.get("type") == "status_changed" and event["status"] == status)

    return found


async def drain(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def ws_of(demo: Demo, conversation: str) -> str:
    return f"{demo.url.replace('http', 'ws', 1)}/api/conversations/{conversation}/ws"


async def agents(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/debug/api/agents")
    assert response.status_code == 200
    return {row["conversation_id"]: row for row in response.json()["agents"]}


async def hosts_on_the_debugger_page(url: str) -> dict[str, str]:
    """Agent id -> the host its row shows, read in Chromium."""
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(url)
        rows = page.locator("#agents tbody tr")
        await expect(rows).to_have_count(2, timeout=15_000)
        await expect(page.locator("#agents th.host")).to_be_visible()
        shown = {}
        for row in await rows.all():
            agent_id = await row.get_attribute("data-agent-id")
            assert agent_id is not None
            shown[agent_id] = await row.locator("td.host").inner_text()
        return shown


async def test_servers_over_one_cluster_serve_the_same_conversations(
    tmp_path: Path, demos: list[Demo]
) -> None:
    data = tmp_path / "data"
    first = await start_demo(tmp_path / "first.log", "--workers", "2", "--data", str(data))
    demos.append(first)
    assert first.cluster
    # A local cluster has token authentication (Ray's default); its token is in ~/.ray.
    joined = await start_demo(
        tmp_path / "joined.log",
        "--ray-address",
        first.cluster,
        "--data",
        str(data),
        env={"RAY_AUTH_MODE": "token"},
    )
    demos.append(joined)

    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(httpx.AsyncClient(base_url=first.url, timeout=30))
        b = await stack.enter_async_context(httpx.AsyncClient(base_url=joined.url, timeout=30))
        conversation = (await a.post("/api/conversations", json={})).json()["id"]
        cookie = a.cookies[COOKIE_NAME]
        b.cookies.set(COOKIE_NAME, cookie)
        headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
        # A tab on the first server, open throughout: a viewer anywhere in the cluster keeps
        # the agent alive (past the joined server's exit, whatever the grace period).
        tab = await stack.enter_async_context(
            connect(ws_of(first, conversation), additional_headers=headers)
        )
        await frames_until(tab, lambda frame: frame["type"] in ("attached", "detached"))
        # Read as a page does (an unread socket would stall and be dropped by the server).
        reader = asyncio.get_running_loop().create_task(drain(tab))
        stack.callback(reader.cancel)
        async with connect(ws_of(joined, conversation), additional_headers=headers) as ws:
            await frames_until(ws, lambda frame: frame["type"] in ("attached", "detached"))
            # Sent through the first server; the socket on the joined one sees the run.
            sent = await a.post(
                f"/api/conversations/{conversation}/messages", json={"text": "alpha"}
            )
            assert sent.status_code == 202
            await frames_until(ws, status_is("interrupted"))
            # The approval, through the joined server.
            decided = await b.post(
                f"/api/conversations/{conversation}/decisions",
                json={"decisions": [{"type": "approve"}]},
            )
            assert decided.status_code == 202
            await frames_until(ws, status_is("idle"))

        snapshot = (await a.get(f"/api/conversations/{conversation}")).json()
        assert snapshot["status"] == "idle"
        assert snapshot["interrupt"] is None
        assert [f["path"] for f in (await b.get("/api/files")).json()["files"]] == [
            "/notes/alpha.md"
        ]

        # The identity's second conversation shares its files: it starts on the same host.
        second = (await b.post("/api/conversations", json={})).json()["id"]
        sent = await b.post(f"/api/conversations/{second}/messages", json={"text": "beta"})
        assert sent.status_code == 202
        listed = await agents(a)
        assert set(listed) == {conversation, second}
        # The tab on the first server is the conversation's one viewer, wherever it runs.
        assert listed[conversation]["viewer_count"] == 1
        assert listed[conversation]["node"].startswith("sagents-host-")
        assert listed[second]["node"] == listed[conversation]["node"]
        assert {cid: row["node"] for cid, row in (await agents(b)).items()} == {
            cid: row["node"] for cid, row in listed.items()
        }
        # The debugger page shows each agent's host.
        assert await hosts_on_the_debugger_page(f"{joined.url}/debug/") == {
            row["id"]: row["node"] for row in listed.values()
        }

        # The joined server leaves; the agents stay on the cluster.
        assert "sagents demo: stopped" in await joined.stop()
        assert (await a.get(f"/api/conversations/{conversation}")).json()["status"] == "idle"
    # The first stops the hosts it started: each agent saved on the way out.
    assert "sagents demo: stopped" in await first.stop()
    async with SqlPersistence(sqlite_url(data / "sagents.db")) as store:
        scope = cookie.split(".")[0]
        stored = await store.load_state(scope, conversation)
        assert stored is not None
        assert any("alpha" in str(m.content) for m in stored.state.messages)
        pending = await store.load_state(scope, second)
        assert pending is not None
        assert pending.state.interrupt is not None  # "beta" waits for its approval
