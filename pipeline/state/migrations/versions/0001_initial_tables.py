"""Schema version 1: the bot, feed cursors, orders, fills, positions, trades, ledgers, breaker events (trips,
one per sleeve, time and rule), equity, operator commands, model deployments and the version row.

Money is stored as text (exact ``Decimal``), times as ``TIMESTAMP WITH TIME ZONE`` (UTC wall time on SQLite).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _string(name: str, nullable: bool = False) -> sa.Column[str]:
    """A VARCHAR column."""
    return sa.Column(name, sa.String(), nullable=nullable)


def _text(name: str, nullable: bool = False) -> sa.Column[str]:
    """A TEXT column: exact money (a ``Decimal``'s text) or the engine's JSON state."""
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, nullable: bool = False) -> sa.Column[datetime]:
    """An aware time (stored in UTC)."""
    return sa.Column(name, TIME, nullable=nullable)


def upgrade() -> None:
    version = op.create_table(
        "schema_version",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "bot_state",
        sa.Column("id", sa.String(), primary_key=True),
        _string("mode"), _string("status"), _string("status_reason"),
        _time("started_at", True), _time("heartbeat_at", True), _time("updated_at", True),
        _string("portfolio_hash"),
    )
    op.create_table("feed_cursors", sa.Column("feed", sa.String(), primary_key=True), _time("last_bar"))
    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.String(), primary_key=True),
        _string("sleeve"), _string("symbol"), _string("side"), _text("qty"), _text("price", True), _string("status"),
        _string("reason"), _string("venue_order_id", True), _time("bar"), _time("created_at"), _time("updated_at"),
    )
    op.create_index("ix_orders_sleeve", "orders", ["sleeve"])
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_table(
        "fills",
        _id(), _string("fill_id"), _string("client_order_id"), _string("sleeve"), _string("symbol"), _string("side"),
        _text("qty"), _text("price"), _text("fee"), _time("at"), _string("reason"),
        sa.UniqueConstraint("fill_id"),
    )
    op.create_index("ix_fills_at", "fills", ["at"])
    op.create_index("ix_fills_client_order_id", "fills", ["client_order_id"])
    op.create_table(
        "positions",
        sa.Column("sleeve", sa.String(), primary_key=True), sa.Column("symbol", sa.String(), primary_key=True),
        _text("qty"), _text("avg_price"), _time("updated_at"),
    )
    op.create_table(
        "trades",
        _id(), _string("sleeve"), _string("symbol"), _string("side"), _text("qty"), _text("entry_price"),
        _text("exit_price"), _text("pnl"), _text("fees"), _time("entry_time"), _time("exit_time"),
        _string("entry_reason"), _string("exit_reason"), _string("model_version", True),
        sa.UniqueConstraint("sleeve", "entry_time", "exit_time", name="uq_trades_sleeve_times"),
    )
    op.create_table(
        "ledgers",
        sa.Column("sleeve", sa.String(), primary_key=True),
        _text("cash"), _text("units"), _text("equity"), _string("tripped"), _text("kernel_state"),
        sa.Column("bars_seen", sa.Integer(), nullable=False), _time("updated_at"),
    )
    op.create_table(
        "breaker_events",
        _id(), _string("sleeve"), _time("at"), _string("rule"),
        sa.Column("value", sa.Float(), nullable=False), sa.Column("threshold", sa.Float(), nullable=False),
        sa.UniqueConstraint("sleeve", "at", "rule", name="uq_breaker_events_sleeve_at_rule"),
    )
    op.create_table(
        "equity",
        _id(), _time("at"), _string("sleeve"), _text("equity"), _text("cash"), _text("position_value"),
        sa.UniqueConstraint("at", "sleeve", name="uq_equity_at_sleeve"),
    )
    op.create_index("ix_equity_sleeve_at", "equity", ["sleeve", "at"])
    op.create_table(
        "control_commands",
        _id(), _string("command"), _string("sleeve", True), _string("source"), _time("created_at"),
        _time("acknowledged_at", True), _string("result", True),
    )
    op.create_table(
        "model_deployments",
        _id(), _string("sleeve"), _string("model_name"), _string("version"), _string("run_id"), _time("activated_at"),
        _string("reason"),
    )
    op.create_index("ix_model_deployments_sleeve", "model_deployments", ["sleeve"])
    op.bulk_insert(version, [{"id": 1, "version": 1}])


def downgrade() -> None:
    raise NotImplementedError("state migrations only move forward; restore a backup to go back")
