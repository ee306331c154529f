"""The ccxt broker: the engine's orders as market, limit and stop orders at a crypto exchange, the position's
protective stop resting there, and the fills booked from the venue.

Every order carries a deterministic client order id (``tf<crc32 of the sleeve>-<bar open ms>-<n>``; a protective
stop ``…-s``), and before an order is sent the venue is asked whether it already holds that id. So an order whose
response was lost (or that was sent just before a crash) is found instead of being sent twice.

Orders go out through the shared idempotent submission (``runtime.brokers.submission``) and the shared order flow
(``runtime.brokers.routing.VenueRouting``: a new decision replaces the sleeve's working orders, day orders are
cancelled when their day ends, one protective stop rests per position); this module supplies the venue calls
(``CcxtVenue``: place, find by client id, cancel) and the conversions. Orders as ccxt sends them:

* market: ``create_order(symbol, "market", side, amount)``;
* limit: ``create_order(symbol, "limit", side, amount, price)``, good till cancelled (ccxt's default
  ``timeInForce``); a day order is cancelled by the broker when its day ends;
* stop (a stop-market order): ``create_order(symbol, "market", side, amount, None, {"triggerPrice": stop})``, which
  ccxt sends to Binance spot as ``STOP_LOSS`` with ``stopPrice``.

Amounts are cut to the market's amount precision (``amount_to_precision``); limit prices and stop triggers are
put on the market's tick, a limit never worse than the engine asked (a buy rounded down, a sell up), a stop
never later (a sell stop rounded up, a buy stop down). A stop the market has already crossed is refused by the
venue (``OrderImmediatelyFillable``): the position is then closed with a market order.

Errors: insufficient funds and invalid orders (precision, filters) → the order is rejected and its units stop
counting as in flight; network errors, timeouts, rate limits and exchange outages → retried by the retry policy
(``pipeline.retry``: ``max_retries``, ``retry_backoff_s``); when retries run out the order stays unknown and is
looked up by its client id on the next bar (an order whose fate is unknown is recorded as ``new`` without a
venue id, so that a restart looks it up too). Nothing here raises into the runtime loop.

After a restart, ``resume`` takes over the orders on record that are still open (the protective stop among
them), with their stored fills, so their later trades are booked once; ``holdings`` reads the base asset's total
balance for reconciliation.

Fills come from the order's trades; the fee is booked in the quote currency (a fee charged in the base
currency is converted at the fill price; a fee in a third currency, e.g. BNB, is recorded as 0 and logged).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE

from pipeline.domain import utc_from_ms
from pipeline.domain.trading import OrderStatus, OrderType
from pipeline.retry import RetryPolicy, is_transient
from runtime.brokers.base import Working, client_order_id
from runtime.brokers.routing import Step, VenueRouting
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
        params: dict[str, Any] = {"newClientOrderId": order.client_id}
        kind, price = "market", None
        if order.kind is OrderType.LIMIT:
            kind, price = "limit", float(order.price or 0)
        elif order.kind is OrderType.STOP:
            params["triggerPrice"] = float(order.stop_price or 0)
        try:
            placed: dict[str, Any] = self.exchange.create_order(order.symbol, kind, order.side, float(order.qty),
                                                                price, params)
        except REJECTED as exc:
            raise OrderRejected(f"{type(exc).__name__}: {exc}", duplicate="duplicate" in str(exc).lower(),
                                triggered=isinstance(exc, ccxt.OrderImmediatelyFillable)) from exc
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


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


class CcxtBroker(VenueRouting):
    """Market, limit and stop orders through a ccxt exchange object (built and pointed at its venue by the
    caller)."""

    name = "ccxt"
    external_fills = True

    def __init__(self, exchange: Any, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.exchange = exchange
        self.retry = RetryPolicy.from_settings(max_retries, backoff_s, sleep=sleep)
        self.orders: Submission[dict[str, Any]] = Submission(CcxtVenue(exchange), self.retry)
        self.open: dict[str, Working] = {}
        self.seen: set[str] = set()

    # ------------------------------------------------------------------ conversions
    def _size(self, symbol: str, qty: float) -> Decimal:
        if not math.isfinite(qty) or qty <= 0:
            return Decimal(0)
        try:
            if not self.exchange.markets:
                self._call(self.exchange.load_markets, "load markets")
            return Decimal(str(self.exchange.amount_to_precision(symbol, qty)))
        except ccxt.BaseError as exc:
            log.warning("order of %s %s cannot be sized (%s)", qty, symbol, exc)
            return Decimal(0)

    def _tick_size(self, symbol: str, price: Decimal) -> Decimal | None:
        try:
            if not self.exchange.markets:
                self._call(self.exchange.load_markets, "load markets")
            precision = self.exchange.market(symbol)["precision"].get("price")
        except ccxt.BaseError as exc:
            raise VenueUnavailable(str(exc)) from exc
        if precision is None:
            return None
        return _decimal(precision) if self.exchange.precisionMode == TICK_SIZE else Decimal(1).scaleb(-int(precision))

    def _venue_id(self, order: dict[str, Any]) -> str:
        return str(order["id"])

    # ------------------------------------------------------------------ booking
    def _book(self, entry: Working, order: dict[str, Any], step: Step) -> OrderStatus:
        """Book the order's new trades; returns its status (final once it is filled, cancelled, ...)."""
        trades = order.get("trades") or []
        if not trades and _decimal(order.get("filled") or 0) > entry.filled:
            try:
                trades = self._call(
                    lambda: self.exchange.fetch_my_trades(entry.symbol, params={"orderId": entry.venue_id}),
                    "fetch trades")
            except ccxt.BaseError as exc:  # its fills are booked when they can be read; the order stays open
                log.warning("%s: trades of %s could not be read (%s); tried again next bar", entry.sleeve,
                            entry.client_id, exc)
                return OrderStatus.working(entry.filled)
        for trade in trades:
            trade_id = f"{self.exchange.id}:{trade['id']}"
            if trade_id in self.seen:
                continue
            self.seen.add(trade_id)
            price = _decimal(trade["price"])
            fee = _decimal(self._fee(trade, entry.symbol, float(price)))
            at = utc_from_ms(int(trade.get("timestamp") or entry.bar_ms))
            self._fill(entry, step, _decimal(trade["amount"]), price, fee, trade_id, at)
        venue_status = order.get("status")
        if venue_status == "closed" or entry.filled >= abs(entry.qty):
            return OrderStatus.FILLED
        if venue_status in ("canceled", "rejected", "expired"):
            return OrderStatus.CANCELED
        return OrderStatus.working(entry.filled)

    # ------------------------------------------------------------------ reconciliation
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
