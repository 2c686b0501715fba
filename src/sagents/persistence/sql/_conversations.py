"""The conversation rows of ``SqlPersistence``: :class:`~sagents.persistence.ConversationStore`.

Create, read, list, rename and delete conversations, each statement filtered on the caller's
scope key. Ids are global: creating an id another scope holds fails as ``ConversationExists``
(an insert-if-absent, so two racing creates cannot both succeed), while every other call from
the wrong scope finds nothing. Deleting a conversation deletes everything hanging off it (its
state, display messages, files and lease) by the schema's cascades, in one statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, select, update
from sqlalchemy import delete as sql_delete

from sagents._errors import ConversationExists
from sagents.persistence._common import (
    check_limit,
    check_scope,
    check_target,
    json_copy,
    new_id,
    to_utc,
)
from sagents.persistence._protocols import Conversation, Scope
from sagents.persistence.sql._part import StorePart, scope_is
from sagents.persistence.sql._text import escape, unescape

__all__ = ["SqlConversations"]


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


class SqlConversations(StorePart):
    """:class:`~sagents.persistence.ConversationStore` in SQL (a part of ``SqlPersistence``)."""

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
                    scope_is(conversations.c.scope, key),
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
            .where(scope_is(conversations.c.scope, key))
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
        lease_token: int | None = None,
    ) -> Conversation | None:
        """Set the title and/or replace the metadata (None leaves a field as it is). With
        ``lease_token`` (an agent server's write), fenced as its display writes are.

        Raises:
            StateConflict: written under ``lease_token`` by a writer that lost its lease, or
                to a deleted conversation.
            PersistenceFailed: the database failed.
        """
        key = check_target(scope, conversation_id)
        now = self._clock.now()
        values: dict[str, Any] = {"updated_at": now}
        if title is not None:
            values["title"] = escape(title)
        if metadata is not None:
            values["metadata"] = self._in(json_copy(dict(metadata), "metadata"))
        conversations = self._tables.conversations
        async with self._write(f"update conversation {conversation_id!r}") as conn:
            if lease_token is not None:
                await self._lock_for_write(
                    conn, key, conversation_id, lease_token, {}, now, create=False
                )
            result = await conn.execute(
                update(conversations)
                .where(
                    conversations.c.id == conversation_id,
                    scope_is(conversations.c.scope, key),
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
                    scope_is(conversations.c.scope, key),
                )
            )
            return result.rowcount == 1
