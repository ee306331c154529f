"""The state's tables (SQLModel): the bot, feed cursors, orders, fills, positions, trades, ledgers, breaker
events, equity, operator commands, model deployments and runtime events, plus ``schema_version``, the number of
the schema revision for readers that do not know Alembic."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from pipeline.state.types import DecimalText, UTCDateTime


class SchemaVersion(SQLModel, table=True):
    """The single row holding the schema version of the tables (see :mod:`pipeline.state.schema`): every
    migration writes it with its tables, so that a tradeforge older than the Alembic migrations refuses a newer
    database, and where it disagrees with the Alembic revision it decides."""

    __tablename__ = "schema_version"
    id: int = Field(default=1, primary_key=True)
    version: int


class BotState(SQLModel, table=True):
    """The trading process: its mode, status (running, paused, stopped) and last heartbeat."""

    __tablename__ = "bot_state"
    id: str = Field(default="main", primary_key=True)
    mode: str = ""
    status: str = "stopped"
    status_reason: str = ""
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    portfolio_hash: str = ""


class FeedCursor(SQLModel, table=True):
    """The open time of the last closed bar processed from one feed (e.g. ``binance:BTC/USDT:1m``)."""

    __tablename__ = "feed_cursors"
    feed: str = Field(primary_key=True)
    last_bar: datetime = Field(sa_type=UTCDateTime)


class OrderRow(SQLModel, table=True):
    """An order, keyed by its deterministic client order id."""

    __tablename__ = "orders"
    client_order_id: str = Field(primary_key=True)
    sleeve: str = Field(index=True)
    symbol: str
    side: str
    qty: Decimal = Field(sa_type=DecimalText)
    price: Decimal | None = Field(default=None, sa_type=DecimalText)
    status: str = Field(index=True)
    reason: str = ""
    venue_order_id: str | None = None
    bar: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class FillRow(SQLModel, table=True):
    """A fill reported by the venue; ``fill_id`` (the venue's id) is unique: a fill is never applied twice."""

    __tablename__ = "fills"
    id: int | None = Field(default=None, primary_key=True)
    fill_id: str = Field(unique=True)
    client_order_id: str = Field(index=True)
    sleeve: str
    symbol: str
    side: str
    qty: Decimal = Field(sa_type=DecimalText)
    price: Decimal = Field(sa_type=DecimalText)
    fee: Decimal = Field(sa_type=DecimalText)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    reason: str = ""


class PositionRow(SQLModel, table=True):
    """A sleeve's position in one symbol."""

    __tablename__ = "positions"
    sleeve: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    qty: Decimal = Field(sa_type=DecimalText)
    avg_price: Decimal = Field(sa_type=DecimalText)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class TradeRow(SQLModel, table=True):
    """A closed round trip; one per (sleeve, entry time, exit time)."""

    __tablename__ = "trades"
    __table_args__ = (sa.UniqueConstraint("sleeve", "entry_time", "exit_time", name="uq_trades_sleeve_times"),)
    id: int | None = Field(default=None, primary_key=True)
    sleeve: str
    symbol: str
    side: str
    qty: Decimal = Field(sa_type=DecimalText)
    entry_price: Decimal = Field(sa_type=DecimalText)
    exit_price: Decimal = Field(sa_type=DecimalText)
    pnl: Decimal = Field(sa_type=DecimalText)
    fees: Decimal = Field(sa_type=DecimalText)
    entry_time: datetime = Field(sa_type=UTCDateTime)
    exit_time: datetime = Field(sa_type=UTCDateTime)
    entry_reason: str = ""
    exit_reason: str = ""
    model_version: str | None = None


class LedgerRow(SQLModel, table=True):
    """A sleeve's ledger: cash, units, equity, tripped breakers and the engine's opaque state (JSON text)."""

    __tablename__ = "ledgers"
    sleeve: str = Field(primary_key=True)
    cash: Decimal = Field(sa_type=DecimalText)
    units: Decimal = Field(sa_type=DecimalText)
    equity: Decimal = Field(sa_type=DecimalText)
    tripped: str = ""
    kernel_state: str = Field(sa_type=sa.Text)
    bars_seen: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)


class BreakerEventRow(SQLModel, table=True):
    """A circuit breaker that tripped or was released (``action``); ``sleeve`` is ``"portfolio"`` for
    portfolio-level breakers."""

    __tablename__ = "breaker_events"
    __table_args__ = (
        sa.UniqueConstraint("sleeve", "at", "rule", "action", name="uq_breaker_events_sleeve_at_rule_action"),
    )
    id: int | None = Field(default=None, primary_key=True)
    sleeve: str
    at: datetime = Field(sa_type=UTCDateTime)
    rule: str
    value: float
    threshold: float
    action: str = Field(default="trip", sa_column_kwargs={"server_default": "trip"})


class EquityRow(SQLModel, table=True):
    """Equity, cash and position value of a sleeve (or ``"portfolio"``) at one time."""

    __tablename__ = "equity"
    __table_args__ = (
        sa.UniqueConstraint("at", "sleeve", name="uq_equity_at_sleeve"),
        sa.Index("ix_equity_sleeve_at", "sleeve", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    sleeve: str
    equity: Decimal = Field(sa_type=DecimalText)
    cash: Decimal = Field(sa_type=DecimalText)
    position_value: Decimal = Field(sa_type=DecimalText)


class ControlCommand(SQLModel, table=True):
    """An operator's command to the trading process, acknowledged once carried out."""

    __tablename__ = "control_commands"
    id: int | None = Field(default=None, primary_key=True)
    command: str
    sleeve: str | None = None
    source: str
    created_at: datetime = Field(sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    result: str | None = None


class ModelDeployment(SQLModel, table=True):
    """A model version put to work for a sleeve."""

    __tablename__ = "model_deployments"
    id: int | None = Field(default=None, primary_key=True)
    sleeve: str = Field(index=True)
    model_name: str
    version: str
    run_id: str
    activated_at: datetime = Field(sa_type=UTCDateTime)
    reason: str = ""


class RuntimeEvent(SQLModel, table=True):
    """Something the runtime found or did outside the bar loop: what startup recovered and reconciled with the
    venue (``recovery``), stale data (``stale``) and its end (``fresh``); ``detail`` says what, in words."""

    __tablename__ = "runtime_events"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    kind: str
    sleeve: str | None = None
    detail: str


TABLES: Final[tuple[type[SQLModel], ...]] = (
    SchemaVersion, BotState, FeedCursor, OrderRow, FillRow, PositionRow, TradeRow, LedgerRow, BreakerEventRow,
    EquityRow, ControlCommand, ModelDeployment, RuntimeEvent,
)
METADATA: Final = SQLModel.metadata
"""The metadata holding :data:`TABLES` (the migrations' target)."""


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a table model."""
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table
