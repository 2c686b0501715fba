"""The SQL schema: its tables behind a configurable name prefix.

* ``conversations``: one row per conversation: its scope (the tenant), title, metadata, the
  pending-approval flag and timestamps. Every other row hangs off it and is deleted with it.
* ``agent_states``: the state *head* of a conversation (todos, metadata, interrupt, agent id,
  state format version), the snapshot version and how many message rows belong to it.
* ``agent_messages``: the state's messages, one row per message keyed by position. Saves are
  deltas: a new turn inserts its new rows and leaves the history alone, so a conversation costs
  about the size of its messages, not one copy of its history per step.
* ``display_messages``: what the user sees, ordered by a per-conversation ``sequence``.
* ``files``: the conversation's files (the FileSystem middleware's), one row per path, written
  as deltas (only a changed file's row) and deleted with their conversation. Contents are UTF-8
  bytes, not text: PostgreSQL's ``TEXT`` cannot hold a NUL character, which a file may.
* ``leases``: the ownership lease of a running conversation (owner, fencing token, expiry), so
  that two processes sharing the database never both run it.

The tables are built by :func:`build_tables` for a prefix rather than declared once as ORM
classes at import time: the prefix is configuration, and two prefixes can live in one database
(tests, or two apps). Queries use SQLAlchemy Core: saves are bulk row operations, not object
graphs. Constraint and index names are explicit and include the prefixed table name, because
PostgreSQL index names are unique per schema, and the Alembic migration must produce the same
names (a test compares the migrated schema with these tables).

JSON columns are ``JSON`` with a ``JSONB`` variant on PostgreSQL: one code path, and binary JSON
where the server has it. Timestamps are timezone-aware UTC (SQLite stores them as text without
zone; the store re-attaches UTC when it reads them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from sagents._errors import ConfigurationError

__all__ = ["DEFAULT_TABLE_PREFIX", "SqlTables", "build_tables", "check_table_prefix", "json_type"]

DEFAULT_TABLE_PREFIX = "sagents_"

#: Lower case so PostgreSQL needs no quoting; short so that every derived constraint name stays
#: within PostgreSQL's 63-character identifier limit.
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,29}")

ID_LENGTH = 255
#: The longest virtual file path (``sagents._files.MAX_PATH_LENGTH``, in bytes, so also in
#: characters).
PATH_LENGTH = 1024


def check_table_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a valid table prefix.

    Raises:
        ConfigurationError: not lower-case letters, digits and underscores (not starting with a
            digit), or longer than 30 characters. The empty prefix is allowed.
    """
    if prefix != "" and not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"table prefix {prefix!r} is invalid: use up to 30 lower-case letters, digits and "
            "underscores, not starting with a digit (e.g. 'sagents_')"
        )
    return prefix


def json_type() -> TypeEngine[Any]:
    """JSON, stored as JSONB on PostgreSQL."""
    return JSON().with_variant(JSONB(), "postgresql")


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlTables:
    """The tables for one prefix, and the ``MetaData`` that holds them."""

    prefix: str
    metadata: MetaData
    conversations: Table
    agent_states: Table
    agent_messages: Table
    display_messages: Table
    files: Table
    leases: Table


def build_tables(prefix: str = DEFAULT_TABLE_PREFIX) -> SqlTables:
    """Build the tables named ``{prefix}conversations`` and so on in a new ``MetaData``.

    Raises:
        ConfigurationError: ``prefix`` is not a valid table prefix.
    """
    p = check_table_prefix(prefix)
    metadata = MetaData()
    conversations = Table(
        f"{p}conversations",
        metadata,
        Column("id", String(ID_LENGTH), nullable=False),
        Column("scope", String(ID_LENGTH), nullable=True),
        Column("title", Text, nullable=True),
        Column("metadata", json_type(), nullable=False),
        Column("interrupted", Boolean, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("id", name=f"pk_{p}conversations"),
        # Serves the scope filter of every lookup and the "most recent first" list.
        Index(f"ix_{p}conversations_scope", "scope", "updated_at"),
    )
    agent_states = Table(
        f"{p}agent_states",
        metadata,
        Column("conversation_id", String(ID_LENGTH), nullable=False),
        Column("version", BigInteger, nullable=False),
        Column("head", json_type(), nullable=False),
        Column("message_count", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("conversation_id", name=f"pk_{p}agent_states"),
        ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}agent_states_conversation",
            ondelete="CASCADE",
        ),
    )
    agent_messages = Table(
        f"{p}agent_messages",
        metadata,
        Column("conversation_id", String(ID_LENGTH), nullable=False),
        Column("position", Integer, nullable=False, autoincrement=False),
        Column("message", json_type(), nullable=False),
        PrimaryKeyConstraint("conversation_id", "position", name=f"pk_{p}agent_messages"),
        ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}agent_states.conversation_id"],
            name=f"fk_{p}agent_messages_state",
            ondelete="CASCADE",
        ),
    )
    display_messages = Table(
        f"{p}display_messages",
        metadata,
        Column("id", String(ID_LENGTH), nullable=False),
        Column("conversation_id", String(ID_LENGTH), nullable=False),
        Column("type", String(64), nullable=False),
        Column("content", json_type(), nullable=False),
        Column("content_type", String(64), nullable=False),
        Column("tool_call_id", String(ID_LENGTH), nullable=True),
        Column("sequence", Integer, nullable=False),
        Column("status", String(32), nullable=True),
        Column("metadata", json_type(), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("state_version", BigInteger, nullable=True),
        PrimaryKeyConstraint("id", name=f"pk_{p}display_messages"),
        ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}display_messages_conversation",
            ondelete="CASCADE",
        ),
        # Its index also serves "the messages of a conversation, in order".
        UniqueConstraint("conversation_id", "sequence", name=f"uq_{p}display_messages_sequence"),
        Index(f"ix_{p}display_messages_tool_call_id", "tool_call_id"),
    )
    leases = Table(
        f"{p}leases",
        metadata,
        Column("conversation_id", String(ID_LENGTH), nullable=False),
        Column("owner", String(ID_LENGTH), nullable=False),
        Column("token", BigInteger, nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False),
        Column("released", Boolean, nullable=False),
        PrimaryKeyConstraint("conversation_id", name=f"pk_{p}leases"),
        ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}leases_conversation",
            ondelete="CASCADE",
        ),
        # Serves the renewal of every lease of one owner in one statement.
        Index(f"ix_{p}leases_owner", "owner"),
    )
    files = Table(
        f"{p}files",
        metadata,
        Column("conversation_id", String(ID_LENGTH), nullable=False),
        Column("path", String(PATH_LENGTH), nullable=False),
        Column("content", LargeBinary, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        # Its index also serves "the files of a conversation".
        PrimaryKeyConstraint("conversation_id", "path", name=f"pk_{p}files"),
        ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}files_conversation",
            ondelete="CASCADE",
        ),
    )
    return SqlTables(
        prefix=p,
        metadata=metadata,
        conversations=conversations,
        agent_states=agent_states,
        agent_messages=agent_messages,
        display_messages=display_messages,
        files=files,
        leases=leases,
    )
