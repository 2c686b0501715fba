"""One owner per conversation across processes (issue 11, item 6), on SQLite and PostgreSQL.

Two worker processes race to start the same conversation from one database, as two uvicorn
workers or two hosts would. Exactly one runs it; the other is refused with the owner's identity.
After the owner is killed with SIGKILL (it cannot release anything), the other takes over once
the lease expires, continues from the stored state, and no turn the first one saved is lost.
The lease ttl is short (real time: these are real processes) so the test takes seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagents.persistence.sql import SqlPersistence, sqlite_url
from tests.persistence.conftest import POSTGRES_URL, postgres_engine, unique_prefix

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("ownership_child.py")
TTL = 1.5  # seconds


class Worker:
    """A child process and the lines it printed so far."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        if not raw:
            assert self.process.stderr is not None
            error = (await self.process.stderr.read()).decode()
            raise AssertionError(f"worker {self.name} ended: {error[-3000:]}")
        text = raw.decode().strip()
        self.lines.append(text)
        return text

    async def until(self, prefix: str) -> str:
        while True:
            text = await self.line()
            if text.startswith(prefix):
                return text

    def saved(self) -> int:
        counts = [int(line.split()[1]) for line in self.lines if line.startswith("saved ")]
        return max(counts, default=0)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        rest, _ = await self.process.communicate()
        self.lines += rest.decode().split("\n")


@pytest.fixture(params=["sqlite", "postgres"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """(url, table prefix) of a database with fresh tables."""
    if request.param == "sqlite":
        url, prefix = sqlite_url(tmp_path / "shared.db"), "sagents_"
        async with SqlPersistence(url, table_prefix=prefix) as store:
            await store.create_all()
        yield url, prefix
        return
    engine = await postgres_engine()
    prefix = unique_prefix()
    store = SqlPersistence(engine, table_prefix=prefix)
    await store.create_all()
    try:
        yield POSTGRES_URL, prefix
    finally:
        await store.drop_all()
        await engine.dispose()


async def start_worker(url: str, prefix: str, name: str) -> Worker:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        url,
        prefix,
        name,
        str(TTL),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    return Worker(name, process)


@pytest.mark.timeout(120)
async def test_two_processes_race_one_runs_and_the_other_takes_over_after_a_kill(
    database: tuple[str, str],
) -> None:
    url, prefix = database
    workers = await asyncio.gather(
        start_worker(url, prefix, "worker-a"), start_worker(url, prefix, "worker-b")
    )
    try:
        firsts = await asyncio.wait_for(asyncio.gather(*(w.line() for w in workers)), 60)
        owners = [w for w, line in zip(workers, firsts, strict=True) if line.startswith("owner")]
        refused = [w for w, line in zip(workers, firsts, strict=True) if line.startswith("refused")]
        assert len(owners) == 1, firsts  # exactly one runs it
        assert len(refused) == 1, firsts
        owner, other = owners[0], refused[0]
        assert other.lines[0] == f"refused {owner.name}"  # told who owns it
        # The owner completes and saves a few turns; the other keeps being refused meanwhile.
        while owner.saved() < 6:
            await asyncio.wait_for(owner.line(), 30)
        assert not any(line.startswith("owner") for line in other.lines)
        await owner.kill()
        saved = owner.saved()
        took_over = await asyncio.wait_for(other.until("owner"), 30)
        restored = int(took_over.split()[2])
        assert restored >= saved, "a turn the first owner saved was lost"
        # It carries on from there, and its turns are stored.
        await asyncio.wait_for(other.until("saved"), 30)
        assert other.saved() > restored
    finally:
        for worker in workers:
            await worker.kill()
    async with SqlPersistence(url, table_prefix=prefix) as store:
        stored = await store.load_state("owner", "c1")
    assert stored is not None
    texts = [str(m.content) for m in stored.state.messages]
    first_turns = [t for t in texts if t.endswith(f"of {owner.name}")]
    second_turns = [t for t in texts if t.endswith(f"of {other.name}")]
    assert len(first_turns) * 2 >= saved  # everything the first owner saved is still there
    assert second_turns  # followed by the new owner's turns
    assert texts.index(second_turns[0]) > texts.index(first_turns[-1])
