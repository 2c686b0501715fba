"""Initial schema: conversations, agent states and their messages, display messages.

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Frozen: this script spells out its tables rather than importing the models.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from sagents.persistence.sql.migrations import current_table_prefix

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    p = current_table_prefix()
    op.create_table(
        f"{p}conversations",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(255), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}conversations"),
    )
    op.create_index(f"ix_{p}conversations_scope", f"{p}conversations", ["scope", "updated_at"])
    op.create_table(
        f"{p}agent_states",
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("head", _json(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=f"pk_{p}agent_states"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}agent_states_conversation",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        f"{p}agent_messages",
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("message", _json(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "position", name=f"pk_{p}agent_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}agent_states.conversation_id"],
            name=f"fk_{p}agent_messages_state",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        f"{p}display_messages",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("content", _json(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("tool_call_id", sa.String(255), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}display_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}display_messages_conversation",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("conversation_id", "sequence", name=f"uq_{p}display_messages_sequence"),
    )
    op.create_index(
        f"ix_{p}display_messages_tool_call_id", f"{p}display_messages", ["tool_call_id"]
    )


def downgrade() -> None:
    p = current_table_prefix()
    op.drop_index(f"ix_{p}display_messages_tool_call_id", table_name=f"{p}display_messages")
    op.drop_table(f"{p}display_messages")
    op.drop_table(f"{p}agent_messages")
    op.drop_table(f"{p}agent_states")
    op.drop_index(f"ix_{p}conversations_scope", table_name=f"{p}conversations")
    op.drop_table(f"{p}conversations")
