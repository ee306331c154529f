"""Schema version 4: an order says how it executes — ``kind`` (``market``, ``limit`` or ``stop``; stored orders
are market orders), ``stop_price`` (a stop's trigger, exact text) and ``expires_at`` (when a day order is
cancelled; none: good till cancelled)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("kind", sa.String(), nullable=False, server_default="market"))
        batch.add_column(sa.Column("stop_price", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text("UPDATE schema_version SET version = 4"))


def downgrade() -> None:
    raise NotImplementedError("state migrations only move forward; restore a backup to go back")
