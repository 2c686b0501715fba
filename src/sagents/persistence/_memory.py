"""``MemoryPersistence``: the three persistence protocols in a dict, for tests and prototypes.

It is the reference for what the SQL adapter must do, and the contract tests run both against
the same expectations:

* **Scope**: every record remembers the key of the scope that created it
  (:func:`~sagents.persistence.scope_key`, as the SQL adapter stores it, so that both tell
  apart exactly the same scopes); a caller from another scope sees exactly what it would see
  for an unknown id (None, ``[]``, False), and a write to it raises
  :class:`ConversationNotFound` rather than touching another tenant's data.
* **Versions**: a snapshot whose version is not newer than the stored one is ignored.
* **Deltas**: messages are kept as a list of encoded rows plus a small head (todos, metadata,
  interrupt), and a snapshot built on the stored version replaces only the rows after its
  unchanged prefix, exactly as the SQL adapter does with table rows.
* **JSON in, JSON out**: everything stored goes through a JSON round trip, so a state the SQL
  adapter would refuse (a ``datetime`` in the metadata, a NaN) is refused here too, and callers
  can never mutate stored data through an object they passed in or got back.

Every method runs without awaiting anything, so each one is atomic on the event loop: no lock is
needed, and concurrent appends get consecutive sequences for free.

What both adapters share (checks, the head/rows encoding of a state, the clock) is in
``_common.py``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sagents._errors import (
    ConversationExists,
    ConversationNotFound,
)
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
    encode_messages,
    is_ahead,
    is_delta,
    json_copy,
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

__all__ = ["MemoryPersistence"]

# -- the in-memory adapter ---------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Record:
    """One conversation with its state and display messages (mutable, never handed out)."""

    key: str | None  # the scope's key
    title: str | None
    metadata: dict[str, Any]
    interrupted: bool
    created_at: datetime
    updated_at: datetime
    version: int | None = None
    head: dict[str, Any] | None = None
    messages: list[Any] = field(default_factory=list)
    display: list[DisplayMessage] = field(default_factory=list)
    lease: LeaseRow | None = None
    files: dict[str, str] = field(default_factory=dict)

    def conversation(self, conversation_id: str, scope: Scope) -> Conversation:
        return Conversation(
            id=conversation_id,
            scope=scope,
            title=self.title,
            metadata=copy.deepcopy(self.metadata),
            interrupted=self.interrupted,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


def _copy_out(message: DisplayMessage) -> DisplayMessage:
    # DisplayMessage is frozen but its dicts are not: hand out copies.
    return dataclasses.replace(
        message, content=copy.deepcopy(message.content), metadata=copy.deepcopy(message.metadata)
    )


class MemoryPersistence:
    """Agent states, display messages and conversations in memory (lost when the process ends).

    Implements :class:`~sagents.persistence.AgentPersistence`,
    :class:`~sagents.persistence.DisplayMessagePersistence`,
    :class:`~sagents.persistence.ConversationStore` and
    :class:`~sagents.persistence.ConversationLeases` with the same semantics as
    :class:`sagents.persistence.sql.SqlPersistence` (leases matter here too: two runtimes of
    one process sharing this store get one owner per conversation).
    """

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._clock = MonotonicClock()

    async def aclose(self) -> None:
        """Nothing to release; present so both adapters are closed the same way."""

    # -- lookups -----------------------------------------------------------------------------

    def _find(self, key: str | None, conversation_id: str) -> _Record | None:
        record = self._records.get(conversation_id)
        if record is None or record.key != key:
            return None
        return record

    def _find_or_create(self, key: str | None, conversation_id: str) -> _Record:
        record = self._records.get(conversation_id)
        if record is None:
            now = self._clock.now()
            record = _Record(
                key=key,
                title=None,
                metadata={},
                interrupted=False,
                created_at=now,
                updated_at=now,
            )
            self._records[conversation_id] = record
        elif record.key != key:
            raise ConversationNotFound(
                f"no conversation {conversation_id!r} in this scope; use a new conversation id"
            )
        return record

    def _fence(self, key: str | None, conversation_id: str, lease_token: int | None) -> None:
        """Refuse a write made under ``lease_token`` unless its writer still holds that lease
        (see ``_leases.fence``); a missing conversation was deleted under the writer and is not
        created again. None: an unfenced write, nothing is checked.

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: the writer lost its lease, or the conversation was deleted.
        """
        if lease_token is None:
            return
        record = self._records.get(conversation_id)
        if record is not None and record.key != key:
            raise ConversationNotFound(
                f"no conversation {conversation_id!r} in this scope; use a new conversation id"
            )
        fence(
            conversation_id,
            None if record is None else record.lease,
            lease_token,
            self._clock.now(),
            exists=record is not None,
        )

    # -- AgentPersistence --------------------------------------------------------------------

    async def save_state(self, scope: Scope, conversation_id: str, snapshot: StateSnapshot) -> bool:
        """Store ``snapshot`` unless a newer version is stored (then return False).

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateError: the state holds something that is not JSON.
            ValueError: malformed scope or conversation id.
        """
        key = check_target(scope, conversation_id)
        existing = self._records.get(conversation_id)
        if existing is not None and existing.key != key:
            raise ConversationNotFound(
                f"no conversation {conversation_id!r} in this scope; use a new conversation id"
            )
        fence(
            conversation_id,
            None if existing is None else existing.lease,
            snapshot.lease_token,
            self._clock.now(),
            exists=existing is not None,
        )
        stored_version = None if existing is None else existing.version
        if stored_version is not None and stored_version >= snapshot.version:
            return False  # stale
        state = snapshot.state
        # Encode everything before touching the record, so a bad state changes nothing.
        head = json_copy(encode_head(state), "the state's todos, metadata or interrupt")
        if existing is not None and is_delta(snapshot, existing.version, len(existing.messages)):
            start = snapshot.unchanged_prefix
            kept = existing.messages[:start]
        else:
            start, kept = 0, []
        rows = json_copy(encode_messages(state, start), "a message")
        record = self._find_or_create(key, conversation_id)
        record.version = snapshot.version
        record.head = head
        record.messages = kept + rows
        record.interrupted = state.interrupt is not None
        record.updated_at = self._clock.now()
        return True

    async def load_state(self, scope: Scope, conversation_id: str) -> StoredState | None:
        """The stored state and its version; None when missing or in another scope."""
        key = check_target(scope, conversation_id)
        record = self._find(key, conversation_id)
        if record is None or record.head is None or record.version is None:
            return None
        # Messages may share nested dicts with the rows they were built from: copy the rows.
        state = decode_state(record.head, copy.deepcopy(record.messages))
        return StoredState(state=state, version=record.version)

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
        """Take the conversation's lease (see :class:`~sagents.persistence.ConversationLeases`).

        Raises:
            ConversationOwnedElsewhere: another owner holds a live lease.
            ConversationNotFound: in another scope, or missing and ``create`` is False.
        """
        key = check_target(scope, conversation_id)
        check_owner(owner)
        duration = check_ttl(ttl)
        record = self._find(key, conversation_id)
        if record is None:
            if not create or conversation_id in self._records:
                raise ConversationNotFound(
                    f"no conversation {conversation_id!r} in this scope; create it first"
                )
            record = self._find_or_create(key, conversation_id)
        was_recovered = recovered(record.lease)
        row = record.lease = take(record.lease, conversation_id, owner, duration, self._clock.now())
        return Lease(
            conversation_id=conversation_id,
            owner=owner,
            token=row.token,
            expires_at=row.expires_at,
            state_version=record.version,
            recovered=was_recovered,
        )

    async def renew_leases(self, owner: str, ttl: float) -> set[str]:
        """Extend every lease of ``owner``; the ids of the conversations it still holds."""
        check_owner(owner)
        expires_at = self._clock.now() + check_ttl(ttl)
        held: set[str] = set()
        for conversation_id, record in self._records.items():
            row = record.lease
            if row is not None and row.owner == owner and not row.released:
                record.lease = LeaseRow(owner=owner, token=row.token, expires_at=expires_at)
                held.add(conversation_id)
        return held

    async def expire_leases(self, owner: str) -> int:
        """Let every live lease of ``owner`` expire now, for an owner known to be gone (its
        process or node died): its conversations can then be taken over at once rather than
        after their ttl. Safe even if it still runs somewhere: its saves carry the old tokens
        and are refused (fencing). Returns how many leases expired."""
        check_owner(owner)
        now = self._clock.now()
        expired = 0
        for record in self._records.values():
            row = record.lease
            if row is not None and row.owner == owner and row.expires_at > now:
                record.lease = LeaseRow(owner=owner, token=row.token, expires_at=now)
                expired += 1
        return expired

    async def release_lease(self, scope: Scope, conversation_id: str, lease: Lease) -> None:
        """Let ``lease`` expire now if it is still the conversation's."""
        key = check_target(scope, conversation_id)
        record = self._find(key, conversation_id)
        row = None if record is None else record.lease
        if record is not None and row is not None and row.token == lease.token:
            record.lease = LeaseRow(
                owner=row.owner, token=row.token, expires_at=self._clock.now(), released=True
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
        (see :class:`~sagents.persistence.DisplayReconciliation`).

        Raises:
            StateConflict: made under ``lease_token``, and that lease is no longer the
                conversation's (or the conversation was deleted): nothing changes.
        """
        key = check_target(scope, conversation_id)
        self._fence(key, conversation_id, lease_token)
        record = self._find(key, conversation_id)
        if record is None:
            return []
        record.display = [
            row for row in record.display if not is_ahead(row.state_version, state_version)
        ]
        changed: list[DisplayMessage] = []
        for i, row in enumerate(record.display):
            if row.type == "tool_call" and row.status == "executing":
                status = tool_call_statuses.get(row.tool_call_id or "", "interrupted")
                record.display[i] = dataclasses.replace(row, status=status)
                changed.append(_copy_out(record.display[i]))
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
            ValueError: malformed ids, or a message names another conversation.
        """
        key = check_target(scope, conversation_id)
        check_display_messages(conversation_id, messages)
        if not messages:
            return []
        stored: list[DisplayMessage] = []
        for i, message in enumerate(messages):
            stored.append(
                dataclasses.replace(
                    message,
                    content=json_copy(message.content, f"messages[{i}].content"),
                    metadata=json_copy(message.metadata, f"messages[{i}].metadata"),
                )
            )
        self._fence(key, conversation_id, lease_token)
        record = self._find_or_create(key, conversation_id)
        now = self._clock.now()
        # Stored rows always have a sequence; ``or 0`` only narrows the type.
        last = (record.display[-1].sequence or 0) if record.display else 0
        saved = [
            dataclasses.replace(
                message,
                id=message.id or new_id(),
                sequence=last + 1 + i,
                created_at=now if message.created_at is None else to_utc(message.created_at),
            )
            for i, message in enumerate(stored)
        ]
        record.display.extend(saved)
        record.updated_at = now
        return [_copy_out(m) for m in saved]

    async def list_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        after_sequence: int | None = None,
        limit: int = 200,
    ) -> list[DisplayMessage]:
        """Up to ``limit`` messages with a sequence above ``after_sequence``, in order."""
        key = check_target(scope, conversation_id)
        check_limit(limit)
        record = self._find(key, conversation_id)
        if record is None:
            return []
        after = 0 if after_sequence is None else after_sequence
        page = [m for m in record.display if (m.sequence or 0) > after][:limit]
        return [_copy_out(m) for m in page]

    def _change_tool_call(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        status: str | None,
        metadata: Mapping[str, Any],
        lease_token: int | None,
    ) -> DisplayMessage | None:
        key = check_target(scope, conversation_id)
        check_id(tool_call_id, "tool_call_id")
        self._fence(key, conversation_id, lease_token)
        record = self._find(key, conversation_id)
        if record is None:
            return None
        display = record.display
        index = next(
            (
                i
                for i in range(len(display) - 1, -1, -1)
                if display[i].type == "tool_call" and display[i].tool_call_id == tool_call_id
            ),
            None,
        )
        if index is None:
            return None
        message = display[index]
        merged = json_copy({**message.metadata, **metadata}, "metadata")
        display[index] = dataclasses.replace(
            message, status=message.status if status is None else status, metadata=merged
        )
        return _copy_out(display[index])

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
                still the conversation's, as its state saves are, and a deleted conversation
                is never created again.

        Returns:
            The updated row, or None when this scope has no such tool call.

        Raises:
            StateConflict: the writer lost its lease, or the conversation was deleted.
            ConversationNotFound: written under ``lease_token`` to another scope's conversation.
        """
        check_status(status)
        return self._change_tool_call(
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
        ``lease_token`` as :meth:`update_tool_call_status` is)."""
        change = {"decision": dict(decision)}
        return self._change_tool_call(
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
        """
        conversation_id = new_id() if conversation_id is None else conversation_id
        key = check_target(scope, conversation_id)
        if conversation_id in self._records:
            raise ConversationExists(f"conversation {conversation_id!r} already exists")
        now = self._clock.now()
        record = _Record(
            key=key,
            title=title,
            metadata=json_copy(dict(metadata or {}), "metadata"),
            interrupted=False,
            created_at=now,
            updated_at=now,
        )
        self._records[conversation_id] = record
        return record.conversation(conversation_id, scope)

    async def get_conversation(self, scope: Scope, conversation_id: str) -> Conversation | None:
        """The conversation, or None when missing or in another scope."""
        key = check_target(scope, conversation_id)
        record = self._find(key, conversation_id)
        return None if record is None else record.conversation(conversation_id, scope)

    async def list_conversations(
        self, scope: Scope, *, limit: int = 50, before: datetime | None = None
    ) -> list[Conversation]:
        """Most recently updated first; ``before`` keeps those updated strictly earlier."""
        key = check_scope(scope)
        check_limit(limit)
        cutoff = None if before is None else to_utc(before)
        rows = [
            (record.updated_at, cid, record)
            for cid, record in self._records.items()
            if record.key == key and (cutoff is None or record.updated_at < cutoff)
        ]
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        return [record.conversation(cid, scope) for _, cid, record in rows[:limit]]

    async def update_conversation(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        lease_token: int | None = None,
    ) -> Conversation | None:
        """Set the title and/or replace the metadata (None leaves a field as it is); with
        ``lease_token``, fenced as the display writes are."""
        key = check_target(scope, conversation_id)
        self._fence(key, conversation_id, lease_token)
        record = self._find(key, conversation_id)
        if record is None:
            return None
        new_metadata = None if metadata is None else json_copy(dict(metadata), "metadata")
        if title is not None:
            record.title = title
        if new_metadata is not None:
            record.metadata = new_metadata
        record.updated_at = self._clock.now()
        return record.conversation(conversation_id, scope)

    async def delete_conversation(self, scope: Scope, conversation_id: str) -> bool:
        """Delete the conversation, its state and its display messages."""
        key = check_target(scope, conversation_id)
        if self._find(key, conversation_id) is None:
            return False
        del self._records[conversation_id]
        return True

    # -- FilePersistence ---------------------------------------------------------------------
    #
    # The files of a conversation are kept in its record: deleting the conversation deletes them.

    async def load_files(self, scope: Scope, conversation_id: str) -> dict[str, str]:
        """The conversation's files by path; ``{}`` when none, or in another scope."""
        key = check_target(scope, conversation_id)
        record = self._find(key, conversation_id)
        if record is None:
            return {}
        return dict(record.files)

    async def list_files(self, scope: Scope, conversation_id: str) -> dict[str, FileInfo]:
        """Each file's size, without its content (this store keeps no file times); ``{}`` when
        none, or in another scope."""
        key = check_target(scope, conversation_id)
        record = self._find(key, conversation_id)
        if record is None:
            return {}
        return {
            path: FileInfo(
                path=path,
                size=len(content.encode()),
                modified=None,
                mime_type=guess_mime_type(path),
            )
            for path, content in record.files.items()
        }

    async def load_file(self, scope: Scope, conversation_id: str, path: str) -> str | None:
        """One file's content; None when it does not exist (or is in another scope)."""
        key = check_target(scope, conversation_id)
        record = self._find(key, conversation_id)
        return None if record is None else record.files.get(path)

    async def save_files(
        self,
        scope: Scope,
        conversation_id: str,
        changes: Mapping[str, str | None],
        *,
        lease_token: int | None = None,
    ) -> None:
        """Apply ``changes`` (None deletes a path); creates the conversation if new, unless
        written under ``lease_token`` (fenced as :meth:`update_tool_call_status` is).

        The conversation's ``updated_at`` is left alone: files change during a run, whose
        state save moves the conversation up the list anyway.

        Raises:
            ConversationNotFound: the conversation belongs to another scope.
            StateConflict: the writer lost its lease, or the conversation was deleted; nothing
                was written.
            ValueError: a path is not a normalised virtual path, or a content is not text.
        """
        key = check_target(scope, conversation_id)
        check_file_changes(changes)
        if not changes:
            return
        self._fence(key, conversation_id, lease_token)
        files = self._find_or_create(key, conversation_id).files
        for path, content in changes.items():
            if content is None:
                files.pop(path, None)
            else:
                files[path] = content
