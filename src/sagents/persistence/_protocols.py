"""What persistence adapters implement.

Two protocols, kept apart because they store different things:

* :class:`AgentPersistence` stores what the *model* sees: the agent's :class:`~sagents.State`.
  Saves are **deltas**: a :class:`StateSnapshot` says how many leading messages are unchanged
  since the snapshot it builds on, so an adapter writes only what changed (messages are
  append-only rows; todos, metadata and the interrupt form a small head). A 1,000-message
  conversation therefore costs one new row per new message, not a copy of its history per step.
* :class:`DisplayMessagePersistence` stores what the *user* sees: display messages (a user
  message, an assistant message, a tool call and its status, a tool result, ...), ordered by a
  per-conversation sequence.

Every call takes the caller's ``scope``: the tenant, as any hashable value the application uses
for one (a user id, a tuple such as ``("acme", 42)``, an Enum member, a frozen dataclass), or
None for a single-tenant app. Adapters receive the value itself, so an application's own adapter
may use it (to authorise, say); an adapter that stores text stores
:func:`~sagents.persistence.scope_key` of it, which is the same in every process and tells
apart exactly the scopes that are different tenants. An adapter filters every query by it: a
wrong-scope caller gets "not found", never another tenant's data. The scope is runtime data of
the caller and is never written into the state.

Versions make saves safe to race: a snapshot carries a version that increases with every
state change; an adapter ignores (returns False for) a snapshot whose version is not newer than
the stored one, so a stale writer can never overwrite a newer state.

Versions protect the stored state, not the conversation: two processes (two web workers, two
hosts) could still both run one conversation and keep refusing each other's saves. An adapter
that also implements :class:`ConversationLeases` gives each conversation **one owner**: an agent
server takes the conversation's lease when it starts, its runtime renews the leases it holds in
one batch, and a clean shutdown releases it; after a crash it simply expires. Each acquisition
increases the lease's *fencing token*, and a snapshot carries the token of the lease it was made
under, so a writer that lost its lease (it stalled past the expiry and someone else took over)
has its saves refused — loudly — instead of interleaving with the new owner's.

The same holds for everything else a writer stores of the conversation: both shipped adapters
take an optional ``lease_token`` keyword on every display-row write (appends, tool-call status
updates, decisions, reconciliation) and on ``FilePersistence.save_files``, checked in the
write's own transaction, so a fenced writer changes none of the new owner's rows or files and
never creates a deleted conversation again. The keyword is left out of the protocols'
signatures on purpose: an adapter written without it keeps working, unfenced, because the
runtime passes a token only to a method that takes one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from sagents._state import State

__all__ = [
    "AgentPersistence",
    "Conversation",
    "ConversationLeases",
    "ConversationStore",
    "DisplayMessage",
    "DisplayMessagePersistence",
    "Lease",
    "Scope",
    "StateSnapshot",
    "StoredState",
    "ToolCallStatus",
]

#: The tenant a caller acts for: any hashable value (a user id, a tuple, an Enum member, a frozen
#: dataclass...; see :func:`~sagents.persistence.scope_key` for the ones the shipped stores
#: accept); None for single-tenant apps.
Scope: TypeAlias = Hashable | None

ToolCallStatus: TypeAlias = Literal["executing", "completed", "failed", "interrupted", "cancelled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSnapshot:
    """One save of an agent's state.

    Attributes:
        state: the state to store.
        version: increases with every change of the state; a snapshot whose version is not
            greater than the stored one is stale and ignored.
        base_version: the stored version this snapshot builds on (None: unknown, e.g. the
            first save of a new server), and
        unchanged_prefix: how many leading messages are identical to that base. An adapter
            may write only ``state.messages[unchanged_prefix:]`` when the stored version is
            ``base_version``; otherwise it must rewrite everything.
        lease_token: the fencing token of the :class:`Lease` the writer holds, or None when it
            holds none. With a token, the adapter refuses the save (``StateConflict``) unless
            that lease is still the conversation's, and never creates a deleted conversation
            again; without one, it refuses while someone else holds a live lease.
    """

    state: State
    version: int
    base_version: int | None = None
    unchanged_prefix: int = 0
    lease_token: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredState:
    """A loaded state and the version it was stored with."""

    state: State
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A conversation's ownership lease, as acquired.

    Attributes:
        conversation_id: the conversation.
        owner: who holds it (a runtime's ``owner_id``: ``host:pid:runtime``).
        token: the fencing token; every acquisition gets a greater one.
        expires_at: when it runs out unless renewed (UTC).
        state_version: the version of the stored state when it was acquired (None: none
            stored), so the new owner can tell whether the state it holds is the latest.
        recovered: the previous holder never released it (it crashed, or stalled past the
            expiry): what it stored last may need reconciling.
    """

    conversation_id: str
    owner: str
    token: int
    expires_at: datetime
    state_version: int | None = None
    recovered: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """A conversation row: who owns it, its title, whether approval is pending.

    ``scope`` is the scope of the caller that read it (every read is filtered by it): the value
    itself, not its stored key.
    """

    id: str
    scope: Scope
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DisplayMessage:
    """One row of what the user sees.

    Attributes:
        type: ``user``, ``assistant``, ``tool_call``, ``tool_result``, ``thinking``, ``error``...
        content: the JSON content (e.g. ``{"text": ...}`` or ``{"name": ..., "arguments": ...}``).
        content_type: how to render it (``text``, ``markdown``, ``json``...).
        tool_call_id: links a tool call, its status and its result.
        sequence: position in the conversation, assigned by the adapter on append.
        status: for tool calls: executing / completed / failed / interrupted / cancelled.
        state_version: the version of the agent's state the row's message entered (set by the
            agent server), so that rows of messages a crash kept out of the stored state can be
            told apart and removed when the conversation is restored.
    """

    conversation_id: str
    type: str
    content: dict[str, Any]
    content_type: str = "text"
    tool_call_id: str | None = None
    sequence: int | None = None
    status: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    created_at: datetime | None = None
    state_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for ``DisplayMessageSaved`` events and web clients)."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "type": self.type,
            "content": self.content,
            "content_type": self.content_type,
            "tool_call_id": self.tool_call_id,
            "sequence": self.sequence,
            "status": self.status,
            "metadata": self.metadata,
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "state_version": self.state_version,
        }


@runtime_checkable
class AgentPersistence(Protocol):
    """Stores agent states by conversation, within a scope."""

    async def save_state(self, scope: Scope, conversation_id: str, snapshot: StateSnapshot) -> bool:
        """Store ``snapshot`` atomically; False when it is stale (a newer version is stored).

        A crash mid-save leaves the previous snapshot readable.
        """
        ...

    async def load_state(self, scope: Scope, conversation_id: str) -> StoredState | None:
        """The stored state, or None when there is none (or it belongs to another scope)."""
        ...


@runtime_checkable
class DisplayMessagePersistence(Protocol):
    """Stores display messages by conversation, within a scope.

    An adapter with ownership leases should also take ``lease_token: int | None = None`` as a
    keyword on every write (see the module docstring): with a token, the write is refused with
    ``StateConflict`` unless that lease is still the conversation's, and a missing (deleted)
    conversation is not created again; without one, it is not checked.
    """

    async def append_display_messages(
        self, scope: Scope, conversation_id: str, messages: Sequence[DisplayMessage]
    ) -> list[DisplayMessage]:
        """Append in order; returns them with ``id``, ``sequence`` and ``created_at`` set."""
        ...

    async def list_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        after_sequence: int | None = None,
        limit: int = 200,
    ) -> list[DisplayMessage]:
        """A page of display messages in sequence order."""
        ...

    async def update_tool_call_status(
        self,
        scope: Scope,
        conversation_id: str,
        tool_call_id: str,
        status: ToolCallStatus,
        metadata: Mapping[str, Any] | None = None,
    ) -> DisplayMessage | None:
        """Set the status of a tool call's display message; None if there is none."""
        ...

    async def record_decision(
        self, scope: Scope, conversation_id: str, tool_call_id: str, decision: Mapping[str, Any]
    ) -> DisplayMessage | None:
        """Record a human decision on a tool call (kept in the row's metadata)."""
        ...


@runtime_checkable
class ConversationLeases(Protocol):
    """One owner per conversation across processes: ownership leases with fencing tokens."""

    async def acquire_lease(
        self,
        scope: Scope,
        conversation_id: str,
        owner: str,
        ttl: float,
        *,
        create: bool = True,
    ) -> Lease:
        """Take the conversation's lease for ``ttl`` seconds.

        Succeeds when nobody holds it, when it expired, or when ``owner`` already holds it; the
        token is then increased, which fences every earlier holder. With ``create``, a missing
        conversation is created in ``scope``.

        Raises:
            ConversationOwnedElsewhere: another owner holds a live lease.
            ConversationNotFound: the conversation belongs to another scope, or is missing and
                ``create`` is False.
        """
        ...

    async def renew_leases(self, owner: str, ttl: float) -> set[str]:
        """Extend every lease ``owner`` holds to ``ttl`` seconds from now (one statement);
        returns the ids of the conversations it still holds."""
        ...

    async def release_lease(self, scope: Scope, conversation_id: str, lease: Lease) -> None:
        """Give the lease up (it expires now) if it is still ``lease``; otherwise do nothing."""
        ...


@runtime_checkable
class DisplayReconciliation(Protocol):
    """Brings display messages back in line with the stored state after an unclean end."""

    async def reconcile_display_messages(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        state_version: int | None,
        tool_call_statuses: Mapping[str, ToolCallStatus],
    ) -> list[DisplayMessage]:
        """Delete the rows whose ``state_version`` is newer than ``state_version`` (their
        messages never reached the stored state; None: nothing is stored, so every row that
        has a version goes), then settle every ``tool_call`` row still ``executing`` (nothing
        runs during a restore): the status ``tool_call_statuses`` gives its call (its result is
        in the state), else ``interrupted``. Returns the rows whose status changed."""
        ...


@runtime_checkable
class ConversationStore(Protocol):
    """Conversations by scope: the list a UI shows, titles, the pending-approval flag."""

    async def create_conversation(
        self,
        scope: Scope,
        *,
        conversation_id: str | None = None,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Conversation:
        """Create one (an id is generated when not given)."""
        ...

    async def get_conversation(self, scope: Scope, conversation_id: str) -> Conversation | None: ...

    async def list_conversations(
        self, scope: Scope, *, limit: int = 50, before: datetime | None = None
    ) -> list[Conversation]:
        """Most recently updated first; ``before`` pages on ``updated_at``."""
        ...

    async def update_conversation(
        self,
        scope: Scope,
        conversation_id: str,
        *,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Conversation | None:
        """Change the title and/or metadata; None when not found in this scope."""
        ...

    async def delete_conversation(self, scope: Scope, conversation_id: str) -> bool:
        """Delete it with its state and display messages; False when not found."""
        ...
