"""``sagents demo``: the URL it prints, its errors, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from sagents.cli import build_parser, main
from sagents.persistence.sql import SqlPersistence, sqlite_url
from sagents.web._identity import COOKIE_NAME
from tests.web.conftest import wait_until
from tests.web.product_helpers import closed_port


def test_demo_options_and_defaults() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.data, args.model) == (
        "127.0.0.1",
        8000,
        "sagents-data",
        None,
    )
    assert args.debugger is False
    args = build_parser().parse_args(
        ["demo", "--port", "0", "--data", "d", "--model", "openai:gpt-4o-mini", "--debugger"]
    )
    assert (args.port, args.data, args.model, args.debugger) == (0, "d", "openai:gpt-4o-mini", True)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai:gpt-4o-mini", ["OPENAI_API_KEY"]),
        ("anthropic:claude-sonnet-4-5", ["ANTHROPIC_API_KEY"]),
        ("nosuchprovider:model", ["pip install 'sagents[nosuchprovider]'"]),
        ("gpt-4o-mini", ["provider:name"]),
    ],
)
def test_a_model_that_cannot_run_is_a_clear_error(
    model: str,
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["demo", "--model", model, "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sagents: error:")
    for text in expected:
        assert text in err


async def _read_url(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError("sagents demo exited before printing its URL")
            if line.startswith("sagents demo: open "):
                return line.split()[-1].rstrip("/")


async def test_sigterm_drains_saves_and_exits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sagents.cli",
        "demo",
        "--port",
        "0",
        "--data",
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        url = await _read_url(process)
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/health/ready")).status_code == 200
            conversation = (await client.post("/api/conversations", json={})).json()["id"]
            cookie = client.cookies[COOKIE_NAME]
            base = url.replace("http", "ws", 1).rstrip("/")
            ws_url = f"{base}/api/conversations/{conversation}/ws"
            async with connect(
                ws_url, additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"}
            ) as ws:
                await ws.send(json.dumps({"type": "send", "text": "Shutdown"}))
                async with asyncio.timeout(10):
                    while True:
                        frame = json.loads(await ws.recv())
                        event = frame.get("event", {})
                        if (
                            event.get("type") == "status_changed"
                            and event["status"] == "interrupted"
                        ):
                            break
                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    code = await process.wait()
        assert code == 0
        assert process.stdout is not None
        out = (await process.stdout.read()).decode()
        assert "sagents demo: stopped" in out
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The agent saved its state on the way out: the pending approval survived.
    async with SqlPersistence(sqlite_url(data / "sagents.db")) as store:
        [conversation_row] = await store.list_conversations(cookie.split(".")[0])
        stored = await store.load_state(conversation_row.scope, conversation_row.id)
    assert stored is not None
    assert stored.state.interrupt is not None
    assert stored.state.interrupt.action_requests[0].name == "write_file"


async def test_a_failed_run_is_written_to_stderr(tmp_path: Path) -> None:
    """The server's log says why a run failed (the page says it too), with no page open:
    a real provider's model pointed at a port nothing listens on."""
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env |= {
        "PYTHONWARNINGS": "error",
        "OPENAI_API_KEY": "sk-test-not-a-key",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "OPENAI_MAX_RETRIES": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sagents.cli",
        "demo",
        "--port",
        "0",
        "--data",
        str(tmp_path / "data"),
        "--model",
        "openai:gpt-4o-mini",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        url = await _read_url(process)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            conversation = (await client.post("/api/conversations", json={})).json()["id"]
            sent = await client.post(
                f"/api/conversations/{conversation}/messages", json={"text": "Unreachable"}
            )
            assert sent.status_code == 202

            async def failed() -> bool:
                answer = await client.get(f"/api/conversations/{conversation}")
                return bool(answer.json()["status"] == "error")

            await wait_until(failed, timeout=30)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = err.decode()
    [line] = [line for line in log.splitlines() if "the run failed" in line]
    # One line a person can read: when, how bad, where from, which agent, and why.
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING sagents\.", line), line
    assert f"conversation-{conversation}" in line
    assert "Connection error" in line
    assert process.returncode == 0


def test_a_port_in_use_is_one_line_and_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"sagents: error: port {port} on 127.0.0.1 is in use")
    assert "--port" in err


def test_workers_must_be_one_or_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workers", "0", "--data", str(tmp_path)]) == 1
    assert "--workers must be 1 or more" in capsys.readouterr().err
