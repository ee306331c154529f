"""The records the runtime hands to the store: one frozen dataclass per kind of row a step writes (orders,
fills, positions, trades, ledgers, breaker events, equity, feed cursors), the :class:`StepRecord` that carries
a whole step and the :class:`StepResult` that says what was written. Records check themselves when built:
float money raises ``TypeError`` and naive datetimes ``ValueError``, both naming ``Record.field``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final

from pipeline.state.types import BREAKER_ACTIONS, ORDER_SIDES, ORDER_STATUSES, TRADE_SIDES, as_money, as_utc


def _check_record(record: object, money: Iterable[str] = (), times: Iterable[str] = (),
                  choices: dict[str, frozenset[str]] | None = None) -> None:
    """Validate a record's money (Decimal, nullable when typed so), times (aware, normalised to UTC) and
    enumerated strings; names in errors read ``Record.field``."""
    owner = type(record).__name__
    optional = {f.name for f in dataclasses.fields(record)  # type: ignore[arg-type]
                if isinstance(f.type, str) and f.type.endswith("| None")}
    for name in money:
        value = getattr(record, name)
        if not (value is None and name in optional):
            object.__setattr__(record, name, as_money(f"{owner}.{name}", value))
    for name in times:
        value = getattr(record, name)
        if not (value is None and name in optional):
            object.__setattr__(record, name, as_utc(f"{owner}.{name}", value))
    for name, allowed in (choices or {}).items():
        if getattr(record, name) not in allowed:
            raise ValueError(f"{owner}.{name} must be one of {sorted(allowed)}, got {getattr(record, name)!r}")


@dataclass(frozen=True)
class OrderRecord:
    """An order as the runtime knows it now; ``updated_at`` defaults to ``created_at``."""

    client_order_id: str
    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal | None
    status: str
    reason: str
    bar: datetime
    created_at: datetime
    updated_at: datetime | None = None
    venue_order_id: str | None = None

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "price"), ("bar", "created_at", "updated_at"),
                      {"side": ORDER_SIDES, "status": ORDER_STATUSES})
        if self.updated_at is None:
            object.__setattr__(self, "updated_at", self.created_at)


@dataclass(frozen=True)
class FillRecord:
    """A fill as reported by the venue; ``fill_id`` is the venue's id."""

    fill_id: str
    client_order_id: str
    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    at: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "price", "fee"), ("at",), {"side": ORDER_SIDES})


@dataclass(frozen=True)
class PositionRecord:
    """A sleeve's position in a symbol as of ``updated_at``."""

    sleeve: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    updated_at: datetime

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "avg_price"), ("updated_at",))


@dataclass(frozen=True)
class TradeRecord:
    """A closed round trip."""

    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
    fees: Decimal
    entry_time: datetime
    exit_time: datetime
    entry_reason: str = ""
    exit_reason: str = ""
    model_version: str | None = None

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "entry_price", "exit_price", "pnl", "fees"), ("entry_time", "exit_time"),
                      {"side": TRADE_SIDES})


@dataclass(frozen=True)
class LedgerRecord:
    """A sleeve's ledger as of ``updated_at``; ``tripped`` is a comma list of breaker rules, ``kernel_state``
    the engine's state as JSON text (stored and returned unchanged)."""

    sleeve: str
    cash: Decimal
    units: Decimal
    equity: Decimal
    tripped: str
    kernel_state: str
    bars_seen: int
    updated_at: datetime

    def __post_init__(self) -> None:
        _check_record(self, ("cash", "units", "equity"), ("updated_at",))


@dataclass(frozen=True)
class BreakerRecord:
    """A circuit breaker that tripped (``action="trip"``) or was released (``"release"``) at ``at``
    (``sleeve`` = ``"portfolio"`` for the portfolio's)."""

    sleeve: str
    at: datetime
    rule: str
    value: float
    threshold: float
    action: str = "trip"

    def __post_init__(self) -> None:
        _check_record(self, (), ("at",))
        if self.action not in BREAKER_ACTIONS:
            raise ValueError(f"BreakerRecord.action must be one of {', '.join(sorted(BREAKER_ACTIONS))}, "
                             f"got {self.action!r}")
        for name in ("value", "threshold"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, float | int) or math.isnan(number):
                raise ValueError(f"BreakerRecord.{name} must be a number, got {number!r}")


@dataclass(frozen=True)
class EquityRecord:
    """Equity, cash and position value of a sleeve (or ``"portfolio"``) at ``at``."""

    at: datetime
    sleeve: str
    equity: Decimal
    cash: Decimal
    position_value: Decimal

    def __post_init__(self) -> None:
        _check_record(self, ("equity", "cash", "position_value"), ("at",))


@dataclass(frozen=True)
class CursorRecord:
    """The open time of the last closed bar processed from ``feed``."""

    feed: str
    last_bar: datetime

    def __post_init__(self) -> None:
        _check_record(self, (), ("last_bar",))


_STEP_ITEMS: Final = {
    "orders": OrderRecord, "fills": FillRecord, "positions": PositionRecord, "trades": TradeRecord,
    "ledgers": LedgerRecord, "breakers": BreakerRecord, "equity": EquityRecord, "cursors": CursorRecord,
}


@dataclass(frozen=True)
class StepRecord:
    """Everything one runtime step changed, written by :meth:`StateStore.apply_step` in one transaction."""

    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    positions: list[PositionRecord] = field(default_factory=list)
    trades: list[TradeRecord] = field(default_factory=list)
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
        _check_record(self, (), ("heartbeat_at",))


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
