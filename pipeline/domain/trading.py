"""The trading vocabulary: sides, order types and statuses, and the entities a runtime trades with — ``Order``,
``Fill``, ``Position`` and ``Trade``.

Every entity is frozen, its money exact and its times UTC (:class:`~pipeline.domain.values.Entity`); sides and
statuses are enumerations (a string outside them is refused, naming the field). The state's tables extend these
classes (``OrderRow(Order, table=True)``), and the store hands back these frozen entities, never its rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import model_validator
from sqlmodel import AutoString, Field

from pipeline.domain.values import DecimalText, Entity, UTCDateTime


class Side(StrEnum):
    """The side of an order or a fill."""

    BUY = "buy"
    SELL = "sell"

    @classmethod
    def of(cls, qty: Any) -> Side:
        """The side that changes a position by the signed ``qty``."""
        return cls.BUY if qty > 0 else cls.SELL

    def signed(self, qty: Decimal) -> Decimal:
        """``qty`` (a size) as the change it makes to a position."""
        return qty if self is Side.BUY else -qty


class TradeSide(StrEnum):
    """The direction of a round trip."""

    LONG = "long"
    SHORT = "short"


class OrderType(StrEnum):
    """How an order executes at its venue (the names of ``pipeline.domain.orders.KINDS``)."""

    MARKET = "market"
    LIMIT = "limit"
    """At its limit ``price`` or better."""
    STOP = "stop"
    """A stop-market order: a market order once the market trades at its ``stop_price``."""


class OrderStatus(StrEnum):
    """Where an order is in its life; a status only moves forward (:attr:`rank`)."""

    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELED = "canceled"

    @classmethod
    def working(cls, filled: object) -> OrderStatus:
        """The status of an order still at the venue: partly filled once anything has filled, else new."""
        return cls.PARTIALLY_FILLED if filled else cls.NEW

    @property
    def final(self) -> bool:
        """Whether nothing more can happen to the order (filled, rejected or canceled)."""
        return self in (OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED)

    @property
    def rank(self) -> int:
        """0 for new, 1 once partly filled, 2 when final: an order's stored status never moves to a lower rank."""
        return 2 if self.final else 1 if self is OrderStatus.PARTIALLY_FILLED else 0


class Order(Entity):
    """An order as the runtime knows it now, keyed by its deterministic client order id; ``updated_at``
    defaults to ``created_at``.

    ``kind`` says how it executes: ``price`` is a limit order's limit (a paper order's fill price), ``stop_price``
    a stop order's trigger (a resting protective stop: "sell 0.5 at 41,200 stop", reason ``stop_loss`` or
    ``trailing_stop``); ``expires_at`` is when a day order is cancelled (None: good till cancelled)."""

    client_order_id: str = Field(primary_key=True)
    sleeve: str = Field(index=True)
    symbol: str
    side: Side = Field(sa_type=AutoString)
    qty: Decimal = Field(sa_type=DecimalText)
    price: Decimal | None = Field(default=None, sa_type=DecimalText)
    status: OrderStatus = Field(index=True, sa_type=AutoString)
    reason: str = ""
    venue_order_id: str | None = None
    bar: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(default=None, sa_type=UTCDateTime, nullable=False)
    kind: OrderType = Field(default=OrderType.MARKET, sa_type=AutoString)
    stop_price: Decimal | None = Field(default=None, sa_type=DecimalText)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @model_validator(mode="before")
    @classmethod
    def _updated_when_created(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("updated_at") is None and "created_at" in data:
            return {**data, "updated_at": data["created_at"]}
        return data

    @property
    def signed_qty(self) -> Decimal:
        """The order's quantity as the change it makes to a position."""
        return self.side.signed(self.qty)


class Fill(Entity):
    """A fill as reported by the venue; ``fill_id`` is the venue's id, unique: a fill is never applied twice."""

    fill_id: str = Field(unique=True)
    client_order_id: str = Field(index=True)
    sleeve: str
    symbol: str
    side: Side = Field(sa_type=AutoString)
    qty: Decimal = Field(sa_type=DecimalText)
    price: Decimal = Field(sa_type=DecimalText)
    fee: Decimal = Field(sa_type=DecimalText)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    reason: str = ""


class Position(Entity):
    """A sleeve's position in one symbol as of ``updated_at``."""

    sleeve: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    qty: Decimal = Field(sa_type=DecimalText)
    avg_price: Decimal = Field(sa_type=DecimalText)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Trade(Entity):
    """A closed round trip."""

    sleeve: str
    symbol: str
    side: TradeSide = Field(sa_type=AutoString)
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
