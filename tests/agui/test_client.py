"""The web demo through the official AG-UI client: ``@ag-ui/client``'s ``HttpAgent`` under Node
(``driver.mjs``), end to end — a streamed answer, tool calls, an approval interrupt and its
resume, the todos in the client's state — and the same after the agent was shut down for
inactivity and restored from its saved state.

The client is installed from npm by ``scripts/node`` (``package.json`` pins it,
``package-lock.json`` fixes the rest), which ``scripts/test`` runs; the tests install nothing.
Without Node 18+ or the pinned client, the test skips — except under CI (``CI`` set), where
that is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest

from sagents import AgentInfo, Runtime
from sagents.events import AgentShutdown
from sagents.runtime._watch import Watch
from sagents.web._identity import COOKIE_NAME
from tests.agui.conftest import Demo, StartDemo
from tests.web.conftest import in_ci

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HERE = Path(__file__).parent
DRIVER = HERE / "driver.mjs"
INACTIVITY = 2.0  # seconds; the tests wait for each shutdown, they never act against the clock


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"the AG-UI client tests cannot run under CI: {reason}")
    pytest.skip(reason)


def _pinned() -> str:
    return str(json.loads((HERE / "package.json").read_text())["dependencies"]["@ag-ui/client"])


def _installed() -> bool:
    manifest = HERE / "node_modules" / "@ag-ui" / "client" / "package.json"
    return manifest.is_file() and json.loads(manifest.read_text())["version"] == _pinned()


@pytest.fixture(scope="session")
def node() -> str:
    """Node, with the pinned ``@ag-ui/client`` installed next to the driver (by
    ``scripts/node``)."""
    node = shutil.which("node")
    if node is None:
        _unavailable("Node.js 18 or later is needed (run scripts/node to install it)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 18:
        _unavailable(f"Node.js 18 or later is needed, found {version.stdout.strip()!r}")
    if not _installed():
        _unavailable(
            f"@ag-ui/client {_pinned()} is not installed in {HERE} (run scripts/node to install it)"
        )
    return node


async def converse(node: str, demo: Demo, thread: str, cookie: str, text: str) -> dict[str, Any]:
    """One turn through the Node client: the message, then an approval for each interrupt."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(DRIVER),
        f"{demo.url}/agui",
        thread,
        cookie,
        text,
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SUPPRESS_TRANSFORMATION_WARNINGS": "true"},
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    transcript: dict[str, Any] = json.loads(out)
    return transcript


def of(run: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in run["events"] if e["type"] == kind]


def check_turn(transcript: dict[str, Any], topic: str) -> None:
    """A turn of the demo's scenario, as the client saw it: two runs, the first stopped by the
    approval of the notes, the second resumed by the client's answer."""
    first, second = transcript["runs"]
    assert first["error"] is None
    assert second["error"] is None
    types = [e["type"] for e in first["events"]]
    assert types[:3] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT"]
    # A streamed answer: its first text message comes in several pieces.
    opened = of(first, "TEXT_MESSAGE_START")[0]["messageId"]
    pieces = [e["delta"] for e in of(first, "TEXT_MESSAGE_CONTENT") if e["messageId"] == opened]
    assert len(pieces) > 1
    assert "".join(pieces) == f"Let me plan how to research {topic!r}."
    # Tool calls, their streamed arguments and the results of those that ran.
    calls = {e["toolCallId"]: e["toolCallName"] for e in of(first, "TOOL_CALL_START")}
    assert sorted(calls.values()) == ["write_file", "write_todos", "write_todos"]
    write = next(i for i, name in calls.items() if name == "write_file")
    arguments = "".join(e["delta"] for e in of(first, "TOOL_CALL_ARGS") if e["toolCallId"] == write)
    path = f"/notes/{topic.lower()}.md"
    assert json.loads(arguments)["file_path"] == path
    assert {e["toolCallId"] for e in of(first, "TOOL_CALL_END")} == set(calls)
    assert [calls[e["toolCallId"]] for e in of(first, "TOOL_CALL_RESULT")] == ["write_todos"]
    # The approval: the run ends on the interrupt outcome, the client holds it as pending.
    finished = first["events"][-1]
    assert finished["type"] == "RUN_FINISHED"
    assert finished["outcome"]["type"] == "interrupt"
    (interrupt,) = first["pendingInterrupts"]
    assert interrupt["id"] == interrupt["toolCallId"] == write
    assert interrupt["reason"] == "human_approval"
    assert interrupt["metadata"]["sagents"]["request"]["name"] == "write_file"
    # The todos, in the state the client built from the snapshot and the deltas.
    assert [t["status"] for t in first["state"]["todos"]] == ["in_progress", "pending", "pending"]
    # The resume: the approved write runs, the run goes on to the end.
    assert second["pendingInterrupts"] == []
    results = {e["toolCallId"]: e["content"] for e in of(second, "TOOL_CALL_RESULT")}
    assert results[write] == f"Created {path} (4 lines)."
    assert second["events"][-1]["type"] == "RUN_FINISHED"
    assert second["events"][-1]["outcome"] == {"type": "success"}
    assert [t["status"] for t in second["state"]["todos"]] == ["completed"] * 3
    assert path in second["state"]["files"]
    # What the client holds at the end: the whole exchange, answered.
    messages = transcript["messages"]
    answer = f"All done: my notes on {topic!r} are saved and reviewed."
    assert messages[-1] == {**messages[-1], "role": "assistant", "content": answer}
    answered = {m["toolCallId"] for m in messages if m["role"] == "tool"}
    asked = {c["id"] for m in messages if m["role"] == "assistant" for c in m.get("toolCalls", [])}
    assert asked == answered


async def stopped(runtime: Runtime, watch: Watch, agent_id: str) -> str:
    """The reason the agent's last instance stopped, once it has (read from a watch opened
    before the agent started, so no shutdown can be missed)."""
    async with asyncio.timeout(60):
        async for event in watch:
            if isinstance(event, AgentShutdown) and await runtime.get_status(agent_id) is None:
                return event.reason
    raise AssertionError("the watch ended")


async def test_a_conversation_through_the_official_client_survives_a_restore(
    start_demo: StartDemo, node: str
) -> None:
    # A long grace period: the agent stops for inactivity, not for want of viewers.
    demo = await start_demo(grace_period=120.0, inactivity_timeout=INACTIVITY)
    async with demo.client() as client:
        await client.get("/api/me")
        cookie = f"{COOKIE_NAME}={client.cookies.get(COOKIE_NAME)}"
    runtime = demo.services.runtime
    thread = str(uuid.uuid4())
    agent_id = demo.services.agent_id(thread)
    watch = runtime.watch(agent_id)
    try:
        first = await converse(node, demo, thread, cookie, "Otters")
        check_turn(first, "Otters")
        before: AgentInfo | None = await runtime.agent_info(agent_id)
        assert before is not None
        assert await stopped(runtime, watch, agent_id) == "inactivity"

        second = await converse(node, demo, thread, cookie, "Beavers")
        check_turn(second, "Beavers")
        after = await runtime.agent_info(agent_id)
        assert after is not None
        assert after.instance != before.instance  # a new server, restored from storage
        # The restored conversation reached the new client: the first snapshot holds the first
        # turn, and the state snapshot its finished todos.
        snapshot = second["runs"][0]["events"][1]["messages"]
        texts = [m.get("content") for m in snapshot]
        assert texts[0] == "Otters"
        assert "All done: my notes on 'Otters' are saved and reviewed." in texts
        assert texts[-1] == "Beavers"
        restored = second["runs"][0]["events"][2]["snapshot"]
        assert [t["status"] for t in restored["todos"]] == ["completed"] * 3
        assert restored["files"] == ["/notes/otters.md"]
    finally:
        await watch.aclose()
