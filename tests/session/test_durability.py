"""Durability: a process killed with SIGKILL mid-run loses no completed turn and tears nothing.

A child process runs a conversation with SQLite persistence and reports the exact state (a
digest) of every completed turn and of every durable save; the test kills it in the middle of a
later turn, then a fresh process (this one) restores the conversation. The restored state must be
exactly one of the completed snapshots, never older than the last one reported saved (saves run
off the agent's hot path, so later turns may still have had theirs in flight), and the database
must pass ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from sagents.persistence.sql import SqlPersistence, sqlite_url

from .durability_child import digest

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("durability_child.py")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill_after_turns", [3, 8])
async def test_sigkill_mid_run_restores_the_last_completed_snapshot(
    tmp_path: Path, kill_after_turns: int
) -> None:
    db = tmp_path / "sagents.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    assert child.stderr is not None
    reported: list[str] = []  # digest of each completed turn, by turn
    saved_messages = 0  # message count of the newest durable save
    lines: list[str] = []
    try:
        # Kill once enough turns completed and at least one save was reported.
        while len(reported) < kill_after_turns or not any(s.startswith("saved") for s in lines):
            line = (await child.stdout.readline()).decode()
            if not line:
                break
            lines.append(line)
            if line.startswith("idle "):
                reported.append(line.split()[2])
        # The next turn is already running (its user message went in before that print).
        child.send_signal(signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        rest, stderr_bytes = await child.communicate()
        stderr = stderr_bytes.decode()
    assert child.returncode == -signal.SIGKILL, stderr
    # Lines the child wrote before the signal landed, still in the pipe.
    for line in lines + rest.decode().splitlines():
        kind, *values = line.split()
        if kind == "saved":
            saved_messages = max(saved_messages, int(values[0]))
        elif line not in lines:
            reported.append(values[1])
    assert len(reported) >= kill_after_turns
    last_saved_turn = saved_messages // 4 - 1  # 4 messages per turn
    assert last_saved_turn >= 0, "no save was reported before the kill"

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    async with SqlPersistence(sqlite_url(db)) as store:
        stored = await store.load_state("owner", "c1")
    assert stored is not None
    restored = digest(stored.state)
    assert restored in reported, "the restored state is not a completed snapshot"
    assert reported.index(restored) >= last_saved_turn, "a durably saved turn was lost"
    messages = stored.state.messages
    assert len(messages) % 4 == 0  # whole turns: human, ai + tool call, tool result, ai
    assert stored.state.pending_tool_calls() == []
