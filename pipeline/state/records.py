"""What a runtime step writes: the trading entities of :mod:`pipeline.domain.trading` (orders, fills,
positions, trades) and the state's own entities (ledgers, breaker events, equity, feed cursors), the
:class:`StepRecord` that carries a whole step, and the :class:`StepResult` that says what was written. Entities
check themselves when built: float money raises ``TypeError`` and naive datetimes ``ValueError``, both naming
``Entity.field``; the tables of :mod:`pipeline.state.tables` extend these classes, so each field is declared once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Literal

import sqlalchemy as sa
from pydantic import ValidationInfo, field_validator
from sqlmodel import AutoString, Field

from pipeline.domain.trading import Fill, Order, Position, Trade
from pipeline.domain.values import DecimalText, Entity, UTCDateTime, as_utc


class LedgerRecord(Entity):
    """A sleeve's ledger as of ``updated_at``: cash, units, equity, ``tripped`` (a comma list of breaker rules)
    and ``kernel_state``, the engine's state as JSON text (stored and returned unchanged)."""

    sleeve: str = Field(primary_key=True)
    cash: Decimal = Field(sa_type=DecimalText)
    units: Decimal = Field(sa_type=DecimalText)
    equity: Decimal = Field(sa_type=DecimalText)
    tripped: str = ""
    kernel_state: str = Field(sa_type=sa.Text)
    bars_seen: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)


class BreakerRecord(Entity):
    """A circuit breaker that tripped (``action="trip"``) or was released (``"release"``) at ``at``
    (``sleeve`` = ``"portfolio"`` for the portfolio's)."""

    sleeve: str
    at: datetime = Field(sa_type=UTCDateTime)
    rule: str
    value: float
    threshold: float
    action: Literal["trip", "release"] = Field(default="trip", sa_type=AutoString,
                                               sa_column_kwargs={"server_default": "trip"})

    @field_validator("value", "threshold", mode="before")
    @classmethod
    def _a_number(cls, number: object, info: ValidationInfo) -> object:
        if isinstance(number, bool) or not isinstance(number, float | int) or math.isnan(number):
            raise ValueError(f"BreakerRecord.{info.field_name} must be a number, got {number!r}")
        return number


class EquityRecord(Entity):
    """Equity, cash and position value of a sleeve (or ``"portfolio"``) at ``at``."""

    at: datetime = Field(sa_type=UTCDateTime)
    sleeve: str
    equity: Decimal = Field(sa_type=DecimalText)
    cash: Decimal = Field(sa_type=DecimalText)
    position_value: Decimal = Field(sa_type=DecimalText)


class CursorRecord(Entity):
    """The open time of the last closed bar processed from ``feed`` (e.g. ``binance:BTC/USDT:1m``)."""

    feed: str = Field(primary_key=True)
    last_bar: datetime = Field(sa_type=UTCDateTime)


_STEP_ITEMS: Final = {
    "orders": Order, "fills": Fill, "positions": Position, "trades": Trade,
    "ledgers": LedgerRecord, "breakers": BreakerRecord, "equity": EquityRecord, "cursors": CursorRecord,
}


@dataclass(frozen=True)
class StepRecord:
    """Everything one runtime step changed, written by :meth:`StateStore.apply_step` in one transaction."""

    orders: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    ledgers: list[LedgerRecord] = field(default_factory=list)
    breakers: list[BreakerRecord] = field(default_factory=list)
    equity: list[EquityRecord] = field(default_factory=list)
    cursors: list[CursorRecord] = field(default_factory=list)
    heartbeat_at: datetime | None = None

    def __post_init__(self) -> None:
        for name, kind in _STEP_ITEMS.items():
            for i, item in enumerate(getattr(self, name)):
                if not isinstance(item, kind):
                    raise TypeError(f"StepRecord.{name}[{i}] must be a {kind.__name__}, got {type(item).__name__}")
        if self.heartbeat_at is not None:
            object.__setattr__(self, "heartbeat_at", as_utc("StepRecord.heartbeat_at", self.heartbeat_at))


@dataclass(frozen=True)
class StepResult:
    """What :meth:`StateStore.apply_step` wrote; a step applied twice reports only duplicates the second time."""

    new_fills: int = 0
    duplicate_fills: int = 0
    new_orders: int = 0
    updated_orders: int = 0
    new_trades: int = 0
    new_equity: int = 0
    new_breaker_events: int = 0
