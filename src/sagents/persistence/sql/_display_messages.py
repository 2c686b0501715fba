"""The display messages of ``SqlPersistence``: ``DisplayMessagePersistence`` and
``DisplayReconciliation``.

What the user sees, one row per display message, ordered by a per-conversation ``sequence``
that an append assigns after the last one, under the conversation row's lock (so two appends
never share a sequence). Appends, reconciliations and the writes made under a lease token take
that lock first, through :meth:`~sagents.persistence.sql._part.StorePart._lock_for_write`, which
also fences them by the token: a writer that lost its lease changes none of the new owner's rows,
and a deleted conversation is not created again. A tool call's status and decision are changed
on its latest ``tool_call`` row, locked (``FOR UPDATE`` on PostgreSQL) before its metadata is
merged.
Reconciliation, after an unclean end, deletes the rows ahead of the stored state and settles the
tool calls left ``executing``, in one transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.sql import ColumnElement

from sagents.persistence._common import (
    check_display_messages,
    check_id,
    check_limit,
    check_status,
    check_target,
    json_copy,
    new_id,
    to_utc,
)
from sagents.persistence._protocols import DisplayMessage, Scope, ToolCallStatus
from sagents.persistence.sql._part import StorePart, same, scope_is

__all__ = ["SqlDisplayMessages"]


def _display(row: RowMapping, text: Callable[[Any], Any] = same) -> DisplayMessage:
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


class SqlDisplayMessages(StorePart):
    """``DisplayMessagePersistence`` and ``DisplayReconciliation`` in SQL (a part of
    ``SqlPersistence``)."""

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
                scope_is(conversations.c.scope, key),
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
                            scope_is(conversations.c.scope, key),
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
