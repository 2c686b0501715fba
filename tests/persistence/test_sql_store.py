"""Tests for ``sagents.persistence.sql._store`` beyond the shared contract (S3, S5, S6).

What only SQL can show: which rows a save writes, how many queries a load runs, the SQLite
connection settings, the translation of driver errors, racing writers, and a process killed
in the middle of saving.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from sqlalchemy import Delete, Insert, Select, event, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from sagents._errors import ConfigurationError, PersistenceFailed
from sagents._state import State
from sagents.persistence import StateSnapshot
from sagents.persistence.sql import SqlPersistence, create_engine_for, sqlite_url
from tests.persistence.conftest import unique_prefix
from tests.persistence.test_contract import ALICE, rich_state, state_of


class StatementLog:
    """Counts the statements an engine runs, and the rows each DML statement carries."""

    def __init__(self) -> None:
        self.rows: Counter[tuple[str, str]] = Counter()
        self.statements: Counter[tuple[str, str]] = Counter()

    def __call__(self, conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if isinstance(clause, Insert | Delete):
            kind = "insert" if isinstance(clause, Insert) else "delete"
            table = clause.table.name  # type: ignore[union-attr]
        elif isinstance(clause, Select):
            kind, table = "select", "*"
        else:
            kind, table = type(clause).__name__.lower(), getattr(clause, "table", None)
            table = getattr(table, "name", "?")
        self.statements[kind, str(table)] += 1
        self.rows[kind, str(table)] += len(multiparams) or 1

    def traced(self, sql: str) -> None:
        """One statement as the sqlite3 driver runs it (an ``executemany`` traces each row)."""
        words = sql.replace("(", " ").split()
        kind = words[0].lower()
        if kind in ("insert", "delete"):
            table = words[2] if kind == "delete" else words[2 if words[1].upper() == "INTO" else 3]
        elif kind == "select":
            table = "*"
        elif kind == "update":
            table = words[1]
        else:
            return  # BEGIN, COMMIT, ROLLBACK
        self.statements[kind, table] += 1
        self.rows[kind, table] += 1

    def clear(self) -> None:
        self.rows.clear()
        self.statements.clear()


@pytest.fixture
def log(sql_store: SqlPersistence) -> Iterator[StatementLog]:
    # SQLAlchemy runs most statements; on a SQLite file, saves go to the sqlite3 driver
    # directly (see sagents/persistence/sql/_save.py): its trace shows those.
    statement_log = StatementLog()

    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(statement_log.traced)

    for engine in sql_store.sync_engines:
        event.listen(engine, "before_execute", statement_log)
        if engine.dialect.driver == "pysqlite":
            event.listen(engine, "connect", trace)
    yield statement_log
    for engine in sql_store.sync_engines:
        event.remove(engine, "before_execute", statement_log)
        if engine.dialect.driver == "pysqlite":
            event.remove(engine, "connect", trace)


def _save(state: State, version: int, **delta: Any) -> StateSnapshot:
    return StateSnapshot(state=state, version=version, **delta)


async def test_a_delta_save_writes_only_the_new_messages(
    sql_store: SqlPersistence, log: StatementLog
) -> None:
    messages = sql_store.tables.agent_messages.name
    assert await sql_store.save_state(ALICE, "c1", _save(state_of(3), 1))
    assert log.rows["insert", messages] == 3
    log.clear()

    assert await sql_store.save_state(
        ALICE, "c1", _save(state_of(5), 2, base_version=1, unchanged_prefix=3)
    )
    assert log.rows["insert", messages] == 2
    assert log.statements["delete", messages] == 0
    log.clear()

    edited = State(messages=[*state_of(1).messages, HumanMessage("edited"), *state_of(3).messages])
    assert await sql_store.save_state(
        ALICE, "c1", _save(edited, 3, base_version=2, unchanged_prefix=1)
    )
    assert log.statements["delete", messages] == 1
    assert log.rows["insert", messages] == 4
    assert (await sql_store.load_state(ALICE, "c1")).state == edited  # type: ignore[union-attr]


async def test_a_snapshot_on_another_base_rewrites_every_row(
    sql_store: SqlPersistence, log: StatementLog
) -> None:
    messages = sql_store.tables.agent_messages.name
    assert await sql_store.save_state(ALICE, "c1", _save(state_of(4), 1))
    log.clear()
    other = state_of(5, start=50)
    assert await sql_store.save_state(
        ALICE, "c1", _save(other, 3, base_version=2, unchanged_prefix=4)
    )
    assert log.statements["delete", messages] == 1
    assert log.rows["insert", messages] == 5
    assert (await sql_store.load_state(ALICE, "c1")).state == other  # type: ignore[union-attr]


async def test_a_stale_save_writes_nothing(sql_store: SqlPersistence, log: StatementLog) -> None:
    messages = sql_store.tables.agent_messages.name
    assert await sql_store.save_state(ALICE, "c1", _save(state_of(2), 5))
    log.clear()
    assert not await sql_store.save_state(ALICE, "c1", _save(state_of(9), 4))
    assert log.rows["insert", messages] == 0
    assert log.statements["delete", messages] == 0


async def test_a_load_runs_two_queries(sql_store: SqlPersistence, log: StatementLog) -> None:
    assert await sql_store.save_state(ALICE, "c1", _save(rich_state(), 1))
    log.clear()
    assert await sql_store.load_state(ALICE, "c1") is not None
    assert sum(log.statements.values()) == 2


async def test_storage_grows_with_the_messages_not_the_saves(sql_store: SqlPersistence) -> None:
    state = State()
    for version in range(1, 21):
        before = len(state.messages)
        state = state.append(*state_of(5, start=before).messages)
        snapshot = _save(state, version, base_version=version - 1 or None, unchanged_prefix=before)
        assert await sql_store.save_state(ALICE, "c1", snapshot)
    rows = sql_store.tables.agent_messages
    async with sql_store.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(rows))).scalar()
        positions = (await conn.execute(select(rows.c.position).order_by(rows.c.position))).all()
    assert count == 100
    assert [p for (p,) in positions] == list(range(100))


async def test_racing_saves_keep_the_newest(sql_store: SqlPersistence) -> None:
    versions = list(range(1, 13))
    random.Random(4).shuffle(versions)
    results = await asyncio.gather(
        *(sql_store.save_state(ALICE, "race", _save(state_of(v), v)) for v in versions)
    )
    assert results[versions.index(12)] is True
    stored = await sql_store.load_state(ALICE, "race")
    assert stored is not None
    assert (stored.version, stored.state) == (12, state_of(12))


async def test_a_failure_mid_save_leaves_the_previous_snapshot(sql_store: SqlPersistence) -> None:
    assert await sql_store.save_state(ALICE, "c1", _save(rich_state(), 1))
    before = await sql_store.get_conversation(ALICE, "c1")
    messages = sql_store.tables.agent_messages
    expected: type[Exception]
    if sql_store.engine.dialect.name == "sqlite":
        # Saves run on the sqlite3 driver: the database itself fails the insert.
        trigger = text(
            f"CREATE TRIGGER explode BEFORE INSERT ON {messages.name} "
            "BEGIN SELECT RAISE(ABORT, 'crash between the head and the messages'); END"
        )
        async with sql_store.engine.begin() as conn:
            await conn.execute(trigger)
        expected = PersistenceFailed
    else:

        def explode(conn: Any, clause: Any, *args: Any) -> None:
            if isinstance(clause, Insert) and clause.table is messages:
                raise RuntimeError("crash between the head and the messages")

        for engine in sql_store.sync_engines:
            event.listen(engine, "before_execute", explode)
        expected = RuntimeError
    try:
        with pytest.raises(expected, match="crash between the head and the messages"):
            await sql_store.save_state(ALICE, "c1", _save(state_of(3), 2))
    finally:
        if expected is PersistenceFailed:
            async with sql_store.engine.begin() as conn:
                await conn.execute(text("DROP TRIGGER explode"))
        else:
            for engine in sql_store.sync_engines:
                event.remove(engine, "before_execute", explode)
    stored = await sql_store.load_state(ALICE, "c1")
    assert stored is not None
    assert (stored.version, stored.state) == (1, rich_state())
    assert await sql_store.get_conversation(ALICE, "c1") == before


async def test_nul_characters(sql_store: SqlPersistence) -> None:
    # JSONB cannot hold U+0000: PostgreSQL stores it escaped (see _text.py), SQLite as is.
    state = State(messages=[HumanMessage("binary \x00 output")])
    assert await sql_store.save_state(ALICE, "c1", _save(state, 1))
    assert (await sql_store.load_state(ALICE, "c1")).state == state  # type: ignore[union-attr]


async def test_two_prefixes_in_one_database_are_independent(sql_store: SqlPersistence) -> None:
    other = SqlPersistence(sql_store.engine, table_prefix=unique_prefix())
    await other.create_all()
    try:
        assert await sql_store.save_state(ALICE, "c1", _save(state_of(1), 1))
        assert await other.load_state(ALICE, "c1") is None
        assert await other.list_conversations(ALICE) == []
    finally:
        await other.drop_all()
        await other.aclose()
    assert await sql_store.load_state(ALICE, "c1") is not None  # a passed engine stays open


# -- engines, SQLite settings and errors ---------------------------------------------------------


async def _pragmas(engine: AsyncEngine) -> tuple[Any, ...]:
    values = []
    async with engine.connect() as conn:
        for name in ("journal_mode", "synchronous", "foreign_keys"):
            values.append((await conn.execute(text(f"PRAGMA {name}"))).scalar())
    return tuple(values)


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine_for(sqlite_url(tmp_path / "deep" / "er" / "x.db"))
    try:
        assert await _pragmas(engine) == ("wal", 1, 1)  # synchronous 1 is NORMAL
    finally:
        await engine.dispose()
    assert (tmp_path / "deep" / "er" / "x.db").exists()
    full = create_engine_for(sqlite_url(tmp_path / "full.db"), sqlite_synchronous="FULL")
    try:
        assert await _pragmas(full) == ("wal", 2, 1)
    finally:
        await full.dispose()


async def test_a_plain_sqlite_engine_is_configured_when_passed_in(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(sqlite_url(tmp_path / "plain.db"))
    try:
        async with SqlPersistence(engine, create_tables=True) as store:
            assert await store.save_state(ALICE, "c1", _save(state_of(2), 1))
            assert await _pragmas(engine) == ("wal", 1, 1)
        # aclose left the caller's engine alone.
        assert await SqlPersistence(engine).load_state(ALICE, "c1") is not None
    finally:
        await engine.dispose()


async def test_create_tables_creates_them_on_first_use(tmp_path: Path) -> None:
    store = SqlPersistence(sqlite_url(tmp_path / "lazy.db"), create_tables=True)
    try:
        state, conversations = await asyncio.gather(
            store.load_state(ALICE, "c1"), store.list_conversations(ALICE)
        )
        assert state is None
        assert conversations == []
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    "url", ["nosuchdb+nodriver://x/y", "sqlite:///sync-driver.db", "not a url at all"]
)
def test_bad_urls_are_configuration_errors(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # whatever happens, no file lands in the repository
    with pytest.raises(ConfigurationError, match="cannot create a database engine"):
        SqlPersistence(url)


@pytest.mark.parametrize("prefix", ["Sagents_", "1x", "a-b", "x" * 31, "drop table;"])
def test_bad_table_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="table prefix"):
        SqlPersistence("sqlite+aiosqlite:///unused.db", table_prefix=prefix)


def test_bad_synchronous_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="sqlite_synchronous"):
        create_engine_for("sqlite+aiosqlite:///unused.db", sqlite_synchronous="OFF")  # type: ignore[arg-type]


async def test_missing_tables_fail_with_a_sagents_error(tmp_path: Path) -> None:
    store = SqlPersistence(sqlite_url(tmp_path / "empty.db"))
    try:
        with pytest.raises(PersistenceFailed, match="sagents db upgrade") as caught:
            await store.save_state(ALICE, "c1", _save(state_of(1), 1))
        # The driver's error (SQLite saves run on the driver), or SQLAlchemy's.
        assert isinstance(caught.value.__cause__, SQLAlchemyError | sqlite3.Error)
        assert "message 0" not in str(caught.value)  # no statement parameters in messages
        with pytest.raises(PersistenceFailed):
            await store.load_state(ALICE, "c1")
    finally:
        await store.aclose()


async def test_an_unreachable_server_fails_with_a_sagents_error() -> None:
    store = SqlPersistence(
        create_engine_for(
            "postgresql+asyncpg://postgres@127.0.0.1:1/test", connect_args={"timeout": 2}
        )
    )
    try:
        with pytest.raises(PersistenceFailed, match="could not get conversation"):
            await store.get_conversation(ALICE, "c1")
    finally:
        await store.engine.dispose()


# -- durability (S5): a killed process ----------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from langchain_core.messages import HumanMessage
    from sagents._state import State
    from sagents.persistence import StateSnapshot
    from sagents.persistence.sql import SqlPersistence

    async def main(url):
        async with SqlPersistence(url, create_tables=True) as store:
            messages = []
            version = 0
            while True:
                version += 1
                before = len(messages)
                messages = messages + [HumanMessage(f"m{before}", id=f"m{before}")]
                state = State(messages=messages, metadata={"version": version})
                snapshot = StateSnapshot(
                    state=state, version=version, base_version=version - 1 or None,
                    unchanged_prefix=before,
                )
                await store.save_state("alice", "c1", snapshot)
                print(version, flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_killed_process_leaves_its_last_completed_save(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, sqlite_url(path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    last = 0
    try:
        while last < 40:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
            assert line, "the child exited early"
            last = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    store = SqlPersistence(sqlite_url(path))
    try:
        stored = await store.load_state(ALICE, "c1")
    finally:
        await store.aclose()
    assert stored is not None
    assert stored.version >= last  # it may have completed a few more before dying
    assert stored.state.metadata == {"version": stored.version}
    assert [m.content for m in stored.state.messages] == [f"m{i}" for i in range(stored.version)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
