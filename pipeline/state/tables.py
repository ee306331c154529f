"""The state's tables (SQLModel): the bot, feed cursors, orders, fills, positions, trades, ledgers, breaker
events, equity, operator commands, model deployments and runtime events, plus ``schema_version``, the number of
the schema revision for readers that do not know Alembic.

The tables of the entities a step writes extend those entities (:mod:`pipeline.domain.trading`,
:mod:`pipeline.state.records`): their columns are the entity's fields, declared once, plus a surrogate ``id``
where the natural key is not the primary key."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlmodel import Field, SQLModel

from pipeline.domain.trading import Fill, Order, Position, Trade
from pipeline.domain.values import UTCDateTime
from pipeline.state.records import BreakerRecord, CursorRecord, EquityRecord, LedgerRecord

_TABLE: Final = ConfigDict(frozen=False)
"""A table model's rows are mutable (the ORM loads and updates them); the entity it extends stays frozen."""


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


class FeedCursor(CursorRecord, table=True):
    """The open time of the last closed bar processed from one feed."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "feed_cursors"


class OrderRow(Order, table=True):
    """An order, keyed by its deterministic client order id."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "orders"


class FillRow(Fill, table=True):
    """A fill reported by the venue; ``fill_id`` (the venue's id) is unique: a fill is never applied twice."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "fills"
    id: int | None = Field(default=None, primary_key=True)


class PositionRow(Position, table=True):
    """A sleeve's position in one symbol."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "positions"


class TradeRow(Trade, table=True):
    """A closed round trip; one per (sleeve, entry time, exit time)."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "trades"
    __table_args__ = (sa.UniqueConstraint("sleeve", "entry_time", "exit_time", name="uq_trades_sleeve_times"),)
    id: int | None = Field(default=None, primary_key=True)


class LedgerRow(LedgerRecord, table=True):
    """A sleeve's ledger: cash, units, equity, tripped breakers and the engine's opaque state (JSON text)."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "ledgers"


class BreakerEventRow(BreakerRecord, table=True):
    """A circuit breaker that tripped or was released (``action``); ``sleeve`` is ``"portfolio"`` for
    portfolio-level breakers."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "breaker_events"
    __table_args__ = (
        sa.UniqueConstraint("sleeve", "at", "rule", "action", name="uq_breaker_events_sleeve_at_rule_action"),
    )
    id: int | None = Field(default=None, primary_key=True)


class EquityRow(EquityRecord, table=True):
    """Equity, cash and position value of a sleeve (or ``"portfolio"``) at one time."""

    model_config = _TABLE  # type: ignore[assignment]
    __tablename__ = "equity"
    __table_args__ = (
        sa.UniqueConstraint("at", "sleeve", name="uq_equity_at_sleeve"),
        sa.Index("ix_equity_sleeve_at", "sleeve", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)


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
