"""A save of an agent's state, once, over two ways of running its statements.

A save is on every turn's path, so how its statements run matters more than anywhere else in
the store. The decisions (lock or create the conversation, fence by the lease, skip a stale
snapshot, write a delta or everything) are made once, by :func:`save`, over a small set of
statements (:class:`SaveStatements`) with two implementations:

* :class:`CoreStatements`: SQLAlchemy Core on a connection, for PostgreSQL and in-memory or
  URI SQLite databases; and the conversation lock every other write of the store takes.
* :class:`SqliteSaver`: fixed SQL text through the ``sqlite3`` driver, on one connection of the
  store's synchronous twin engine, for SQLite files. Through Core, building, caching, compiling
  and processing five statements cost about 1.3 ms of CPU per save; through the driver the same
  transaction costs about 30 µs (``docs/benchmarks.md``, W1). Values go through the dialect's
  own type processors, so the rows are exactly those Core would write, and everything else
  (reads included) still goes through SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    PoolProxiedConnection,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy import delete as sql_delete

from sagents._errors import ConversationNotFound, PersistenceFailed, StateError
from sagents.persistence._common import encode_messages, is_delta, to_utc
from sagents.persistence._leases import LeaseRow, fence
from sagents.persistence._protocols import StateSnapshot
from sagents.persistence.sql._models import SqlTables

__all__ = [
    "CoreStatements",
    "SaveStatements",
    "SqliteSaver",
    "lock_conversation",
    "not_found",
    "save",
]


def not_found(conversation_id: str) -> ConversationNotFound:
    """The error for a conversation that does not exist in the caller's scope."""
    return ConversationNotFound(
        f"no conversation {conversation_id!r} in this scope; use a new conversation id"
    )


class Stored(NamedTuple):
    """What a save reads first: the stored version and message count (None: no state yet),
    and the conversation's lease."""

    version: int | None
    message_count: int
    lease: LeaseRow | None


class SaveStatements(Protocol):
    """The statements of a save, inside the caller's transaction."""

    def touch(self, key: str | None, conversation_id: str, values: dict[str, Any]) -> bool:
        """Set ``values`` on the conversation row of the scope whose key is ``key`` (its
        lock); False if absent."""
        ...

    def owner(self, conversation_id: str) -> tuple[bool, str | None]:
        """Whether the conversation exists in any scope, and its scope's key."""
        ...

    def create(self, values: dict[str, Any]) -> bool:
        """Insert the conversation row unless it exists; False if it did."""
        ...

    def stored(self, conversation_id: str) -> Stored:
        """The stored version, message count and lease of an existing conversation."""
        ...

    def write_head(self, conversation_id: str, values: dict[str, Any], *, first: bool) -> None:
        """Insert (``first``) or update the state row."""
        ...

    def delete_messages(self, conversation_id: str, start: int) -> None:
        """Delete the message rows from position ``start`` on."""
        ...

    def insert_messages(self, conversation_id: str, start: int, rows: Sequence[Any]) -> None:
        """Insert ``rows`` at positions ``start``, ``start + 1``..."""
        ...


def lock_conversation(
    statements: SaveStatements,
    key: str | None,
    conversation_id: str,
    touch: dict[str, Any],
    now: datetime,
    *,
    create: bool = True,
) -> bool:
    """Lock the conversation row, creating it in the scope whose key
    (:func:`~sagents.persistence.scope_key`) is ``key`` if it does not exist and ``create``
    allows; False when it does not exist (and was not created).

    ``touch`` holds the columns to set (``updated_at``...); the UPDATE that sets them is
    what takes the lock, so the common case costs one statement.

    Raises:
        ConversationNotFound: it exists in another scope.
        PersistenceFailed: it kept appearing and disappearing (concurrent creates and deletes).
    """
    for _ in range(3):
        if statements.touch(key, conversation_id, touch):
            return True
        exists, owner = statements.owner(conversation_id)
        if exists:
            if owner != key:
                raise not_found(conversation_id)
            # Ours, but created by a transaction that committed after our UPDATE looked
            # (PostgreSQL, read committed): the next UPDATE sees and locks it.
            continue
        if not create:
            return False
        values = {
            "id": conversation_id,
            "scope": key,
            "title": None,
            "metadata": {},
            "interrupted": False,
            "created_at": now,
            "updated_at": now,
            **touch,
        }
        if statements.create(values):
            return True
        # Created concurrently by another transaction, now committed: lock it (or refuse).
    raise PersistenceFailed(
        f"conversation {conversation_id!r} kept appearing and disappearing; retry the save"
    )


def save(
    statements: SaveStatements,
    key: str | None,
    conversation_id: str,
    snapshot: StateSnapshot,
    head: Any,
    now: datetime,
    encode: Callable[[Any], Any],
) -> bool:
    """The statements of a save, in the caller's transaction; False when a newer version is
    stored (the caller must roll back: nothing is written, not even the conversation's touch).

    ``key`` is the key of the writer's scope, ``head`` the encoded head, ``encode`` what
    message rows go through (escaping).

    Raises:
        ConversationNotFound: the conversation belongs to another scope.
        StateConflict: the writer lost its lease, or the conversation was deleted.
    """
    state = snapshot.state
    token = snapshot.lease_token
    touch = {"updated_at": now, "interrupted": state.interrupt is not None}
    # With a lease, the conversation exists since the lease was taken: a missing row was
    # deleted meanwhile, and a save must not bring it back.
    exists = lock_conversation(statements, key, conversation_id, touch, now, create=token is None)
    stored = statements.stored(conversation_id) if exists else Stored(None, 0, None)
    fence(conversation_id, stored.lease, token, now, exists=exists)
    if stored.version is not None and stored.version >= snapshot.version:
        return False
    values = {
        "version": snapshot.version,
        "head": head,
        "message_count": len(state.messages),
        "updated_at": now,
    }
    start = 0
    if stored.version is None:
        statements.write_head(conversation_id, {**values, "created_at": now}, first=True)
    else:
        statements.write_head(conversation_id, values, first=False)
        if is_delta(snapshot, stored.version, stored.message_count):
            start = snapshot.unchanged_prefix
        if stored.message_count > start:
            statements.delete_messages(conversation_id, start)
    rows = encode(encode_messages(state, start))
    if rows:
        statements.insert_messages(conversation_id, start, rows)
    return True


# -- SQLAlchemy Core ------------------------------------------------------------------------


class CoreStatements:
    """:class:`SaveStatements` through SQLAlchemy Core on ``conn``."""

    __slots__ = ("_conn", "_insert_if_absent", "_tables")

    def __init__(
        self, conn: Connection, tables: SqlTables, insert_if_absent: Callable[[Table], Any]
    ) -> None:
        self._conn = conn
        self._tables = tables
        self._insert_if_absent = insert_if_absent

    def touch(self, key: str | None, conversation_id: str, values: dict[str, Any]) -> bool:
        conversations = self._tables.conversations
        scope_is = conversations.c.scope.is_(None) if key is None else conversations.c.scope == key
        updated = self._conn.execute(
            update(conversations)
            .where(conversations.c.id == conversation_id, scope_is)
            # With nothing to set, the id set to itself: a lock that changes nothing.
            .values(**(values or {"id": conversations.c.id}))
        )
        return bool(updated.rowcount == 1)

    def owner(self, conversation_id: str) -> tuple[bool, str | None]:
        conversations = self._tables.conversations
        row = self._conn.execute(
            select(conversations.c.scope).where(conversations.c.id == conversation_id)
        ).first()
        return (False, None) if row is None else (True, row.scope)

    def create(self, values: dict[str, Any]) -> bool:
        table = self._tables.conversations
        created = self._conn.execute(self._insert_if_absent(table).values(**values))
        return bool(created.rowcount == 1)

    def stored(self, conversation_id: str) -> Stored:
        tables = self._tables
        states, leases, conversations = tables.agent_states, tables.leases, tables.conversations
        # The stored version and the lease in one statement (a save is on every turn's path).
        found = self._conn.execute(
            select(
                states.c.version,
                states.c.message_count,
                leases.c.owner,
                leases.c.token,
                leases.c.expires_at,
                leases.c.released,
            )
            .select_from(
                conversations.outerjoin(
                    states, states.c.conversation_id == conversations.c.id
                ).outerjoin(leases, leases.c.conversation_id == conversations.c.id)
            )
            .where(conversations.c.id == conversation_id)
        ).first()
        if found is None:
            return Stored(None, 0, None)
        return Stored(found.version, found.message_count or 0, _lease(*found[2:]))

    def write_head(self, conversation_id: str, values: dict[str, Any], *, first: bool) -> None:
        states = self._tables.agent_states
        if first:
            self._conn.execute(insert(states).values(conversation_id=conversation_id, **values))
        else:
            self._conn.execute(
                update(states).where(states.c.conversation_id == conversation_id).values(**values)
            )

    def delete_messages(self, conversation_id: str, start: int) -> None:
        rows = self._tables.agent_messages
        self._conn.execute(
            sql_delete(rows).where(
                rows.c.conversation_id == conversation_id, rows.c.position >= start
            )
        )

    def insert_messages(self, conversation_id: str, start: int, rows: Sequence[Any]) -> None:
        self._conn.execute(
            insert(self._tables.agent_messages),
            [
                {"conversation_id": conversation_id, "position": start + i, "message": m}
                for i, m in enumerate(rows)
            ],
        )


def _lease(
    owner: str | None, token: int | None, expires_at: datetime | None, released: bool | None
) -> LeaseRow | None:
    if owner is None or token is None or expires_at is None:
        return None
    return LeaseRow(
        owner=owner, token=token, expires_at=to_utc(expires_at), released=bool(released)
    )


# -- the sqlite3 driver ---------------------------------------------------------------------


class SqliteSaver:
    """Saves on a SQLite file through the driver, on one connection of ``twin`` kept for the
    store's life (its writes are serialised by the store's lock, one thread at a time).

    The connection comes from the engine's pool, so its ``connect`` event set it up (WAL,
    ``synchronous``, foreign keys, autocommit mode: transactions are begun here).
    """

    __slots__ = ("_connection", "_dialect", "_processors", "_sql", "_twin")

    def __init__(self, twin: Engine, tables: SqlTables) -> None:
        self._twin = twin
        self._dialect = twin.dialect
        self._connection: PoolProxiedConnection | None = None
        conversations, states = tables.conversations, tables.agent_states
        messages, leases = tables.agent_messages, tables.leases
        to_json = self._bind(states.c.head)

        def json_or_refuse(value: Any) -> Any:
            try:
                return to_json(value)
            except (TypeError, ValueError) as exc:
                raise _NotJson(str(exc)) from exc

        self._processors: dict[str, Callable[[Any], Any]] = {
            "json": json_or_refuse,
            "time": self._bind(states.c.updated_at),
            "bool": self._bind(conversations.c.interrupted),
        }
        expires_at = self._result(leases.c.expires_at)
        released = self._result(leases.c.released)
        self._processors["expires_at"] = expires_at
        self._processors["released"] = released
        c, s, m, le = conversations.name, states.name, messages.name, leases.name
        self._sql = {
            "touch": f"UPDATE {c} SET updated_at = ?, interrupted = ? WHERE id = ? AND scope IS ?",
            "owner": f"SELECT scope FROM {c} WHERE id = ?",
            "create": (
                f"INSERT INTO {c} (id, scope, title, metadata, interrupted, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            ),
            "stored": (
                f"SELECT s.version, s.message_count, l.owner, l.token, l.expires_at, l.released "
                f"FROM {c} AS c LEFT OUTER JOIN {s} AS s ON s.conversation_id = c.id "
                f"LEFT OUTER JOIN {le} AS l ON l.conversation_id = c.id WHERE c.id = ?"
            ),
            "insert_head": (
                f"INSERT INTO {s} (conversation_id, version, head, message_count, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            "update_head": (
                f"UPDATE {s} SET version = ?, head = ?, message_count = ?, updated_at = ? "
                "WHERE conversation_id = ?"
            ),
            "delete_messages": f"DELETE FROM {m} WHERE conversation_id = ? AND position >= ?",
            "insert_messages": (
                f"INSERT INTO {m} (conversation_id, position, message) VALUES (?, ?, ?)"
            ),
        }

    def _bind(self, column: Column[Any]) -> Callable[[Any], Any]:
        processor = column.type.dialect_impl(self._dialect).bind_processor(self._dialect)
        return processor or _same

    def _result(self, column: Column[Any]) -> Callable[[Any], Any]:
        impl = column.type.dialect_impl(self._dialect)
        return impl.result_processor(self._dialect, None) or _same

    def save(
        self,
        key: str | None,
        conversation_id: str,
        snapshot: StateSnapshot,
        head: Any,
        now: datetime,
    ) -> bool:
        """:func:`save` in its own ``BEGIN IMMEDIATE`` transaction (committed unless stale).

        Raises:
            StateError: the state holds something that is not JSON (nothing was written).
            PersistenceFailed: the database failed (nothing was written).
            ConversationNotFound, StateConflict: as :func:`save`.
        """
        connection = self._connection
        if connection is None:
            connection = self._connection = self._twin.raw_connection()
        driver = connection.driver_connection
        cursor = driver.cursor()  # type: ignore[union-attr]
        statements = _DriverStatements(cursor, self._sql, self._processors)
        try:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    saved = save(statements, key, conversation_id, snapshot, head, now, _same)
                except BaseException:
                    if driver.in_transaction:  # type: ignore[union-attr]
                        cursor.execute("ROLLBACK")  # (some failures rolled it back already)
                    raise
                cursor.execute("COMMIT" if saved else "ROLLBACK")
                return saved
            finally:
                cursor.close()
        except _NotJson as exc:
            raise StateError(
                f"could not save the state of conversation {conversation_id!r}: a value cannot "
                f"be stored as JSON: {exc}"
            ) from exc
        except sqlite3.Error as exc:
            self.close(invalidate=True)  # a fresh connection for the next save
            raise PersistenceFailed(
                f"could not save the state of conversation {conversation_id!r}: "
                f"{type(exc).__name__}: {exc}. Check that the database is writable and "
                "migrated ('sagents db upgrade'), then retry"
            ) from exc

    def close(self, *, invalidate: bool = False) -> None:
        """Give the connection back to the pool (or, after a failure, discard it)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if invalidate:
            connection.invalidate()
        else:
            connection.close()


class _NotJson(Exception):
    """A value of the state that the JSON serializer refused."""


class _DriverStatements:
    """:class:`SaveStatements` as fixed SQL text on a ``sqlite3`` cursor."""

    __slots__ = ("_cursor", "_json", "_p", "_sql", "_time")

    def __init__(
        self, cursor: Any, sql: dict[str, str], processors: dict[str, Callable[[Any], Any]]
    ) -> None:
        self._cursor = cursor
        self._sql = sql
        self._p = processors
        self._json = processors["json"]
        self._time = processors["time"]

    def touch(self, key: str | None, conversation_id: str, values: dict[str, Any]) -> bool:
        self._cursor.execute(
            self._sql["touch"],
            (
                self._time(values["updated_at"]),
                self._p["bool"](values["interrupted"]),
                conversation_id,
                key,
            ),
        )
        return bool(self._cursor.rowcount == 1)

    def owner(self, conversation_id: str) -> tuple[bool, str | None]:
        row = self._cursor.execute(self._sql["owner"], (conversation_id,)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def create(self, values: dict[str, Any]) -> bool:
        time = self._time
        self._cursor.execute(
            self._sql["create"],
            (
                values["id"],
                values["scope"],
                values["title"],
                self._json(values["metadata"]),
                self._p["bool"](values["interrupted"]),
                time(values["created_at"]),
                time(values["updated_at"]),
            ),
        )
        return bool(self._cursor.rowcount == 1)

    def stored(self, conversation_id: str) -> Stored:
        row = self._cursor.execute(self._sql["stored"], (conversation_id,)).fetchone()
        if row is None:
            return Stored(None, 0, None)
        version, count, owner, token, expires_at, released = row
        if owner is not None:
            expires_at = self._p["expires_at"](expires_at)
            released = self._p["released"](released)
        return Stored(version, count or 0, _lease(owner, token, expires_at, released))

    def write_head(self, conversation_id: str, values: dict[str, Any], *, first: bool) -> None:
        head, time = self._json(values["head"]), self._time
        if first:
            parameters: tuple[Any, ...] = (
                conversation_id,
                values["version"],
                head,
                values["message_count"],
                time(values["created_at"]),
                time(values["updated_at"]),
            )
            self._cursor.execute(self._sql["insert_head"], parameters)
        else:
            parameters = (
                values["version"],
                head,
                values["message_count"],
                time(values["updated_at"]),
                conversation_id,
            )
            self._cursor.execute(self._sql["update_head"], parameters)

    def delete_messages(self, conversation_id: str, start: int) -> None:
        self._cursor.execute(self._sql["delete_messages"], (conversation_id, start))

    def insert_messages(self, conversation_id: str, start: int, rows: Sequence[Any]) -> None:
        encode = self._json
        self._cursor.executemany(
            self._sql["insert_messages"],
            [(conversation_id, start + i, encode(row)) for i, row in enumerate(rows)],
        )


def _same(value: Any) -> Any:
    return value
