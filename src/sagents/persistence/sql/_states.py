"""The agent states of ``SqlPersistence``: :class:`~sagents.persistence.AgentPersistence`.

A save is one transaction whose decisions ``_save`` makes (lock or create the conversation,
fence by the lease, skip a stale snapshot, write a delta); this part picks how it runs — on a
SQLite file whole in one worker thread through the driver (``SqliteSaver``), elsewhere in one
greenlet run through SQLAlchemy Core — and turns "a newer version is stored" into a rollback
and ``False``. A load reads the head and the message rows in one transaction that sees one
snapshot, and decodes the rows in one ``loads`` of the whole array.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import Connection, Text, cast, select

from sagents._errors import StateError
from sagents.persistence._common import check_target, decode_state, encode_head, loads
from sagents.persistence._protocols import Scope, StateSnapshot, StoredState
from sagents.persistence.sql._part import StorePart, scope_is
from sagents.persistence.sql._save import CoreStatements, SqliteSaver, save

__all__ = ["SqlAgentStates"]


class _Stale(Exception):
    """Raised inside a save's transaction to roll it back: a newer version is stored."""


class SqlAgentStates(StorePart):
    """:class:`~sagents.persistence.AgentPersistence` in SQL (a part of ``SqlPersistence``)."""

    #: Runs the saves on a SQLite file (None elsewhere: they go through Core).
    _saver: SqliteSaver | None
    #: Queues this store's writers on SQLite (None elsewhere).
    _write_lock: asyncio.Lock | None

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
                        scope_is(conversations.c.scope, key),
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
