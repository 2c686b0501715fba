"""The conversations' files: one row per (conversation, path), deleted with the conversation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-12

Frozen: this script spells out its table rather than importing the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sagents.persistence.sql.migrations import current_table_prefix

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    p = current_table_prefix()
    op.create_table(
        f"{p}files",
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "path", name=f"pk_{p}files"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}files_conversation",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table(f"{current_table_prefix()}files")
