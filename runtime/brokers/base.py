"""The broker protocol: how fills decided by the engine become orders and fills on record.

Shared by every broker: the deterministic client order id, the error a venue that cannot be asked raises
(``VenueUnavailable``), and ``open_on_record``, which turns the orders and fills a state store holds into what a
broker needs to take over its open orders after a restart; and ``VenueRouting``, the order flow of the venue
brokers.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from pipeline.domain.trading import Fill, Order, OrderStatus
from pipeline.engine.core import Engine, Intent
from runtime.brokers.submission import VenueUnavailable

if TYPE_CHECKING:
    from runtime.brokers.submission import Submission

log = logging.getLogger(__name__)

OPEN_STATUSES = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})
"""Order statuses on record that a venue may still fill."""


def client_order_id(sleeve: str, bar_ms: int, number: int) -> str:
    """The id of a sleeve's ``number``-th order at the bar opening at ``bar_ms`` (epoch ms).

    Deterministic, so a bar processed again after a crash produces the same ids and a venue that already holds
    the order is found rather than sent a second one; at most 36 characters of ``[A-Za-z0-9_-]`` (Binance's
    rule; Alpaca allows 128).
    """
    return f"tf{zlib.crc32(sleeve.encode()):08x}-{bar_ms}-{number}"


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


class VenueRouting:
    """The order flow every venue broker shares: follow the sleeve's open orders (new fills, their end), then
    send the engine's new intents under deterministic client ids, cancelling opposing open orders first.

    A venue broker provides ``open`` (its open orders by client id, each with ``sleeve``, ``symbol``,
    ``client_id``, ``venue_id``, a signed ``qty``, the ``filled`` units booked and the ``reason``), ``orders`` (its
    idempotent submission, ``runtime.brokers.submission``), ``_send`` (a new order), ``_book`` and ``_end`` (the
    fills and the end of an order the venue answered with), ``_venue_id`` (that order's id at the venue) and
    ``_record_of`` (an open order's record).
    """

    open: dict[str, Any]
    orders: Submission[Any]

    def route(self, sleeve: str, symbol: str, engine: Engine, bar_ms: int) -> tuple[list[Order],
                                                                                    list[Fill]]:
        """Send the engine's new intents, collect fills of earlier open orders, book all fills in the engine."""
        orders: list[Order] = []
        fills: list[Fill] = []
        for entry in list(self.open.values()):
            if entry.sleeve == sleeve:
                self._follow(entry, engine, orders, fills)
        for number, intent in enumerate(engine.take_intents()):
            intent = self._cancel_opposing(sleeve, intent, engine, orders, fills)
            if intent.qty == 0.0:
                continue
            self._send(sleeve, symbol, intent, engine, client_order_id(sleeve, bar_ms, number), bar_ms, orders,
                       fills)
        return orders, fills

    def settle(self, sleeve: str, symbol: str, fills: Any) -> tuple[list[Order], list[Fill]]:
        """Venue fills were recorded when routed; the engine's own fill frame adds nothing."""
        return [], []

    def _follow(self, entry: Any, engine: Engine, orders: list[Order], fills: list[Fill]) -> None:
        """Look at an order placed earlier: new fills, or its end (filled, cancelled, rejected, expired)."""
        try:
            order = self.orders.find(entry.client_id, entry.symbol)
        except VenueUnavailable as exc:
            log.warning("%s: order %s could not be looked up (%s); tried again next bar", entry.sleeve,
                        entry.client_id, exc)
            return
        if order is None:
            if not entry.venue_id:  # it never reached the venue: its units stop counting as in flight
                engine.release(float(entry.qty - (entry.filled if entry.qty > 0 else -entry.filled)))
                del self.open[entry.client_id]
                orders.append(self._record_of(entry, OrderStatus.REJECTED, f"{entry.reason}: never reached the venue"))
            return
        self._track(entry, order, engine, orders, fills)

    def _track(self, entry: Any, order: Any, engine: Engine, orders: list[Order], fills: list[Fill]) -> None:
        """Take the venue's answer about an open order: its venue id, its new fills and, once done, its end."""
        entry.venue_id = self._venue_id(order)
        if self._book(entry, order, engine, orders, fills):
            self._end(entry, order, engine)

    def _cancel_opposing(self, sleeve: str, intent: Intent, engine: Engine, orders: list[Order],
                         fills: list[Fill]) -> Intent:
        """Cancel this sleeve's open orders on the other side before turning around.

        The engine sizes an order against its position *plus* the units still in flight; when an exit meets a
        buy that is only partly filled, the unfilled rest is cancelled at the venue instead, and the exit shrinks
        by that rest (so only what is held is sold, and nothing unfilled can arrive afterwards).
        """
        qty = intent.qty
        for entry in [e for e in self.open.values() if e.sleeve == sleeve and float(e.qty) * intent.qty < 0]:
            if not entry.venue_id:
                continue
            failure = self.orders.cancel(entry.venue_id, entry.symbol)  # gone meanwhile: following it books that
            if failure is not None:
                log.warning("%s: could not cancel %s (%s); the exit is sent as decided", sleeve, entry.client_id,
                            failure)
                continue
            before = entry.filled
            self._follow(entry, engine, orders, fills)
            rest = float(abs(entry.qty) - max(entry.filled, before))
            if entry.client_id not in self.open and rest > 0:
                qty += rest if entry.qty > 0 else -rest  # the exit no longer covers units that will not come
        if qty * intent.qty <= 0:
            return Intent(intent.number, intent.bar, 0.0, intent.reference_price, intent.reason)
        return Intent(intent.number, intent.bar, qty, intent.reference_price, intent.reason)

    def _send(self, sleeve: str, symbol: str, intent: Intent, engine: Engine, client_id: str, bar_ms: int,
              orders: list[Order], fills: list[Fill]) -> None:
        raise NotImplementedError

    def _book(self, entry: Any, order: Any, engine: Engine, orders: list[Order], fills: list[Fill]) -> bool:
        raise NotImplementedError

    def _end(self, entry: Any, order: Any, engine: Engine) -> None:
        raise NotImplementedError

    def _venue_id(self, order: Any) -> str:
        raise NotImplementedError

    def _record_of(self, entry: Any, status: OrderStatus, reason: str) -> Order:
        raise NotImplementedError
