"""Schema version 3: a breaker event is a trip or a release (``action``; stored events are trips), and its
natural key becomes (sleeve, time, rule, action), so a trip and a release may share a bar.

SQLite cannot drop a constraint, so there the table is rebuilt (Alembic's batch mode) inside the same
transaction; its rows are copied unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("breaker_events") as batch:
        batch.add_column(sa.Column("action", sa.String(), nullable=False, server_default="trip"))
        batch.drop_constraint("uq_breaker_events_sleeve_at_rule", type_="unique")
        batch.create_unique_constraint("uq_breaker_events_sleeve_at_rule_action", ["sleeve", "at", "rule", "action"])
    op.execute(sa.text("UPDATE schema_version SET version = 3"))


def downgrade() -> None:
    raise NotImplementedError("state migrations only move forward; restore a backup to go back")
