"""Ownership leases (one process runs a conversation at a time), and the state version of each
display row (rows a crash kept ahead of the stored state are removed at the next start).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Frozen: this script spells out its table rather than importing the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sagents.persistence.sql.migrations import current_table_prefix

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    p = current_table_prefix()
    op.create_table(
        f"{p}leases",
        sa.Column("conversation_id", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name=f"pk_{p}leases"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            [f"{p}conversations.id"],
            name=f"fk_{p}leases_conversation",
            ondelete="CASCADE",
        ),
    )
    op.create_index(f"ix_{p}leases_owner", f"{p}leases", ["owner"])
    with op.batch_alter_table(f"{p}display_messages") as batch:
        batch.add_column(sa.Column("state_version", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    p = current_table_prefix()
    with op.batch_alter_table(f"{p}display_messages") as batch:
        batch.drop_column("state_version")
    op.drop_index(f"ix_{p}leases_owner", table_name=f"{p}leases")
    op.drop_table(f"{p}leases")
