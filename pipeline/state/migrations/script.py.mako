"""${message}"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
    op.execute(sa.text(f"UPDATE schema_version SET version = {int(revision)}"))


def downgrade() -> None:
    raise NotImplementedError("state migrations only move forward; restore a backup to go back")
