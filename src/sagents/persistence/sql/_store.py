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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    RowMapping,
    Table,
    Text,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert

from sagents._errors import ConversationExists, ConversationNotFound, PersistenceFailed, StateError
from sagents._files import FileInfo, guess_mime_type
from sagents.persistence._common import (
    MonotonicClock,
    check_display_messages,
    check_id,
    check_limit,
    check_scope,
    check_status,
    check_target,
    decode_state,
    encode_head,
    json_copy,
    loads,
    new_id,
    to_utc,
)
from sagents.persistence._files import check_file_changes
from sagents.persistence._leases import LeaseRow, check_owner, check_ttl, fence, recovered, take
from sagents.persistence._protocols import (
    Conversation,
    DisplayMessage,
    Lease,
    Scope,
    StateSnapshot,
    StoredState,
    ToolCallStatus,
)
from sagents.persistence.sql._engine import (
    SQLITE_BEGIN,
    configure_sqlite,
    create_engine_for,
    sqlite_writer_twin,
    translated,
)
from sagents.persistence.sql._models import DEFAULT_TABLE_PREFIX, SqlTables, build_tables
from sagents.persistence.sql._save import (
    CoreStatements,
    SqliteSaver,
    lock_conversation,
    save,
)
from sagents.persistence.sql._text import escape, unescape

__all__ = ["SqlPersistence"]

#: Tries of ``create_tables``' creation, which can race another process's.
_CREATE_ATTEMPTS = 5


class _Stale(Exception):
    """Raised inside a save's transaction to roll it back: a newer version is stored."""


# -- the store --------------------------------------------------------------------------------


def _scope_is(column: ColumnElement[Any], key: str | None) -> ColumnElement[bool]:
    return column.is_(None) if key is None else column == key


def _same(value: Any) -> Any:
    return value


def _display(row: RowMapping, text: Callable[[Any], Any] = _same) -> DisplayMessage:
    return DisplayMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        type=row["type"],
        content=text(row["content"]),
        content_type=row["content_type"],
        tool_call_id=row["tool_call_id"],
        sequence=row["sequence"],
        status=row["status"],
        metadata=text(row["metadata"]),
        created_at=to_utc(row["created_at"]),
        state_version=row["state_version"],
    )


def _conversation(row: RowMapping, scope: Scope, text: Callable[[Any], Any]) -> Conversation:
    # The row holds the scope's key; every read is filtered by the caller's, so the caller's
    # scope is the row's.
    return Conversation(
        id=row["id"],
        scope=scope,
        title=unescape(row["title"]),  # a text column: escaped on every database
        metadata=text(row["metadata"]),
        interrupted=row["interrupted"],
        created_at=to_utc(row["created_at"]),
        updated_at=to_utc(row["updated_at"]),
    )


class SqlPersistence:
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
        self._in: Callable[[Any], Any] = escape if dialect == "postgresql" else _same
        self._out: Callable[[Any], Any] = unescape if dialect == "postgresql" else _same
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

    def _insert_if_absent(self, table: Table) -> Insert:
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        if self._dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(table).on_conflict_do_nothing()
        return insert(table)  # elsewhere a duplicate raises, and becomes PersistenceFailed

    def _lease_row_now(self, conn: Connection, conversation_id: str) -> LeaseRow | None:
        leases = self._tables.leases
        row = (
            conn.execute(
                select(
                    leases.c.owner, leases.c.token, leases.c.expires_at, leases.c.released
                ).where(leases.c.conversation_id == conversation_id)
            )
        ).first()
        if row is None:
            return None
        return LeaseRow(
            owner=row.owner,
            token=row.token,
            expires_at=to_utc(row.expires_at),
            released=row.released,
        )

    async def _lock_conversation(
        self,
        conn: AsyncConnection,
        key: str | None,
        conversation_id: str,
        touch: dict[str, Any],
        now: datetime,
        *,
        create: bool = True,
    ) -> bool:
        """:func:`~sagents.persistence.sql._save.lock_conversation` (of the scope whose key is
        ``key``) on an async connection."""
        locked: bool = await conn.run_sync(
            lambda sync: lock_conversation(
                CoreStatements(sync, self._tables, self._insert_if_absent),
                key,
                conversation_id,
                touch,
                now,
                create=create,
            )
        )
        return locked

    async def _lease_row(self, conn: AsyncConnection, conversation_id: str) -> LeaseRow | None:
        row: LeaseRow | None = await conn.run_sync(self._lease_row_now, conversation_id)
        return row

    async def _lock_for_write(
        self,
        conn: AsyncConnection,
        key: str | None,
        conversation_id: str,
        lease_token: int | None,
        touch: dict[str, Any],
        now: datetime,
        *,
        create: bool = True,
    ) -> bool:
        """Lock the conversation row for a write in ``conn``'s transaction (creating it when
        ``create`` allows and no ``lease_token`` is given); whether it exists.

        With ``lease_token``, the lease row is read *under* that lock and the write refused
        unless the writer still holds that lease: acquisitions lock the same row, so no
        takeover can commit between the check and the write. A missing conversation was
        deleted under the writer, and is not created again.

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: the writer lost its lease, or the conversation was deleted.
        """
        exists = await self._lock_conversation(
            conn, key, conversation_id, touch, now, create=create and lease_token is None
        )
        if lease_token is not None:
            fence(
                conversation_id,
                await self._lease_row(conn, conversation_id) if exists else None,
                lease_token,
                now,
                exists=exists,
            )
        return exists

    # -- AgentPersistence --------------------------------------------------------------------

    async def save_state(self, scope: Scope, conversation_id: str, snapshot: StateSnapshot) -> bool:
        """Store ``snapshot`` in one transaction unless a newer version is stored (then False).

        Creates the conversation in ``scope`` if it does not exist (unless the snapshot names
        a lease: see :class:`~sagents.persistence.StateSnapshot`), and sets its
        ``interrupted`` flag from the state. The transaction runs as one unit of work: on a
        SQLite file in one hop to a worker thread, elsewhere in one greenlet run.

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: the writer lost its lease, or the conversation was deleted.
            StateError: the state holds something that is not JSON.
            PersistenceFailed: the database failed; nothing was written.
        """
        key = check_target(scope, conversation_id)
        head = self._in(encode_head(snapshot.state))
        if self._saver is not None:
            await self._ready()
            async with self._write_lock or contextlib.nullcontext():
                return await asyncio.to_thread(
                    self._saver.save, key, conversation_id, snapshot, head, self._clock.now()
                )
        try:
            async with self._write(f"save the state of conversation {conversation_id!r}") as conn:
                await conn.run_sync(self._save_now, key, conversation_id, snapshot, head)
        except _Stale:
            return False
        return True

    def _save_now(
        self,
        conn: Connection,
        key: str | None,
        conversation_id: str,
        snapshot: StateSnapshot,
        head: Any,
    ) -> None:
        statements = CoreStatements(conn, self._tables, self._insert_if_absent)
        now = self._clock.now()
        if not save(statements, key, conversation_id, snapshot, head, now, self._in):
            raise _Stale  # rolls the transaction back: not even the touch is written

    async def load_state(self, scope: Scope, conversation_id: str) -> StoredState | None:
        """The stored state and its version; None when missing or in another scope.

        Raises:
            StateError: the stored data is not a valid state.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        tables = self._tables
        states, conversations, rows = (
            tables.agent_states,
            tables.conversations,
            tables.agent_messages,
        )
        async with self._read(f"load the state of conversation {conversation_id!r}") as conn:
            head = (
                await conn.execute(
                    select(states.c.version, states.c.head)
                    .join(conversations, conversations.c.id == states.c.conversation_id)
                    .where(
                        states.c.conversation_id == conversation_id,
                        _scope_is(conversations.c.scope, key),
                    )
                )
            ).first()
            if head is None:
                return None
            # The rows as their JSON text, decoded below in one loads() of the whole
            # array: a thousand small decodes (and the driver's per-row processing) cost more
            # than the query.
            texts = (
                await conn.execute(
                    select(cast(rows.c.message, Text))
                    .where(rows.c.conversation_id == conversation_id)
                    .order_by(rows.c.position)
                )
            ).scalars()
            joined = ",".join(texts)
        try:
            message_rows = loads(f"[{joined}]")
        except ValueError as exc:
            raise StateError(
                f"the stored messages of {conversation_id!r} are not JSON: {exc}"
            ) from None
        out = self._out
        return StoredState(
            state=decode_state(out(head.head), out(message_rows)),
            version=head.version,
        )

    # -- ConversationLeases ------------------------------------------------------------------

    async def acquire_lease(
        self,
        scope: Scope,
        conversation_id: str,
        owner: str,
        ttl: float,
        *,
        create: bool = True,
    ) -> Lease:
        """Take the conversation's lease (see :class:`~sagents.persistence.ConversationLeases`),
        in one transaction that holds the conversation row's lock.

        Raises:
            ConversationOwnedElsewhere: another owner holds a live lease.
            ConversationNotFound: in another scope, or missing and ``create`` is False.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        check_owner(owner)
        duration = check_ttl(ttl)
        tables = self._tables
        leases, states = tables.leases, tables.agent_states
        async with self._write(f"take the lease of conversation {conversation_id!r}") as conn:
            now = self._clock.now()
            if not await self._lock_conversation(
                conn, key, conversation_id, {}, now, create=create
            ):
                raise ConversationNotFound(
                    f"no conversation {conversation_id!r} in this scope; create it first"
                )
            current = await self._lease_row(conn, conversation_id)
            row = take(current, conversation_id, owner, duration, now)
            values = {
                "owner": row.owner,
                "token": row.token,
                "expires_at": row.expires_at,
                "released": False,
            }
            if current is None:
                await conn.execute(insert(leases).values(conversation_id=conversation_id, **values))
            else:
                await conn.execute(
                    update(leases)
                    .where(leases.c.conversation_id == conversation_id)
                    .values(**values)
                )
            version = (
                await conn.execute(
                    select(states.c.version).where(states.c.conversation_id == conversation_id)
                )
            ).scalar()
        return Lease(
            conversation_id=conversation_id,
            owner=owner,
            token=row.token,
            expires_at=row.expires_at,
            state_version=version,
            recovered=recovered(current),
        )

    async def renew_leases(self, owner: str, ttl: float) -> set[str]:
        """Extend every lease of ``owner`` in one statement; the ids it still holds.

        Raises:
            PersistenceFailed: the database failed.
        """
        check_owner(owner)
        duration = check_ttl(ttl)
        leases = self._tables.leases
        async with self._write("renew the ownership leases") as conn:
            result = await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.released.is_(False))
                .values(expires_at=self._clock.now() + duration)
                .returning(leases.c.conversation_id)
            )
            return set(result.scalars())

    async def expire_leases(self, owner: str) -> int:
        """Let every live lease of ``owner`` expire now, for an owner known to be gone (its
        process or node died): its conversations can then be taken over at once rather than
        after their ttl. Safe even if it still runs somewhere: its saves carry the old tokens
        and are refused (fencing). Returns how many leases expired."""
        check_owner(owner)
        leases = self._tables.leases
        async with self._write(f"expire the leases of {owner!r}") as conn:
            now = self._clock.now()
            expired = await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.expires_at > now)
                .values(expires_at=now)
            )
        return int(expired.rowcount)

    async def release_lease(self, scope: Scope, conversation_id: str, lease: Lease) -> None:
        """Let ``lease`` expire now if it is still the conversation's (the row and its token
        stay, so tokens keep increasing).

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        leases, conversations = self._tables.leases, self._tables.conversations
        async with self._write(f"release the lease of conversation {conversation_id!r}") as conn:
            await conn.execute(
                update(leases)
                .where(
                    leases.c.conversation_id == conversation_id,
                    leases.c.token == lease.token,
                    leases.c.conversation_id.in_(
                        select(conversations.c.id).where(_scope_is(conversations.c.scope, key))
                    ),
                )
                .values(expires_at=self._clock.now(), released=True)
            )

    # -- DisplayReconciliation ---------------------------------------------------------------

    async def reconcile_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        state_version: int | None,
        tool_call_statuses: Mapping[str, ToolCallStatus],
        lease_token: int | None = None,
    ) -> list[DisplayMessage]:
        """Drop rows newer than the stored state and settle tool calls left ``executing``
        (see :class:`~sagents.persistence.DisplayReconciliation`), in one transaction.

        Raises:
            StateConflict: made under ``lease_token``, and that lease is no longer the
                conversation's (or the conversation was deleted): nothing changes.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        display = self._tables.display_messages
        action = f"reconcile the display messages of conversation {conversation_id!r}"
        async with self._write(action) as conn:
            now = self._clock.now()
            if not await self._lock_for_write(
                conn, key, conversation_id, lease_token, {}, now, create=False
            ):
                return []
            ahead: list[ColumnElement[bool]] = [display.c.state_version.is_not(None)]
            if state_version is not None:
                ahead.append(display.c.state_version > state_version)
            await conn.execute(
                sql_delete(display).where(display.c.conversation_id == conversation_id, *ahead)
            )
            executing = (
                (
                    await conn.execute(
                        select(display).where(
                            display.c.conversation_id == conversation_id,
                            display.c.type == "tool_call",
                            display.c.status == "executing",
                        )
                    )
                )
                .mappings()
                .all()
            )
            changed: list[DisplayMessage] = []
            for row in executing:
                message = _display(row, self._out)
                status = tool_call_statuses.get(message.tool_call_id or "", "interrupted")
                await conn.execute(
                    update(display).where(display.c.id == message.id).values(status=status)
                )
                changed.append(dataclasses.replace(message, status=status))
        return changed

    # -- DisplayMessagePersistence -----------------------------------------------------------

    async def append_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        messages: Sequence[DisplayMessage],
        *,
        lease_token: int | None = None,
    ) -> list[DisplayMessage]:
        """Append in order with sequences after the last one; creates the conversation if new
        (unless written under ``lease_token``: see :meth:`update_tool_call_status`).

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: written under ``lease_token``, and that lease is no longer the
                conversation's, or the conversation was deleted.
            StateError: a message's content or metadata is not JSON.
            ValueError: a message names another conversation.
            PersistenceFailed: the database failed; nothing was written.
        """
        key = check_target(scope, conversation_id)
        check_display_messages(conversation_id, messages)
        if not messages:
            return []
        contents = [
            (
                json_copy(m.content, f"messages[{i}].content"),
                json_copy(m.metadata, f"messages[{i}].metadata"),
            )
            for i, m in enumerate(messages)
        ]
        display = self._tables.display_messages
        action = f"append display messages to conversation {conversation_id!r}"
        async with self._write(action) as conn:
            now = self._clock.now()
            # A writer under a lease: the rows are refused, like its state saves, once another
            # process took the conversation over (or it was deleted).
            await self._lock_for_write(
                conn, key, conversation_id, lease_token, {"updated_at": now}, now
            )
            last = (
                await conn.execute(
                    select(func.max(display.c.sequence)).where(
                        display.c.conversation_id == conversation_id
                    )
                )
            ).scalar()
            first = (last or 0) + 1
            saved = [
                DisplayMessage(
                    id=m.id or new_id(),
                    conversation_id=conversation_id,
                    type=m.type,
                    content=content,
                    content_type=m.content_type,
                    tool_call_id=m.tool_call_id,
                    sequence=first + i,
                    status=m.status,
                    metadata=metadata,
                    created_at=now if m.created_at is None else to_utc(m.created_at),
                    state_version=m.state_version,
                )
                for i, (m, (content, metadata)) in enumerate(zip(messages, contents, strict=True))
            ]
            await conn.execute(
                insert(display),
                [
                    {
                        "id": m.id,
                        "conversation_id": conversation_id,
                        "type": m.type,
                        "content": self._in(m.content),
                        "content_type": m.content_type,
                        "tool_call_id": m.tool_call_id,
                        "sequence": m.sequence,
                        "status": m.status,
                        "metadata": self._in(m.metadata),
                        "created_at": m.created_at,
                        "state_version": m.state_version,
                    }
                    for m in saved
                ],
            )
        # The dicts in ``saved`` are JSON copies: neither the caller's nor shared with anything.
        return saved

    async def list_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        after_sequence: int | None = None,
        limit: int = 200,
    ) -> list[DisplayMessage]:
        """Up to ``limit`` messages with a sequence above ``after_sequence``, in order.

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        check_limit(limit)
        display, conversations = self._tables.display_messages, self._tables.conversations
        query = (
            select(display)
            .join(conversations, conversations.c.id == display.c.conversation_id)
            .where(
                display.c.conversation_id == conversation_id,
                _scope_is(conversations.c.scope, key),
            )
            .order_by(display.c.sequence)
            .limit(limit)
        )
        if after_sequence is not None:
            query = query.where(display.c.sequence > after_sequence)
        action = f"list the display messages of conversation {conversation_id!r}"
        async with self._read(action) as conn:
            result = await conn.execute(query)
            return [_display(row, self._out) for row in result.mappings()]

    async def _change_tool_call(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        status: str | None,
        changes: Mapping[str, Any],
        lease_token: int | None,
    ) -> DisplayMessage | None:
        key = check_target(scope, conversation_id)
        check_id(tool_call_id, "tool_call_id")
        display, conversations = self._tables.display_messages, self._tables.conversations
        action = f"update tool call {tool_call_id!r} of conversation {conversation_id!r}"
        async with self._write(action) as conn:
            if lease_token is not None:
                # Fenced as appends are, in this transaction; without a token the row lock
                # below is all an update needs (it never creates anything).
                now = self._clock.now()
                await self._lock_for_write(
                    conn, key, conversation_id, lease_token, {}, now, create=False
                )
            row = (
                (
                    await conn.execute(
                        select(display)
                        .join(conversations, conversations.c.id == display.c.conversation_id)
                        .where(
                            display.c.conversation_id == conversation_id,
                            _scope_is(conversations.c.scope, key),
                            display.c.type == "tool_call",
                            display.c.tool_call_id == tool_call_id,
                        )
                        .order_by(display.c.sequence.desc())
                        .limit(1)
                        .with_for_update(of=display)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            message = _display(row, self._out)
            metadata = json_copy({**message.metadata, **changes}, "metadata")
            new_status = message.status if status is None else status
            await conn.execute(
                update(display)
                .where(display.c.id == message.id)
                .values(status=new_status, metadata=self._in(metadata))
            )
        return dataclasses.replace(message, status=new_status, metadata=metadata)

    async def update_tool_call_status(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        status: ToolCallStatus,
        metadata: Mapping[str, Any] | None = None,
        *,
        lease_token: int | None = None,
    ) -> DisplayMessage | None:
        """Set the status of the ``tool_call`` row (``metadata`` is merged into its metadata).

        Args:
            lease_token: the fencing token of the lease the writer holds (None: it holds none,
                and nothing is checked). With it the change is refused unless that lease is
                still the conversation's, checked in the update's transaction as state saves
                are, and a deleted conversation is never created again.

        Returns:
            The updated row, or None when this scope has no such tool call.

        Raises:
            StateConflict: the writer lost its lease, or the conversation was deleted.
            ConversationNotFound: written under ``lease_token`` to another scope's conversation.
            ValueError: ``status`` is not a tool call status.
            PersistenceFailed: the database failed.
        """
        check_status(status)
        return await self._change_tool_call(
            scope, conversation_id, tool_call_id, status, metadata or {}, lease_token
        )

    async def record_decision(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        decision: Mapping[str, Any],
        *,
        lease_token: int | None = None,
    ) -> DisplayMessage | None:
        """Keep ``decision`` as ``metadata["decision"]`` of the ``tool_call`` row (fenced by
        ``lease_token`` as :meth:`update_tool_call_status` is).

        Returns:
            The updated row, or None when this scope has no such tool call.

        Raises:
            StateConflict: the writer lost its lease, or the conversation was deleted.
            PersistenceFailed: the database failed.
        """
        change = {"decision": dict(decision)}
        return await self._change_tool_call(
            scope, conversation_id, tool_call_id, None, change, lease_token
        )

    # -- ConversationStore -------------------------------------------------------------------

    async def create_conversation(
        self,
        scope: Scope,
        *,
        conversation_id: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Conversation:
        """Create a conversation in ``scope``.

        Raises:
            ConversationExists: the id is taken (in any scope: ids are global).
            PersistenceFailed: the database failed.
        """
        conversation_id = new_id() if conversation_id is None else conversation_id
        key = check_target(scope, conversation_id)
        now = self._clock.now()
        conversation = Conversation(
            id=conversation_id,
            scope=scope,
            title=title,
            metadata=json_copy(dict(metadata or {}), "metadata"),
            interrupted=False,
            created_at=now,
            updated_at=now,
        )
        conversations = self._tables.conversations
        async with self._write(f"create conversation {conversation_id!r}") as conn:
            created = await conn.execute(
                self._insert_if_absent(conversations).values(
                    id=conversation_id,
                    scope=key,
                    title=escape(title),
                    metadata=self._in(conversation.metadata),
                    interrupted=False,
                    created_at=now,
                    updated_at=now,
                )
            )
            if created.rowcount != 1:
                raise ConversationExists(f"conversation {conversation_id!r} already exists")
        return conversation

    async def get_conversation(self, scope: Scope, conversation_id: str) -> Conversation | None:
        """The conversation, or None when missing or in another scope.

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        conversations = self._tables.conversations
        async with self._read(f"get conversation {conversation_id!r}") as conn:
            result = await conn.execute(
                select(conversations).where(
                    conversations.c.id == conversation_id,
                    _scope_is(conversations.c.scope, key),
                )
            )
            row = result.mappings().first()
        return None if row is None else _conversation(row, scope, self._out)

    async def list_conversations(
        self, scope: Scope, *, limit: int = 50, before: datetime | None = None
    ) -> list[Conversation]:
        """Most recently updated first; ``before`` keeps those updated strictly earlier.

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_scope(scope)
        check_limit(limit)
        conversations = self._tables.conversations
        query = (
            select(conversations)
            .where(_scope_is(conversations.c.scope, key))
            .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(conversations.c.updated_at < to_utc(before))
        async with self._read("list conversations") as conn:
            result = await conn.execute(query)
            return [_conversation(row, scope, self._out) for row in result.mappings()]

    async def update_conversation(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Conversation | None:
        """Set the title and/or replace the metadata (None leaves a field as it is).

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        values: dict[str, Any] = {"updated_at": self._clock.now()}
        if title is not None:
            values["title"] = escape(title)
        if metadata is not None:
            values["metadata"] = self._in(json_copy(dict(metadata), "metadata"))
        conversations = self._tables.conversations
        async with self._write(f"update conversation {conversation_id!r}") as conn:
            result = await conn.execute(
                update(conversations)
                .where(
                    conversations.c.id == conversation_id,
                    _scope_is(conversations.c.scope, key),
                )
                .values(**values)
                .returning(*conversations.c)
            )
            row = result.mappings().first()
        return None if row is None else _conversation(row, scope, self._out)

    async def delete_conversation(self, scope: Scope, conversation_id: str) -> bool:
        """Delete the conversation; its state and display messages go with it (cascade).

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        conversations = self._tables.conversations
        async with self._write(f"delete conversation {conversation_id!r}") as conn:
            result = await conn.execute(
                sql_delete(conversations).where(
                    conversations.c.id == conversation_id,
                    _scope_is(conversations.c.scope, key),
                )
            )
            return result.rowcount == 1

    # -- FilePersistence ---------------------------------------------------------------------

    async def load_files(self, scope: Scope, conversation_id: str) -> dict[str, str]:
        """The conversation's files by path; ``{}`` when none, or in another scope.

        Raises:
            StateError: a stored file is not UTF-8 text.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        files = self._tables.files
        query = self._files_of(select(files.c.path, files.c.content), key, conversation_id)
        async with self._read(f"load the files of conversation {conversation_id!r}") as conn:
            rows = (await conn.execute(query)).all()
        return {path: _text(content, path, conversation_id) for path, content in rows}

    async def list_files(self, scope: Scope, conversation_id: str) -> dict[str, FileInfo]:
        """Each file's size and time, without its content (a :class:`PersistedFileStore`
        over this store loads lazily); ``{}`` when none, or in another scope.

        Raises:
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        files = self._tables.files
        query = self._files_of(
            select(files.c.path, func.length(files.c.content), files.c.updated_at),
            key,
            conversation_id,
        )
        async with self._read(f"list the files of conversation {conversation_id!r}") as conn:
            rows = (await conn.execute(query)).all()
        return {
            path: FileInfo(
                path=path, size=size, modified=_epoch(updated), mime_type=guess_mime_type(path)
            )
            for path, size, updated in rows
        }

    async def load_file(self, scope: Scope, conversation_id: str, path: str) -> str | None:
        """One file's content; None when it does not exist (or is in another scope).

        Raises:
            StateError: the stored file is not UTF-8 text.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        files = self._tables.files
        query = self._files_of(select(files.c.content), key, conversation_id).where(
            files.c.path == path
        )
        async with self._read(f"load {path} of conversation {conversation_id!r}") as conn:
            content = (await conn.execute(query)).scalar_one_or_none()
        return None if content is None else _text(content, path, conversation_id)

    def _files_of(self, query: Any, key: str | None, conversation_id: str) -> Any:
        """``query`` over the files of ``conversation_id`` in the scope whose key is ``key``."""
        files, conversations = self._tables.files, self._tables.conversations
        return query.join(conversations, conversations.c.id == files.c.conversation_id).where(
            files.c.conversation_id == conversation_id,
            _scope_is(conversations.c.scope, key),
        )

    async def save_files(
        self,
        scope: Scope,
        conversation_id: str,
        changes: Mapping[str, str | None],
        *,
        lease_token: int | None = None,
    ) -> None:
        """Apply ``changes`` in one transaction (None deletes a path); only their rows are
        written. Creates the conversation if new (unless written under ``lease_token``, fenced
        as :meth:`update_tool_call_status` is), and leaves its ``updated_at`` alone.

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: the writer lost its lease, or the conversation was deleted; nothing
                was written.
            ValueError: a path is not a normalised virtual path, or a content is not text.
            PersistenceFailed: the database failed; nothing was written.
        """
        key = check_target(scope, conversation_id)
        encoded = check_file_changes(changes)
        if not encoded:
            return
        files = self._tables.files
        async with self._write(f"save the files of conversation {conversation_id!r}") as conn:
            now = self._clock.now()
            # The conversation row's lock orders this save with the conversation's others (and
            # with its deletion and lease takeovers), and refuses another tenant's conversation.
            await self._lock_for_write(conn, key, conversation_id, lease_token, {}, now)
            await conn.execute(
                sql_delete(files).where(
                    files.c.conversation_id == conversation_id, files.c.path.in_(list(encoded))
                )
            )
            rows = [
                {
                    "conversation_id": conversation_id,
                    "path": path,
                    "content": content,
                    "updated_at": now,
                }
                for path, content in encoded.items()
                if content is not None
            ]
            if rows:
                await conn.execute(insert(files), rows)


def _text(content: Any, path: str, conversation_id: str) -> str:
    try:
        return bytes(content).decode("utf-8")
    except UnicodeDecodeError:
        raise StateError(
            f"the stored file {path} of conversation {conversation_id!r} is not UTF-8 "
            "text; delete its row or fix it"
        ) from None


def _epoch(value: datetime) -> float:
    # SQLite gives the stored UTC time back without its zone.
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


#: The stores unpickled in this process, by (url, prefix): one engine per database.
_SHARED: dict[tuple[str, str], SqlPersistence] = {}


def _shared_store(url: str, table_prefix: str, create_tables: bool) -> SqlPersistence:
    store = _SHARED.get((url, table_prefix))
    if store is None:
        store = SqlPersistence(url, table_prefix=table_prefix, create_tables=create_tables)
        _SHARED[url, table_prefix] = store
    return store
