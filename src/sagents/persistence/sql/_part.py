"""What every part of ``SqlPersistence`` shares: its transactions and the conversation lock.

``SqlPersistence`` is assembled from one part per protocol it implements (conversations, agent
states, display messages, files, leases), each a mixin class over :class:`StorePart`. The base
names what the parts need from the assembled store — the tables, the dialect, the clock, the
text escaping, and its read and write transactions, which ``_store`` provides — so that each
part type-checks on its own, and it holds what more than one part runs inside a transaction:

* :meth:`StorePart._lock_for_write`, the lock every write of a conversation's rows takes first,
  which also fences the write by the writer's lease token;
* the conversation lock and lease row it is built from (lease acquisitions take them too), and
  the dialect's insert-if-absent (conversation creation too).

Mixins over one base rather than separate objects the store delegates to: the public methods
stay the store's own, with their signatures and docstrings written once, next to their SQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert

from sagents.persistence._common import MonotonicClock, to_utc
from sagents.persistence._leases import LeaseRow, fence
from sagents.persistence.sql._models import SqlTables
from sagents.persistence.sql._save import CoreStatements, lock_conversation

__all__ = ["StorePart", "same", "scope_is"]


def scope_is(column: ColumnElement[Any], key: str | None) -> ColumnElement[bool]:
    """``column`` holds the scope key ``key`` (``IS NULL`` for the None scope)."""
    return column.is_(None) if key is None else column == key


def same(value: Any) -> Any:
    """The identity: the text conversion of a database that stores every text as it is."""
    return value


class StorePart:
    """A part of ``SqlPersistence``: what it needs from the store, and the locks it shares.

    The attributes are set, and the transactions provided, by ``SqlPersistence``.
    """

    #: The tables of the store's prefix.
    _tables: SqlTables
    #: The engine's dialect name (``sqlite``, ``postgresql``...).
    _dialect: str
    #: The time every write stamps (never going backwards).
    _clock: MonotonicClock
    #: What JSON values go through on the way in and out (escaping on PostgreSQL).
    _in: Callable[[Any], Any]
    _out: Callable[[Any], Any]

    def _write(self, action: str) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (errors translated; ``action`` completes "could not ...")."""
        raise NotImplementedError

    def _read(self, action: str) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A read transaction that sees one snapshot of the database."""
        raise NotImplementedError

    async def _ready(self) -> None:
        """Create the tables first, when the store was asked to."""
        raise NotImplementedError

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
