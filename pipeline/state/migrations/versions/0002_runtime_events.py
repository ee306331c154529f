"""Schema version 2: runtime events (what startup recovered and reconciled, stale data and its end)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("sleeve", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=False),
    )
    op.create_index("ix_runtime_events_at", "runtime_events", ["at"])
    op.execute(sa.text("UPDATE schema_version SET version = 2"))


def downgrade() -> None:
    raise NotImplementedError("state migrations only move forward; restore a backup to go back")
