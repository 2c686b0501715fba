"""``SqlPersistence``: agent states, display messages and conversations in SQL.

One implementation for SQLite (the embedded default) and PostgreSQL, on SQLAlchemy 2 Core with
an async engine (aiosqlite, asyncpg).

Invariants:

* **Scope**: every statement filters on the conversation's scope, stored as its key
  (:func:`~sagents.persistence.scope_key`: a text scope as itself, any other hashable value as
  a canonical text that is the same in every process). A caller from another scope reads
  nothing (None, ``[]``, False), and a write to a conversation id owned by another scope raises
  :class:`ConversationNotFound`; no statement ever changes another tenant's rows. Rows read
  back carry the caller's scope object, which the key alone could not rebuild.
* **Atomic, ordered saves**: a save is one transaction. It first locks the conversation row
  (an ``UPDATE`` of it, which takes the row lock on PostgreSQL; on SQLite every write
  transaction starts with ``BEGIN IMMEDIATE`` and so holds the database's write lock), then reads
  the stored version *after* the lock is held, so two racing saves cannot both believe they are
  newer. A crash mid-save rolls back: the previous snapshot stays readable.
* **Delta saves**: when a snapshot builds on the stored version, only the messages after its
  unchanged prefix are deleted and inserted; the history is neither serialised nor written again.
* **Consistent loads**: the head and the messages are read by two queries in one transaction
  that sees a single snapshot (``REPEATABLE READ`` on PostgreSQL; on SQLite an explicit
  ``BEGIN``, since the sqlite3 driver would otherwise run each ``SELECT`` on its own).
* **One exception tree**: SQLAlchemy and driver errors leave as :class:`PersistenceFailed` (the
  driver error chained as ``__cause__``); a value that is not JSON leaves as ``StateError``.

Writers of one store on SQLite also queue on an ``asyncio.Lock`` before taking the database's
single write lock (see ``_engine`` for the SQLite settings and why).

The class is assembled from one part per protocol, each in its own module over the
``_part.StorePart`` base (which holds the conversation lock and lease fence they share):
``_conversations`` (``ConversationStore``), ``_states`` (``AgentPersistence``; the save itself
is ``_save``'s), ``_display_messages`` (``DisplayMessagePersistence``,
``DisplayReconciliation``), ``_files`` (``FilePersistence``, ``FileIndexPersistence``) and
``_leases`` (``ConversationLeases``). This module keeps what they share at run time: the
engine and its read and write transactions, table creation, closing, and pickling as a URL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import URL, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagents._errors import PersistenceFailed
from sagents.persistence._common import MonotonicClock
from sagents.persistence.sql._conversations import SqlConversations
from sagents.persistence.sql._display_messages import SqlDisplayMessages
from sagents.persistence.sql._engine import (
    SQLITE_BEGIN,
    configure_sqlite,
    create_engine_for,
    sqlite_writer_twin,
    translated,
)
from sagents.persistence.sql._files import SqlFiles
from sagents.persistence.sql._leases import SqlLeases
from sagents.persistence.sql._models import DEFAULT_TABLE_PREFIX, SqlTables, build_tables
from sagents.persistence.sql._part import same
from sagents.persistence.sql._save import SqliteSaver
from sagents.persistence.sql._states import SqlAgentStates
from sagents.persistence.sql._text import escape, unescape

__all__ = ["SqlPersistence"]

#: Tries of ``create_tables``' creation, which can race another process's.
_CREATE_ATTEMPTS = 5


class SqlPersistence(SqlConversations, SqlAgentStates, SqlDisplayMessages, SqlFiles, SqlLeases):
    """Agent states, display messages and conversations in SQLite or PostgreSQL.

    Implements :class:`~sagents.persistence.AgentPersistence`,
    :class:`~sagents.persistence.DisplayMessagePersistence` and
    :class:`~sagents.persistence.ConversationStore`. Create the schema with
    ``sagents db upgrade`` (or :func:`sagents.persistence.sql.upgrade`) in production, or with
    ``create_tables=True`` / :meth:`create_all` in tests and development.

    Use it as an async context manager, or call :meth:`aclose`. An engine passed in stays the
    caller's to dispose; an engine built from a URL is disposed by :meth:`aclose`.

    Args:
        url_or_engine: a URL (see :func:`create_engine_for`) or an ``AsyncEngine``.
        table_prefix: prefix of the table names (``sagents_conversations``...).
        create_tables: create missing tables before the first operation.

    Raises:
        ConfigurationError: invalid prefix or URL.
    """

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        create_tables: bool = False,
    ) -> None:
        self._tables = build_tables(table_prefix)
        self._origin: tuple[str, str, bool] | None = None  # (url, prefix, create_tables)
        if isinstance(url_or_engine, AsyncEngine):
            engine, self._owns_engine = url_or_engine, False
        else:
            engine, self._owns_engine = create_engine_for(url_or_engine), True
            url = engine.url.render_as_string(hide_password=False)
            self._origin = (url, table_prefix, create_tables)
        dialect = engine.dialect.name
        if dialect == "sqlite":
            configure_sqlite(engine)
        self._engine = engine
        self._dialect = dialect
        # PostgreSQL refuses NUL and lone surrogates in text: escaped there (see _text.py).
        self._in = escape if dialect == "postgresql" else same
        self._out = unescape if dialect == "postgresql" else same
        self._writer = engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        self._reader = (
            engine.execution_options(isolation_level="REPEATABLE READ")
            if dialect == "postgresql"
            else engine
        )
        self._clock = MonotonicClock()
        self._create_pending = create_tables
        self._create_lock = asyncio.Lock()
        # SQLite has one writer at a time. Queueing this store's writers here, rather than in
        # SQLite's busy handler (which polls with sleeps of up to 100 ms), keeps concurrent
        # writes of one process prompt; other processes still wait on the busy timeout.
        self._write_lock = asyncio.Lock() if dialect == "sqlite" else None
        # On a SQLite file, saves run whole in a thread, through the driver, on a synchronous
        # twin of the engine (see _save.py).
        self._twin = sqlite_writer_twin(engine) if dialect == "sqlite" else None
        self._saver = None if self._twin is None else SqliteSaver(self._twin, self._tables)

    def __reduce__(self) -> tuple[Any, ...]:
        """A store built from a URL pickles as that URL: unpickled in another process (a
        distributed backend's host), it is that process's one store of the same database and
        table prefix, sharing its connections with every agent there.

        Raises:
            TypeError: this store was built on an engine, which cannot leave its process.
        """
        if self._origin is None:
            raise TypeError(
                "a SqlPersistence built on an engine cannot leave its process; build it from "
                "a URL to send it to another process (e.g. the hosts of a RayBackend)"
            )
        return (_shared_store, self._origin)

    @property
    def engine(self) -> AsyncEngine:
        """The engine in use."""
        return self._engine

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """Every synchronous engine this store runs statements on: the async engine's, and on
        a SQLite file the twin that saves run on. Attach SQLAlchemy event listeners or
        instrumentation (e.g. OpenTelemetry's) to all of them."""
        twin = () if self._twin is None else (self._twin,)
        return (self._engine.sync_engine, *twin)

    @property
    def tables(self) -> SqlTables:
        """The tables (for joins with an application's own tables)."""
        return self._tables

    async def __aenter__(self) -> SqlPersistence:
        await self._ready()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections of an engine this store created (a no-op for a passed one)."""
        with translated("close the database connections"):
            if self._saver is not None:
                self._saver.close()
            if self._twin is not None:
                self._twin.dispose()
            if self._owns_engine:
                await self._engine.dispose()

    async def create_all(self) -> None:
        """Create the tables that do not exist yet (tests, development; prefer migrations)."""
        with translated("create the tables"):
            async with self._engine.begin() as conn:
                await conn.run_sync(self._tables.metadata.create_all)

    async def drop_all(self) -> None:
        """Drop the tables of this prefix and everything in them (tests)."""
        with translated("drop the tables"):
            async with self._engine.begin() as conn:
                await conn.run_sync(self._tables.metadata.drop_all)

    async def _ready(self) -> None:
        if not self._create_pending:
            return
        async with self._create_lock:
            for attempt in range(_CREATE_ATTEMPTS):
                if not self._create_pending:
                    return
                try:
                    await self.create_all()
                    self._create_pending = False
                except PersistenceFailed:
                    # Another process creating the same tables at the same moment (several
                    # workers or hosts on one SQLite file): its DDL holds the lock, or made
                    # a table this one then fails to create. The next check sees them.
                    if attempt == _CREATE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.05 * 2**attempt)

    @contextlib.asynccontextmanager
    async def _write(self, action: str) -> AsyncIterator[AsyncConnection]:
        await self._ready()
        async with self._write_lock or contextlib.nullcontext():
            with translated(action):
                async with self._writer.begin() as conn:
                    yield conn

    @contextlib.asynccontextmanager
    async def _read(self, action: str) -> AsyncIterator[AsyncConnection]:
        await self._ready()
        with translated(action):
            async with self._reader.connect() as conn:
                yield conn


#: The stores unpickled in this process, by (url, prefix): one engine per database.
_SHARED: dict[tuple[str, str], SqlPersistence] = {}


def _shared_store(url: str, table_prefix: str, create_tables: bool) -> SqlPersistence:
    store = _SHARED.get((url, table_prefix))
    if store is None:
        store = SqlPersistence(url, table_prefix=table_prefix, create_tables=create_tables)
        _SHARED[url, table_prefix] = store
    return store
