"""Kill durability (issue 16): seeded SIGKILLs at random points under load, then the database is
checked against what the killed process reported.

Each round starts ``tests/chaos/kill_child.py`` — six fast agents (a zero-latency model, each turn
a tool call returning 50 kB: the lag scenario of ``bench/save_lag.py``) with agent persistence and
display messages in one database — lets it run a random (seeded) time, SIGKILLs it, and checks:

1. **The state.** For each conversation the stored state holds every turn the child reported
   ``saved``, is a whole number of turns (``turn 1, turn 2, ...``, each a call, its result and
   the answer; no call left pending), extends what was stored before, and lacks at most **two**
   turns the child reported completed (``idle``): a run never starts while two completed turns
   are unsaved (docs/persistence.md, "How far behind saves can fall"). The number missing per
   conversation and kill is tallied.
2. **The display rows, as the kill left them.** Every stored message has its rows (rows are
   never behind the state); rows ahead of the state are allowed (counted).
3. **The display rows after the next start.** On a seeded share of rounds (and always after the
   last kill) the campaign starts every conversation in its own process with ``Session`` and
   stops it cleanly — the start reconciles the rows after the unclean end — and then the rows
   must be exactly those of the state: one ``user`` row per human message, every tool call and
   result with its row, in order, none ahead of the stored version, none left ``executing``. On
   the other rounds the next child reconciles them itself (and may be killed while it does); the
   rows are checked whole at the next verification, so nothing it left wrong escapes.
4. ``PRAGMA integrity_check`` on SQLite, after every kill.

The next child is started while a kill is checked (it imports, then waits for its conversations
on standard input and touches nothing before), so the seconds of imports overlap the checks.
Conversations whose stored history reached ``turn_limit`` turns are checked, deleted and replaced
by new ones at a verification, so the database stays small however many rounds run.

``python -m bench.kill_campaign [--rounds 200] [--db sqlite,postgres] [--seed 16]`` prints a
table; ``tests/chaos/test_kill.py`` runs a short campaign on each database in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from tests.chaos.kill_child import MESSAGES_PER_TURN, RESULT, SCOPE, session_config

from sagents import ConversationOwnedElsewhere, Runtime, Session
from sagents.persistence import DisplayMessage, StoredState
from sagents.persistence.sql import SqlPersistence, create_engine_for, sqlite_url

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "chaos" / "kill_child.py"
POSTGRES_URL = os.environ.get(
    "SAGENTS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
#: Completed turns a kill may lose per conversation (the durability bound).
BOUND = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignOptions:
    """How a campaign runs.

    Attributes:
        rounds: how many times the child is killed.
        seed: seeds the kill times and which rounds are verified in this process.
        agents: conversations the child runs at once.
        max_delay: a kill lands uniformly within this many seconds after the child got its
            conversations (so some land in its start-up: leases, reconciliation).
        verify_share: the share of rounds after which this process reconciles and checks the
            display rows (the last round always is).
        lease_ttl: the child's lease; a killed child's conversations can be started again this
            long after its last renewal.
        turn_limit: a conversation with this many stored turns is replaced by a new one.
    """

    rounds: int = 10
    seed: int = 16
    agents: int = 6
    max_delay: float = 1.5
    verify_share: float = 0.5
    lease_ttl: float = 1.0
    turn_limit: int = 60


@dataclass(slots=True)
class Tally:
    """What a campaign saw. ``problems`` lists every broken invariant (empty: all held)."""

    database: str
    kills: int = 0
    #: Kills that landed before any turn of that child completed (during start-up).
    early_kills: int = 0
    turns_completed: int = 0
    turns_durable: int = 0
    #: completed turns missing after a kill -> how many (conversation, kill) pairs.
    lost: Counter[int] = field(default_factory=Counter)
    lost_beyond_bound: int = 0
    durable_lost: int = 0
    torn_states: int = 0
    rows_ahead_at_kill: int = 0
    verifications: int = 0
    rows_checked: int = 0
    messages_checked: int = 0
    #: Verified conversations whose rows were not exactly those of the state.
    row_mismatches: int = 0
    rows_executing: int = 0
    integrity_failures: int = 0
    conversations: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Known:
    """What the last check of a conversation found stored."""

    count: int = 0
    version: int = 0
    tool_call_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Reported:
    """What one child printed about one conversation (message counts)."""

    start: int | None = None
    idle: int | None = None
    saved: int | None = None


class _Child:
    """A child process and the lines it printed so far."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        assert process.stdout is not None
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        self._started = asyncio.Event()
        self._reader = asyncio.create_task(self._read(process.stdout))

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while raw := await stdout.readline():
            line = raw.decode().strip()
            self.lines.append(line)
            if line == "started":
                self._started.set()
        self._started.set()  # it ended by itself: do not wait for a line that never comes

    async def begin(self, conversation_ids: Sequence[str]) -> None:
        """Send the conversations; return once the child runs them."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write((" ".join(conversation_ids) + "\n").encode())
        with contextlib.suppress(ConnectionError):  # it died: end() reports it
            await stdin.drain()
        await asyncio.wait_for(self._started.wait(), 120)

    async def end(self) -> None:
        """SIGKILL it (if it still runs) and read every line it wrote before."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self._reader  # to the end of the pipe
        await self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()


class Campaign:
    """Kill the child ``options.rounds`` times against one database and check each kill."""

    def __init__(
        self,
        database: str,
        store: SqlPersistence,
        url: str,
        prefix: str,
        workdir: Path,
        options: CampaignOptions,
        *,
        sqlite_path: Path | None = None,
        progress: IO[str] | None = None,
    ) -> None:
        self.tally = Tally(database=database)
        self._store = store
        self._url = url
        self._prefix = prefix
        self._workdir = workdir
        self._options = options
        self._sqlite_path = sqlite_path
        self._progress = progress
        self._rng = random.Random(options.seed)
        self._spawned = 0
        self._generation = 0
        self._slots = [self._new_id() for _ in range(options.agents)]
        self._known: dict[str, _Known] = {c: _Known() for c in self._slots}

    def _new_id(self) -> str:
        self._generation += 1
        self.tally.conversations += 1
        return f"k{self._generation}"

    def _problem(self, round_: int, text: str) -> None:
        self.tally.problems.append(f"round {round_} (seed {self._options.seed}): {text}")

    async def run(self) -> Tally:
        started = time.perf_counter()
        options = self._options
        child = await self._spawn()
        try:
            for round_ in range(1, options.rounds + 1):
                delay = self._rng.uniform(0.0, options.max_delay)
                verify = round_ == options.rounds or self._rng.random() < options.verify_share
                ids = list(self._slots)
                lines = await self._kill(round_, child, ids, delay)
                # The next child imports while this kill is checked; it waits for its line.
                child = await self._spawn() if round_ < options.rounds else None
                await self._after_kill(round_, ids, lines)
                if verify:
                    await self._verify(round_, ids)
                if self._progress is not None:
                    lost = dict(sorted(self.tally.lost.items()))
                    print(
                        f"[{self.tally.database}] kill {round_}/{options.rounds}: "
                        f"{self.tally.turns_completed} turns, lost {lost}, "
                        f"{len(self.tally.problems)} problems",
                        file=self._progress,
                        flush=True,
                    )
        finally:
            if child is not None:
                await child.end()
        self.tally.seconds = time.perf_counter() - started
        return self.tally

    # -- one round -------------------------------------------------------------------------------

    async def _spawn(self) -> _Child:
        """Start a child; it imports, then waits for its conversations."""
        self._spawned += 1
        stderr_path = self._workdir / f"child-{self._spawned}.err"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CHILD),
                self._url,
                self._prefix,
                str(self._options.lease_ttl),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        return _Child(process, stderr_path)

    async def _kill(
        self, round_: int, child: _Child, ids: Sequence[str], delay: float
    ) -> list[str]:
        """Give ``child`` its conversations, SIGKILL it ``delay`` seconds later; its lines."""
        try:
            await child.begin(ids)
            # Real time on purpose: a real process is killed at a random moment.
            await asyncio.sleep(delay)
            ended_early = child.process.returncode is not None
        finally:
            await child.end()
        self.tally.kills += 1
        returncode = child.process.returncode
        if ended_early or returncode != -signal.SIGKILL:
            error = child.stderr_path.read_text()[-3000:]
            self._problem(round_, f"the child ended by itself ({returncode}): {error}")
        else:
            child.stderr_path.unlink()
        for line in child.lines:
            if line.startswith("error "):
                self._problem(round_, f"the child reported {line!r}")
        if not any(line.startswith("idle ") for line in child.lines):
            self.tally.early_kills += 1
        return child.lines

    async def _after_kill(self, round_: int, ids: Sequence[str], lines: Sequence[str]) -> None:
        tally = self.tally
        reported = _reported(ids, lines)
        if self._sqlite_path is not None:
            result = await asyncio.to_thread(_integrity_check, self._sqlite_path)
            if result != "ok":
                tally.integrity_failures += 1
                self._problem(round_, f"PRAGMA integrity_check: {result}")
        for conversation_id in ids:
            said = reported[conversation_id]
            stored = await self._store.load_state(SCOPE, conversation_id)
            count, version = _count_and_version(stored)
            for text in self._check_state(conversation_id, stored):
                tally.torn_states += 1
                self._problem(round_, f"{conversation_id}: {text}")
            if said.start is None:
                continue  # killed before this conversation's agent ran
            start = said.start
            if said.idle is not None:
                tally.turns_completed += (said.idle - start) // MESSAGES_PER_TURN
            if said.saved is not None:
                tally.turns_durable += max(0, said.saved - start) // MESSAGES_PER_TURN
                if count < said.saved:
                    tally.durable_lost += (said.saved - count) // MESSAGES_PER_TURN
                    self._problem(
                        round_,
                        f"{conversation_id}: {said.saved} messages were reported saved, "
                        f"{count} are stored",
                    )
            lost = max(0, (said.idle or 0) - count) // MESSAGES_PER_TURN
            tally.lost[lost] += 1
            if lost > BOUND:
                tally.lost_beyond_bound += 1
                self._problem(
                    round_,
                    f"{conversation_id}: {lost} completed turns lost (stored {count} messages, "
                    f"completed {said.idle}); the bound is {BOUND}",
                )
            rows = await self._rows(conversation_id)
            tally.rows_ahead_at_kill += sum(1 for row in rows if (row.state_version or 0) > version)
            behind = [row for row in rows if (row.state_version or 0) <= version]
            for text in row_problems(behind, stored, version, settled=False):
                self._problem(round_, f"{conversation_id} (as killed): {text}")

    async def _verify(self, round_: int, ids: Sequence[str]) -> None:
        """Start every conversation here and stop it cleanly (the start reconciles the rows
        the kill left), then check the rows against the state, and retire full ones."""
        tally = self.tally
        try:
            await self._start_and_stop(ids)
        except TimeoutError:
            self._problem(round_, "the killed child's leases did not expire within 60 s")
            return
        for slot, conversation_id in enumerate(ids):
            stored = await self._store.load_state(SCOPE, conversation_id)
            count, version = _count_and_version(stored)
            if version != self._known[conversation_id].version:
                self._problem(round_, f"{conversation_id}: a clean start and stop saved a state")
            rows = await self._rows(conversation_id)
            tally.verifications += 1
            tally.rows_checked += len(rows)
            tally.messages_checked += count
            tally.rows_executing += sum(1 for row in rows if row.status == "executing")
            problems = row_problems(rows, stored, version, settled=True)
            tally.row_mismatches += bool(problems)
            for text in problems:
                self._problem(round_, f"{conversation_id} (reconciled): {text}")
            if count // MESSAGES_PER_TURN >= self._options.turn_limit:
                await self._store.delete_conversation(SCOPE, conversation_id)
                del self._known[conversation_id]
                self._slots[slot] = self._new_id()
                self._known[self._slots[slot]] = _Known()

    async def _start_and_stop(self, ids: Sequence[str]) -> None:
        config = session_config(self._store, self._options.lease_ttl)
        async with Runtime(owner_id=f"verifier:{os.getpid()}:{uuid.uuid4().hex[:8]}") as runtime:

            async def start(conversation_id: str) -> None:
                while True:
                    try:
                        await Session.start(runtime, config, conversation_id, scope=SCOPE)
                        return
                    except ConversationOwnedElsewhere:
                        await asyncio.sleep(0.05)  # the killed child's lease expires soon

            async with asyncio.timeout(60):
                await asyncio.gather(*(start(c) for c in ids))
            for conversation_id in ids:
                await Session.stop(runtime, config, conversation_id)

    # -- reading and checking --------------------------------------------------------------------

    async def _rows(self, conversation_id: str) -> list[DisplayMessage]:
        rows: list[DisplayMessage] = []
        while True:
            page = await self._store.list_display_messages(
                SCOPE,
                conversation_id,
                after_sequence=rows[-1].sequence if rows else None,
                limit=1000,
            )
            rows += page
            if len(page) < 1000:
                return rows

    def _check_state(self, conversation_id: str, stored: StoredState | None) -> list[str]:
        """Whole turns, extending what was stored before; remembers what is stored now."""
        known = self._known[conversation_id]
        messages = [] if stored is None else list(stored.state.messages)
        problems = turn_problems(messages)
        if stored is not None and stored.state.pending_tool_calls():
            problems.append("a tool call is left pending in the stored state")
        ids = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
        if len(messages) < known.count or ids[: len(known.tool_call_ids)] != known.tool_call_ids:
            problems.append(
                f"the stored history ({len(messages)} messages) does not extend the one stored "
                f"before ({known.count} messages)"
            )
        known.count, known.tool_call_ids = len(messages), ids
        known.version = _count_and_version(stored)[1]
        return problems


# -- invariants, as pure functions ---------------------------------------------------------------


def _reported(ids: Sequence[str], lines: Sequence[str]) -> dict[str, _Reported]:
    reported = {c: _Reported() for c in ids}
    for line in lines:
        kind, *values = line.split()
        if kind not in ("start", "idle", "saved"):
            continue
        said, count = reported[values[0]], int(values[1])
        if kind == "start":
            said.start = count
        elif kind == "idle":
            said.idle = max(count, said.idle or 0)
        else:
            said.saved = max(count, said.saved or 0)
    return reported


def _count_and_version(stored: StoredState | None) -> tuple[int, int]:
    if stored is None:
        return 0, 0
    return len(stored.state.messages), stored.version


def turn_problems(messages: Sequence[object]) -> list[str]:
    """Whether ``messages`` are whole turns ``turn 1, turn 2, ...``: the user's message, a call
    to ``fetch``, its 50 kB result, the answer ``done``."""
    if len(messages) % MESSAGES_PER_TURN:
        return [f"a torn turn: {len(messages)} messages stored"]
    for start in range(0, len(messages), MESSAGES_PER_TURN):
        turn = start // MESSAGES_PER_TURN + 1
        human, call, result, answer = messages[start : start + MESSAGES_PER_TURN]
        if not (
            isinstance(human, HumanMessage)
            and human.content == f"turn {turn}"
            and isinstance(call, AIMessage)
            and len(call.tool_calls) == 1
            and isinstance(result, ToolMessage)
            and result.tool_call_id == call.tool_calls[0]["id"]
            and result.content == RESULT
            and isinstance(answer, AIMessage)
            and answer.content == "done"
            and not answer.tool_calls
        ):
            return [f"turn {turn} is not a whole turn (messages {start}-{start + 3})"]
    return []


def expected_rows(stored: StoredState | None) -> list[tuple[str, str]]:
    """The display rows of the stored messages: (type, text or tool call id)."""
    expected: list[tuple[str, str]] = []
    for message in [] if stored is None else stored.state.messages:
        if isinstance(message, HumanMessage):
            expected.append(("user", str(message.content)))
        elif isinstance(message, AIMessage):
            if message.content:
                expected.append(("assistant", str(message.content)))
            expected += [("tool_call", str(call["id"])) for call in message.tool_calls]
        elif isinstance(message, ToolMessage):
            expected.append(("tool_result", message.tool_call_id))
    return expected


def row_key(row: DisplayMessage) -> tuple[str, str]:
    if row.type in ("tool_call", "tool_result"):
        return row.type, str(row.tool_call_id)
    return row.type, str(row.content.get("text"))


def row_problems(
    rows: Sequence[DisplayMessage], stored: StoredState | None, version: int, *, settled: bool
) -> list[str]:
    """Whether ``rows`` are exactly the rows of the stored state's messages, in order.

    ``settled``: after a reconciling start, when no row may be ahead of the state nor a tool
    call left ``executing``; otherwise ``rows`` are those not ahead of it, as a kill left them.
    """
    problems: list[str] = []
    messages = [] if stored is None else stored.state.messages
    humans = sum(1 for m in messages if isinstance(m, HumanMessage))
    users = sum(1 for row in rows if row.type == "user")
    if users != humans:
        problems.append(f"{users} user rows for {humans} human messages")
    calls = {str(c["id"]) for m in messages if isinstance(m, AIMessage) for c in m.tool_calls}
    missing = calls - {str(row.tool_call_id) for row in rows if row.type == "tool_call"}
    if missing:
        problems.append(f"{len(missing)} tool calls of the state have no row")
    if settled:
        ahead = [row for row in rows if (row.state_version or 0) > version]
        if ahead:
            problems.append(f"{len(ahead)} rows ahead of the stored version {version}")
        executing = [row for row in rows if row.status == "executing"]
        if executing:
            problems.append(f"{len(executing)} tool call rows left executing")
        wrong = [
            row
            for row in rows
            if row.type in ("tool_call", "tool_result") and row.status not in ("completed", None)
        ]
        if len(wrong) > len(executing):
            problems.append(f"{len(wrong) - len(executing)} tool rows not completed")
    actual = [row_key(row) for row in rows]
    expected = expected_rows(stored)
    if actual != expected:
        first = next(
            (i for i, (a, e) in enumerate(zip(actual, expected, strict=False)) if a != e),
            min(len(actual), len(expected)),
        )
        problems.append(
            f"{len(actual)} rows for {len(expected)} expected; they differ from row {first}: "
            f"{actual[first : first + 2]} instead of {expected[first : first + 2]}"
        )
    return problems


def _integrity_check(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows)


# -- running it ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(kind: str, folder: Path) -> AsyncIterator[tuple[SqlPersistence, str, str]]:
    """(store, url, table prefix) of fresh tables on ``kind``; PostgreSQL's are dropped after."""
    if kind == "sqlite":
        url = sqlite_url(folder / "kill.db")
        async with SqlPersistence(url) as store:
            await store.create_all()
            yield store, url, "sagents_"
        return
    prefix = f"kill{uuid.uuid4().hex[:8]}_"
    engine = create_engine_for(POSTGRES_URL, connect_args={"timeout": 5})
    store = SqlPersistence(engine, table_prefix=prefix)
    try:
        await store.create_all()
        yield store, POSTGRES_URL, prefix
    finally:
        try:
            await store.drop_all()
        finally:
            await engine.dispose()


async def campaign(
    kind: str, options: CampaignOptions, *, progress: IO[str] | None = None
) -> Tally:
    """Run one campaign on ``kind`` (``sqlite`` or ``postgres``) in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="sagents-kill-") as name:
        folder = Path(name)
        async with database(kind, folder) as (store, url, prefix):
            return await Campaign(
                kind,
                store,
                url,
                prefix,
                folder,
                options,
                sqlite_path=folder / "kill.db" if kind == "sqlite" else None,
                progress=progress,
            ).run()


def table(tallies: Sequence[Tally]) -> str:
    """The campaign's results as a Markdown table."""
    header = (
        "| database | kills | turns completed | turns durably reported | lost per kill and "
        "conversation (turns: times) | lost beyond the bound | reported durable, lost | torn "
        "states | rows ahead at a kill | display rows / state messages (checks, failed) | "
        "rows left executing | integrity | time |"
    )
    lines = [header, "|" + "---|" * (header.count(" | ") + 1)]
    for t in tallies:
        lost = ", ".join(f"{k}: {v}" for k, v in sorted(t.lost.items()))
        integrity = "n/a" if t.database != "sqlite" else f"{t.kills - t.integrity_failures} ok"
        lines.append(
            f"| {t.database} | {t.kills} ({t.early_kills} before a turn) | "
            f"{t.turns_completed:,} | {t.turns_durable:,} | {lost} | {t.lost_beyond_bound} | "
            f"{t.durable_lost} | {t.torn_states} | {t.rows_ahead_at_kill:,} | "
            f"{t.rows_checked:,} / {t.messages_checked:,} ({t.verifications}, "
            f"{t.row_mismatches}) | {t.rows_executing} | {integrity} | {t.seconds:,.0f} s |"
        )
    return "\n".join(lines)


async def main(kinds: Sequence[str], options: CampaignOptions) -> list[Tally]:
    tallies = [await campaign(kind, options, progress=sys.stderr) for kind in kinds]
    print(table(tallies))
    for tally in tallies:
        for problem in tally.problems:
            print(f"{tally.database}: {problem}")
    return tallies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--db", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--max-delay", type=float, default=1.5)
    args = parser.parse_args()
    opts = CampaignOptions(rounds=args.rounds, seed=args.seed, max_delay=args.max_delay)
    results = asyncio.run(main(args.db.split(","), opts))
    sys.exit(1 if any(t.problems for t in results) else 0)
