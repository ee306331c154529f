"""The ccxt broker: the engine's orders as market orders at a crypto exchange, its fills booked from the venue.

Every order carries a deterministic client order id (``tf<crc32 of the sleeve>-<bar open ms>-<n>``), and before
an order is sent the venue is asked whether it already holds that id. So an order whose response was lost
(or that was sent just before a crash) is found instead of being sent twice.

Orders go out through the shared idempotent submission (``runtime.brokers.submission``); this module supplies
the venue calls (``CcxtVenue``: place, find by client id, cancel) and the conversions.

Errors: insufficient funds and invalid orders (precision, filters) → the order is rejected and its units stop
counting as in flight; network errors, timeouts, rate limits and exchange outages → retried by the retry policy
(``pipeline.retry``: ``max_retries``, ``retry_backoff_s``); when retries run out the order stays unknown and is
looked up by its client id on the next bar (an order whose fate is unknown is recorded as ``new`` without a
venue id, so that a restart looks it up too). Nothing here raises into the runtime loop.

After a restart, ``resume`` takes over the orders on record that are still open, with their stored fills, so
their later trades are booked once; ``holdings`` reads the base asset's total balance for reconciliation.

Fills come from the order's trades; the fee is booked in the quote currency (a fee charged in the base
currency is converted at the fill price; a fee in a third currency, e.g. BNB, is recorded as 0 and logged).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt

from pipeline.domain import utc_from_ms
from pipeline.domain.trading import Fill, Order, OrderStatus, Side
from pipeline.engine.core import Engine, Intent
from pipeline.retry import RetryPolicy, is_transient
from runtime.brokers.base import VenueRouting, client_order_id, open_on_record
from runtime.brokers.submission import OrderRejected, OrderRequest, Submission, VenueUnavailable

log = logging.getLogger(__name__)

REJECTED = (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadSymbol, ccxt.BadRequest)
"""Refusals of an order: nothing was placed, and sending it again would be refused too."""

__all__ = ["CcxtBroker", "CcxtVenue", "client_order_id"]


class CcxtVenue:
    """The order calls of a ccxt exchange for ``runtime.brokers.submission`` (one attempt each)."""

    errors: tuple[type[BaseException], ...] = (ccxt.BaseError,)

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.name = str(getattr(exchange, "id", "ccxt"))

    def transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def place(self, order: OrderRequest) -> dict[str, Any]:
        kind, price = ("market", None) if order.price is None else ("limit", float(order.price))
        try:
            placed: dict[str, Any] = self.exchange.create_order(
                order.symbol, kind, order.side, float(order.qty), price, {"newClientOrderId": order.client_id})
        except REJECTED as exc:
            raise OrderRejected(f"{type(exc).__name__}: {exc}", duplicate="duplicate" in str(exc).lower()) from exc
        return placed

    def find(self, client_id: str, symbol: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.exchange.fetch_order(None, symbol, {"origClientOrderId": client_id})
        except (ccxt.OrderNotFound, ccxt.InvalidOrder):
            return None
        return found

    def cancel(self, venue_id: str, symbol: str) -> None:
        with contextlib.suppress(ccxt.OrderNotFound):  # filled or gone meanwhile
            self.exchange.cancel_order(venue_id, symbol)


@dataclass
class _Open:
    sleeve: str
    symbol: str
    venue_id: str
    client_id: str
    qty: float  # signed, as ordered
    filled: float
    reason: str
    bar_ms: int


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


class CcxtBroker(VenueRouting):
    """Market orders through a ccxt exchange object (built and pointed at its venue by the caller)."""

    name = "ccxt"
    external_fills = True

    def __init__(self, exchange: Any, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.exchange = exchange
        self.retry = RetryPolicy.from_settings(max_retries, backoff_s, sleep=sleep)
        self.orders: Submission[dict[str, Any]] = Submission(CcxtVenue(exchange), self.retry)
        self.open: dict[str, _Open] = {}
        self._seen_trades: set[str] = set()

    # ------------------------------------------------------------------ orders
    def _send(self, sleeve: str, symbol: str, intent: Intent, engine: Engine, client_id: str, bar_ms: int,
              orders: list[Order], fills: list[Fill]) -> None:
        side = Side.of(intent.qty)
        at = utc_from_ms(bar_ms)
        try:
            if not self.exchange.markets:
                self._call(self.exchange.load_markets, "load markets")
            amount = Decimal(str(self.exchange.amount_to_precision(symbol, abs(intent.qty))))
        except ccxt.BaseError as exc:
            amount = Decimal(0)
            log.warning("%s: order of %s %s cannot be sized (%s)", sleeve, intent.qty, symbol, exc)
        if amount <= 0:
            engine.release(intent.qty)
            orders.append(self._record(client_id, sleeve, symbol, side, abs(intent.qty), OrderStatus.REJECTED,
                                       f"{intent.reason}: below the venue's amount precision", None, at))
            return
        signed = float(amount) if side == "buy" else -float(amount)
        if abs(signed) < abs(intent.qty):
            engine.release(intent.qty - signed)  # precision trimmed the order
        sent = self.orders.submit(OrderRequest(client_id, symbol, side, amount))
        if sent.outcome == "rejected":
            engine.release(signed)
            orders.append(self._record(client_id, sleeve, symbol, side, amount, OrderStatus.REJECTED,
                                       f"{intent.reason}: {sent.reason}", None, at))
            log.warning("%s: %s %s rejected by the venue: %s", sleeve, side, symbol, sent.reason)
            return
        if sent.order is None:
            log.error("%s: %s %s could not be sent (%s); looked up again next bar", sleeve, side, symbol, sent.reason)
            self._unknown(sleeve, symbol, side, float(amount), client_id, intent.reason, bar_ms, orders)
            return
        entry = _Open(sleeve, symbol, str(sent.order["id"]), client_id, signed, 0.0, intent.reason, bar_ms)
        self.open[client_id] = entry
        self._track(entry, sent.order, engine, orders, fills)

    def _unknown(self, sleeve: str, symbol: str, side: Side, amount: float, client_id: str, reason: str, bar_ms: int,
                 orders: list[Order]) -> None:
        """An order that may or may not be at the venue: on record as ``new`` and looked up from the next bar."""
        self.open[client_id] = _Open(sleeve, symbol, "", client_id, amount if side == "buy" else -amount, 0.0, reason,
                                     bar_ms)
        orders.append(self._record(client_id, sleeve, symbol, side, amount, OrderStatus.NEW, reason, None,
                                   utc_from_ms(bar_ms)))

    def _end(self, entry: _Open, order: dict[str, Any], engine: Engine) -> None:
        """The order is done at the venue: what it will never fill stops counting as in flight."""
        if order.get("status") in ("canceled", "rejected", "expired"):
            engine.release(entry.qty - (entry.filled if entry.qty > 0 else -entry.filled))
        del self.open[entry.client_id]

    def _book(self, entry: _Open, order: dict[str, Any], engine: Engine, orders: list[Order],
              fills: list[Fill]) -> bool:
        """Book the order's new fills; True when the order is done at the venue (filled, cancelled, ...)."""
        trades = order.get("trades") or []
        side = Side.of(entry.qty)
        if not trades and float(order.get("filled") or 0) > entry.filled:
            try:
                trades = self._call(
                    lambda: self.exchange.fetch_my_trades(entry.symbol, params={"orderId": entry.venue_id}),
                    "fetch trades")
            except ccxt.BaseError as exc:  # its fills are booked when they can be read; the order stays open
                log.warning("%s: trades of %s could not be read (%s); tried again next bar", entry.sleeve,
                            entry.client_id, exc)
                orders.append(self._record_of(entry, OrderStatus.working(entry.filled), entry.reason))
                return False
        for trade in trades:
            trade_id = f"{self.exchange.id}:{trade['id']}"
            if trade_id in self._seen_trades:
                continue
            self._seen_trades.add(trade_id)
            qty, price = float(trade["amount"]), float(trade["price"])
            fee = self._fee(trade, entry.symbol, price)
            engine.apply_fill(qty if side == "buy" else -qty, price, fee, entry.reason)
            entry.filled += qty
            at = utc_from_ms(int(trade.get("timestamp") or entry.bar_ms))
            fills.append(Fill(fill_id=trade_id, client_order_id=entry.client_id, sleeve=entry.sleeve,
                                    symbol=entry.symbol, side=side, qty=_decimal(qty), price=_decimal(price),
                                    fee=_decimal(fee), at=at, reason=entry.reason))
        venue_status = order.get("status")
        complete = venue_status == "closed" or entry.filled >= abs(entry.qty) * (1 - 1e-9)
        ended = venue_status in ("canceled", "rejected", "expired")
        if complete:
            status = OrderStatus.FILLED
        elif ended:
            status = OrderStatus.CANCELED
        else:
            status = OrderStatus.working(entry.filled)
        orders.append(self._record_of(entry, status, entry.reason))
        return complete or ended

    def _venue_id(self, order: dict[str, Any]) -> str:
        return str(order["id"])

    def _record_of(self, entry: _Open, status: OrderStatus, reason: str) -> Order:
        return self._record(entry.client_id, entry.sleeve, entry.symbol, Side.of(entry.qty), abs(entry.qty), status,
                            reason, entry.venue_id or None, utc_from_ms(entry.bar_ms))

    # ------------------------------------------------------------------ restart and reconciliation
    def resume(self, orders: Sequence[Order], fills: Sequence[Fill]) -> None:
        """Take over the orders on record still open, with their stored fills (booked again never)."""
        for found in open_on_record(orders, fills):
            row = found.order
            if row.client_order_id in self.open:
                continue
            self.open[row.client_order_id] = _Open(row.sleeve, row.symbol, row.venue_order_id or "",
                                                   row.client_order_id, float(found.signed_qty), float(found.filled),
                                                   row.reason, found.bar_ms)
            self._seen_trades |= found.fill_ids

    def holdings(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        """The total balance (free and locked) of each symbol's base asset; ``VenueUnavailable`` when the
        balances cannot be read."""
        try:
            balance = self._call(self.exchange.fetch_balance, "fetch balance")
        except ccxt.BaseError as exc:
            raise VenueUnavailable(f"{self.exchange.id}: balances could not be read ({type(exc).__name__}: {exc})"
                                   ) from exc
        totals = balance.get("total") or {}
        return {symbol: _decimal(totals.get(symbol.partition("/")[0]) or 0) for symbol in symbols}

    # ------------------------------------------------------------------ helpers
    def _call(self, call: Callable[[], Any], what: str) -> Any:
        """``call`` through the retry policy; the last ccxt error is raised when the policy gives up, and a
        rejection at once."""
        return self.retry.call(call, what=f"{self.orders.venue.name} {what}", give_up=lambda exc, _attempts: exc)

    def _fee(self, trade: dict[str, Any], symbol: str, price: float) -> float:
        fee = trade.get("fee") or {}
        cost = float(fee.get("cost") or 0.0)
        base, _, quote = symbol.partition("/")
        currency = fee.get("currency")
        if not cost or currency in (None, quote.split(":")[0]):
            return cost
        if currency == base:
            return cost * price
        log.warning("fee of %s %s on %s booked as 0 (no conversion to %s)", cost, currency, symbol, quote)
        return 0.0

    @staticmethod
    def _record(client_id: str, sleeve: str, symbol: str, side: Side, qty: float | Decimal, status: OrderStatus,
                reason: str, venue_id: str | None, at: Any) -> Order:
        return Order(client_order_id=client_id, sleeve=sleeve, symbol=symbol, side=side, qty=_decimal(qty),
                           price=None, status=status, reason=reason, venue_order_id=venue_id, bar=at, created_at=at)


