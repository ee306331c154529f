"""What the bot's HTTP API answers and pushes: the response models (money as exact decimal strings, times as
ISO 8601 UTC) and the websocket's messages, each built from the state's rows."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.reports.api import Candles
from pipeline.state import (
    PORTFOLIO,
    BotState,
    BreakerEventRow,
    ControlCommand,
    EquityRow,
    FeedCursor,
    FillRow,
    LedgerRow,
    PositionRow,
    RuntimeEvent,
    TradeRow,
)

PAUSED = "paused"
"""The name a ledger lists among its tripped rules while an operator's pause holds."""


def _text(value: object) -> str:
    """An enumerated value as its text (rows read back hold the text, entities the enumeration)."""
    return str(getattr(value, "value", value))


def _stored(row_id: int | None, what: str) -> int:
    """The id of a row read from the state (rows not stored yet have none)."""
    if row_id is None:
        raise ValueError(f"this {what} has no id: only rows read back from the state can be answered")
    return row_id


class Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sleeve(Out):
    """One sleeve's ledger."""

    sleeve: str
    equity: Decimal
    cash: Decimal
    units: Decimal
    paused: bool = Field(description="An operator's pause (or stale data) blocks new entries.")
    breakers: list[str] = Field(description="The circuit breakers latched now (empty: none).")
    bars_seen: int
    updated_at: datetime

    @classmethod
    def of(cls, row: LedgerRow) -> Sleeve:
        tripped = [rule for rule in row.tripped.split(",") if rule]
        return cls(sleeve=row.sleeve, equity=row.equity, cash=row.cash, units=row.units, paused=PAUSED in tripped,
                   breakers=[rule for rule in tripped if rule != PAUSED], bars_seen=row.bars_seen,
                   updated_at=row.updated_at)


class Event(Out):
    """A runtime event (recovery, reconciliation, stale data…)."""

    id: int
    at: datetime
    kind: str
    sleeve: str | None
    detail: str

    @classmethod
    def of(cls, row: RuntimeEvent) -> Event:
        return cls(id=_stored(row.id, "runtime event"), at=row.at, kind=row.kind, sleeve=row.sleeve, detail=row.detail)


class FeedState(Out):
    """A feed the runtime reads (``venue:SYMBOL:timeframe``) and the open time of the last bar it processed."""

    feed: str
    last_bar: datetime

    @classmethod
    def of(cls, row: FeedCursor) -> FeedState:
        return cls(feed=row.feed, last_bar=row.last_bar)


class Status(Out):
    """The runtime at a glance."""

    mode: str = Field(description="paper or live; '-' before the runtime first ran.")
    status: str = Field(description="running, paused or stopped ('no runtime state' before it first ran).")
    reason: str
    started_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None = Field(description="Seconds since the last heartbeat, by the API's clock.")
    equity: Decimal | None = Field(description="The portfolio's equity (the sum of the sleeves) at the last mark.")
    last_mark: datetime | None = Field(description="Time of the last portfolio equity mark (the last bar).")
    portfolio_breakers: list[str] = Field(description="Portfolio-level breakers latched now.")
    sleeves: list[Sleeve]
    feeds: list[FeedState]
    last_reconcile: Event | None = Field(description="The last reconciliation with the venue, if any ran.")


def status_of(state: BotState | None, ledgers: list[LedgerRow], last_mark: EquityRow | None,
              feeds: list[FeedCursor], reconcile: RuntimeEvent | None, now: datetime) -> Status:
    heartbeat = state.heartbeat_at if state is not None else None
    portfolio = next((row for row in ledgers if row.sleeve == PORTFOLIO), None)
    return Status(
        mode=state.mode if state is not None and state.mode else "-",
        status=state.status if state is not None else "no runtime state",
        reason=state.status_reason if state is not None else "",
        started_at=state.started_at if state is not None else None,
        heartbeat_at=heartbeat,
        heartbeat_age_s=None if heartbeat is None else (now - heartbeat).total_seconds(),
        equity=portfolio.equity if portfolio is not None else None,
        last_mark=last_mark.at if last_mark is not None else None,
        portfolio_breakers=[] if portfolio is None else [rule for rule in portfolio.tripped.split(",") if rule],
        sleeves=[Sleeve.of(row) for row in ledgers if row is not portfolio],
        feeds=[FeedState.of(row) for row in feeds],
        last_reconcile=None if reconcile is None else Event.of(reconcile),
    )


class Trade(Out):
    """A closed round trip (PnL net of fees)."""

    id: int
    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    entry_time: datetime
    entry_price: Decimal
    exit_time: datetime
    exit_price: Decimal
    pnl: Decimal
    fees: Decimal
    entry_reason: str
    exit_reason: str
    model_version: str | None

    @classmethod
    def of(cls, row: TradeRow) -> Trade:
        return cls(id=_stored(row.id, "trade"), sleeve=row.sleeve, symbol=row.symbol, side=_text(row.side), qty=row.qty,
                   entry_time=row.entry_time, entry_price=row.entry_price, exit_time=row.exit_time,
                   exit_price=row.exit_price, pnl=row.pnl, fees=row.fees, entry_reason=row.entry_reason,
                   exit_reason=row.exit_reason, model_version=row.model_version)


class Candle(Out):
    timestamp: datetime = Field(description="The bar's open time.")
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandleSeries(Out):
    """The last closed bars of one series, oldest first."""

    venue: str
    symbol: str
    timeframe: str
    stored_timeframe: str = Field(description="The stored timeframe the bars come from (resampled if it differs).")
    bars: list[Candle]

    @classmethod
    def of(cls, candles: Candles) -> CandleSeries:
        frame = candles.bars
        bars = [Candle(timestamp=t.to_pydatetime(), open=o, high=h, low=lo, close=c, volume=v)
                for t, o, h, lo, c, v in zip(frame["timestamp"], frame["open"].astype(float),
                                             frame["high"].astype(float), frame["low"].astype(float),
                                             frame["close"].astype(float), frame["volume"].astype(float),
                                             strict=True)]
        return cls(venue=candles.venue, symbol=candles.symbol, timeframe=str(candles.timeframe),
                   stored_timeframe=str(candles.stored_timeframe), bars=bars)


class EquityPoint(Out):
    at: datetime
    equity: Decimal
    cash: Decimal
    position_value: Decimal

    @classmethod
    def of(cls, row: EquityRow) -> EquityPoint:
        return cls(at=row.at, equity=row.equity, cash=row.cash, position_value=row.position_value)


class EquityCurve(Out):
    """The last equity marks of a sleeve (or the portfolio), oldest first."""

    sleeve: str
    points: list[EquityPoint]


class Position(Out):
    sleeve: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    updated_at: datetime

    @classmethod
    def of(cls, row: PositionRow) -> Position:
        return cls(sleeve=row.sleeve, symbol=row.symbol, qty=row.qty, avg_price=row.avg_price,
                   updated_at=row.updated_at)


class BreakerEvent(Out):
    """A circuit breaker that tripped or was released (``sleeve`` is ``portfolio`` for the portfolio's)."""

    id: int
    sleeve: str
    at: datetime
    rule: str
    value: float
    threshold: float
    action: Literal["trip", "release"]

    @classmethod
    def of(cls, row: BreakerEventRow) -> BreakerEvent:
        return cls(id=_stored(row.id, "breaker event"), sleeve=row.sleeve, at=row.at, rule=row.rule, value=row.value,
                   threshold=row.threshold, action=row.action)


class Command(Out):
    """A control command and whether the runtime has carried it out."""

    id: int
    command: str
    sleeve: str | None = Field(description="The sleeve it applies to; null: every sleeve (and the portfolio).")
    source: str
    created_at: datetime
    state: Literal["pending", "acknowledged"]
    acknowledged_at: datetime | None
    result: str | None = Field(description="What the runtime did, once acknowledged.")

    @classmethod
    def of(cls, row: ControlCommand) -> Command:
        return cls(id=_stored(row.id, "control command"), command=row.command, sleeve=row.sleeve, source=row.source,
                   created_at=row.created_at, state="pending" if row.acknowledged_at is None else "acknowledged",
                   acknowledged_at=row.acknowledged_at, result=row.result)


class SleeveChoice(BaseModel):
    """The body of a control command that may target one sleeve."""

    model_config = ConfigDict(extra="forbid")

    sleeve: str | None = Field(None, description="One sleeve (as /api/status lists them); omitted: every sleeve.")


class Problem(Out):
    """An error: what is wrong, and what to do."""

    detail: str


# ------------------------------------------------------------------------------------------------ websocket


class FillMessage(Out):
    """``fill``: a fill the runtime booked."""

    type: Literal["fill"] = "fill"
    id: int
    fill_id: str
    client_order_id: str
    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    at: datetime
    reason: str

    @classmethod
    def of(cls, row: FillRow) -> FillMessage:
        return cls(id=_stored(row.id, "fill"), fill_id=row.fill_id, client_order_id=row.client_order_id,
                   sleeve=row.sleeve, symbol=row.symbol, side=_text(row.side), qty=row.qty, price=row.price,
                   fee=row.fee, at=row.at, reason=row.reason)


class BreakerMessage(BreakerEvent):
    """``breaker``: a breaker tripped or was released."""

    type: Literal["breaker"] = "breaker"

    @classmethod
    def of(cls, row: BreakerEventRow) -> BreakerMessage:
        return cls(**BreakerEvent.of(row).model_dump())


class HeartbeatMessage(Out):
    """``heartbeat``: the runtime's heartbeat moved (it is alive), with its status then."""

    type: Literal["heartbeat"] = "heartbeat"
    at: datetime
    status: str
    mode: str

    @classmethod
    def of(cls, state: BotState) -> HeartbeatMessage:
        if state.heartbeat_at is None:
            raise ValueError("the runtime has no heartbeat yet: there is no heartbeat message to send")
        return cls(at=state.heartbeat_at, status=state.status, mode=state.mode or "-")


class HelloMessage(Out):
    """``hello``: the first message of a connection; everything booked after it is pushed."""

    type: Literal["hello"] = "hello"
    heartbeat_at: datetime | None
    status: str
