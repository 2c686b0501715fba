"""The files of ``SqlPersistence``: ``FilePersistence`` and ``FileIndexPersistence``.

A conversation's files are rows of the ``files`` table keyed by path, their contents UTF-8
bytes (PostgreSQL's text cannot hold NUL). Reads join the conversation row to filter on the
caller's scope; listing reads sizes and times only (``length`` of the content), so a lazy
store opens without loading contents. A save writes only the changed paths, in one
transaction that first takes the conversation row's lock — which orders it with the
conversation's other writes, refuses another tenant's conversation, and fences it by the
writer's lease token — and leaves the conversation's ``updated_at`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, insert, select

from sagents._errors import StateError
from sagents._files import FileInfo, guess_mime_type
from sagents.persistence._common import check_target
from sagents.persistence._files import check_file_changes
from sagents.persistence._protocols import Scope
from sagents.persistence.sql._part import StorePart, scope_is

__all__ = ["SqlFiles"]


class SqlFiles(StorePart):
    """``FilePersistence`` and ``FileIndexPersistence`` in SQL (a part of ``SqlPersistence``)."""

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
            scope_is(conversations.c.scope, key),
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
