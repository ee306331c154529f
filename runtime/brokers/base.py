"""The broker protocol: how orders decided by the engine become orders and fills on record.

Shared by every broker: the deterministic client order ids (``client_order_id`` for the engine's orders,
``protective_order_id`` for a position's resting stop), the error a venue that cannot be asked raises
(``VenueUnavailable``), ``open_on_record``, which turns the orders and fills a state store holds into what a
broker needs to take over its open orders after a restart, ``Working``, an order a venue broker follows, and
``VenueView``, what a venue holds for reconciliation (``runtime.reconcile``): its open orders, its fills since a
time, its holdings and its cash. ``VenueRouting``, the one order flow of the venue brokers, lives in
``runtime.brokers.routing``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

import pandas as pd

from pipeline.domain import utc_from_ms
from pipeline.domain.trading import Fill, Order, OrderStatus, OrderType, Side
from pipeline.engine.core import Engine

OPEN_STATUSES = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})
"""Order statuses on record that a venue may still fill."""
PROTECTIVE_STOP, PROTECTIVE_EXIT = "s", "x"
"""The last part of a protective stop's client order id, and of the market exit sent instead of a stop the
market had already crossed when it was placed."""


def _sleeve_tag(sleeve: str) -> str:
    return f"tf{zlib.crc32(sleeve.encode()):08x}"


def client_order_id(sleeve: str, bar_ms: int, number: int) -> str:
    """The id of a sleeve's ``number``-th order at the bar opening at ``bar_ms`` (epoch ms).

    Deterministic, so a bar processed again after a crash produces the same ids and a venue that already holds
    the order is found rather than sent a second one; at most 36 characters of ``[A-Za-z0-9_-]`` (Binance's
    rule; Alpaca allows 128).
    """
    return f"{_sleeve_tag(sleeve)}-{bar_ms}-{number}"


def protective_order_id(sleeve: str, bar_ms: int, *, exit_now: bool = False) -> str:
    """The id of the protective stop a sleeve places after the bar opening at ``bar_ms`` (``…-s``), or, with
    ``exit_now``, of the market exit sent instead when the market has already crossed the stop (``…-x``).

    At most one is placed per sleeve and bar, so the id is deterministic like ``client_order_id``'s."""
    return f"{_sleeve_tag(sleeve)}-{bar_ms}-{PROTECTIVE_EXIT if exit_now else PROTECTIVE_STOP}"


def is_ours(client_id: str, sleeves: Sequence[str]) -> bool:
    """Whether ``client_id`` is the id of an order one of ``sleeves`` sends (their ``tf<crc32>-`` tag)."""
    return any(client_id.startswith(f"{_sleeve_tag(sleeve)}-") for sleeve in sleeves)


def is_protective(client_id: str) -> bool:
    """Whether ``client_id`` names a protective order (a resting stop or the market exit that replaced it)."""
    return client_id.rpartition("-")[2] in (PROTECTIVE_STOP, PROTECTIVE_EXIT)


@dataclass(frozen=True)
class OpenOnRecord:
    """An order on record that a venue may still fill, with what was already booked of it."""

    order: Order
    filled: Decimal
    """Units of it booked so far (the sum of its stored fills)."""
    notional: Decimal
    """Sum of quantity times price of its stored fills."""
    fill_ids: frozenset[str]
    bar_ms: int
    """Open time (epoch ms) of the bar that sent it."""

    @property
    def signed_qty(self) -> Decimal:
        return self.order.signed_qty


def open_on_record(orders: Sequence[Order], fills: Sequence[Fill]) -> list[OpenOnRecord]:
    """The orders among ``orders`` still open (status new or partially filled), each with its stored fills."""
    by_order: dict[str, list[Fill]] = {}
    for fill in fills:
        by_order.setdefault(fill.client_order_id, []).append(fill)
    found = []
    for order in orders:
        if order.status not in OPEN_STATUSES:
            continue
        booked = by_order.get(order.client_order_id, [])
        found.append(OpenOnRecord(
            order=order,
            filled=sum((f.qty for f in booked), Decimal(0)),
            notional=sum((f.qty * f.price for f in booked), Decimal(0)),
            fill_ids=frozenset(f.fill_id for f in booked),
            bar_ms=int(pd.Timestamp(order.bar).value // 1_000_000),
        ))
    return found


@dataclass
class Working:
    """An order a venue broker follows until it ends: what was ordered (``qty`` signed units of ``kind``, at
    ``price`` for a limit or ``stop_price`` for a stop, cancelled by the broker at ``expires_ms`` when set) and
    what of it was booked (``filled`` units for ``notional``). ``venue_id`` is empty while its fate is unknown."""

    sleeve: str
    symbol: str
    venue_id: str
    client_id: str
    qty: Decimal
    reason: str
    bar_ms: int
    kind: OrderType = OrderType.MARKET
    price: Decimal | None = None
    stop_price: Decimal | None = None
    expires_ms: int | None = None
    filled: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)

    @property
    def side(self) -> Side:
        return Side.of(self.qty)

    @property
    def rest(self) -> Decimal:
        """The signed units still to fill."""
        return self.qty - self.filled if self.qty > 0 else self.qty + self.filled

    @property
    def protective(self) -> bool:
        """A position's resting stop (or the exit that replaced it): never counted by the engine in flight."""
        return is_protective(self.client_id)

    def record(self, status: OrderStatus, reason: str | None = None) -> Order:
        """This order on record with ``status`` (and ``reason``, its own by default)."""
        at = utc_from_ms(self.bar_ms)
        expires = None if self.expires_ms is None else utc_from_ms(self.expires_ms)
        return Order(client_order_id=self.client_id, sleeve=self.sleeve, symbol=self.symbol, side=self.side,
                     qty=abs(self.qty), price=self.price, status=status, reason=self.reason if reason is None else
                     reason, venue_order_id=self.venue_id or None, bar=at, created_at=at, kind=self.kind,
                     stop_price=self.stop_price, expires_at=expires)

    @classmethod
    def of_record(cls, found: OpenOnRecord) -> Working:
        """An order on record still open, taken over after a restart with what was booked of it."""
        row = found.order
        expires = None if row.expires_at is None else _epoch_ms(row.expires_at)
        return cls(row.sleeve, row.symbol, row.venue_order_id or "", row.client_order_id, found.signed_qty,
                   row.reason, found.bar_ms, row.kind, row.price, row.stop_price, expires, found.filled,
                   found.notional)


def plain(value: Decimal) -> str:
    """A quantity or price written plainly, the same whatever its venue wrote: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class VenueOrder:
    """An order open at a venue, whoever placed it: ``qty`` units (a size) on ``side``, ``filled`` of them so far;
    ``price`` a limit's, ``stop_price`` a stop's trigger."""

    venue_id: str
    client_id: str
    symbol: str
    side: Side
    kind: str
    qty: Decimal
    filled: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None

    def describe(self) -> str:
        at = f" at {plain(self.price)}" if self.price else ""
        at += f" triggered at {plain(self.stop_price)}" if self.stop_price else ""
        return (f"{self.side} {plain(self.qty)} {self.symbol} {self.kind}{at} (filled {plain(self.filled)}; "
                f"client id {self.client_id!r}, venue id {self.venue_id})")


@dataclass(frozen=True)
class VenueFill:
    """A fill a venue made, whoever's order it was, as the broker books it: ``qty`` units (a size: what it moved in
    the holdings, so net of a fee taken from them) at ``price``, ``fee`` in the quote currency, at ``at_ms`` (the
    venue's epoch ms). ``fill_id`` is the id the broker books a fill under when it books fills one by one (ccxt);
    ``order_filled`` is the order's cumulative filled quantity after this fill, in the units the broker books (the
    sum of the order's booked fills' ``qty``), when the broker books an order's fills cumulatively (Alpaca).
    ``client_id`` is its order's (empty when unknown)."""

    fill_id: str
    venue_order_id: str
    client_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    at_ms: int
    order_filled: Decimal | None = None

    @property
    def cash_effect(self) -> Decimal:
        """What the fill did to the cash in the quote currency: a buy pays, a sell receives; the fee is paid."""
        notional = self.qty * self.price
        return (-notional if self.side is Side.BUY else notional) - self.fee

    def describe(self) -> str:
        return (f"{self.side} {plain(self.qty)} {self.symbol} @ {plain(self.price)} fee {plain(self.fee)} at "
                f"{utc_from_ms(self.at_ms):%Y-%m-%d %H:%M:%S} UTC (order {self.venue_order_id}"
                + (f", client id {self.client_id!r})" if self.client_id else ")"))


@dataclass(frozen=True)
class VenueView:
    """What a venue holds for reconciliation: the orders open on the symbols asked, their fills from a time on,
    the units held per symbol, the cash per quote currency (``currency_of`` a symbol). ``steady`` is False when
    the cash changed while the view was being read (a fill landed meanwhile): holdings and cash are then compared
    at the next reconciliation. ``read_to_ms`` gives, for a symbol whose fills were read only in part (the broker's
    page limit was reached), the venue time up to which they were read (the next view starts there); every other
    symbol's fills were read to the end."""

    open_orders: tuple[VenueOrder, ...]
    fills: tuple[VenueFill, ...]
    holdings: Mapping[str, Decimal]
    cash: Mapping[str, Decimal]
    currency_of: Mapping[str, str]
    steady: bool = True
    read_to_ms: Mapping[str, int] = field(default_factory=dict)


def _epoch_ms(at: datetime) -> int:
    return int(pd.Timestamp(at).value // 1_000_000)


class Broker(Protocol):
    """Where a sleeve's orders go and where its fills come from."""

    name: str
    external_fills: bool
    """True when fills come from a venue (the engine then sends intents instead of simulating fills)."""

    def route(self, sleeve: str, symbol: str, engine: Engine, bar_ms: int) -> tuple[list[Order],
                                                                                    list[Fill]]:
        """After each bar: send the engine's new orders, book the venue's fills in it; returns the records."""
        ...

    def settle(self, sleeve: str, symbol: str, fills: pd.DataFrame) -> tuple[list[Order], list[Fill]]:
        """Orders and fills for the engine fills of one step (columns as ``EngineResult.fills``)."""
        ...

    def resume(self, orders: Sequence[Order], fills: Sequence[Fill]) -> None:
        """After a restart: take over the orders on record still open (status new or partially filled), with
        the fills already booked (``fills``), so that their later fills are booked exactly once."""
        ...

    def holdings(self, symbols: Sequence[str]) -> dict[str, Decimal] | None:
        """Units held at the venue per symbol (0 when none); None when there is no venue (paper).

        Raises ``VenueUnavailable`` when the venue cannot be asked.
        """
        ...

    def venue_view(self, symbols: Sequence[str], since_ms: Mapping[str, int], known: Mapping[str, str]
                   ) -> VenueView | None:
        """The venue's open orders on ``symbols`` (placed by anyone), the fills of each symbol from its
        ``since_ms`` (epoch ms, venue time) on, the holdings of ``symbols`` and the cash of their quote currencies;
        None when there is no venue (paper). ``known`` gives the client id of venue order ids the caller knows (the
        others are asked for).

        Raises ``VenueUnavailable`` when the venue cannot be asked.
        """
        ...

    def catch_up(self, sleeve: str, symbol: str, engine: Engine) -> tuple[list[Order], list[Fill]]:
        """Between bars: book the fills the venue made of the sleeve's working orders since they were last looked
        at (nothing is sent); returns the records. A sleeve without a bar in this process books them at its next
        bar instead."""
        ...
