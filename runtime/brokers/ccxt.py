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
balance for reconciliation, and ``venue_view`` what the reconciliation compares (``runtime.reconcile``): the
open orders of each symbol (``fetch_open_orders``), its trades from its own time on (``fetch_my_trades`` with
``since``, then page after page: by trade id at Binance, see ``CcxtBroker._trades``), the base and quote assets'
total balances (free and locked: ``fetch_balance``, read before and after the rest, so a fill landing meanwhile is
seen), and the client id of each traded order.

Fills come from the order's trades, booked as what they did to the account's balances. A fee charged in the quote
currency is booked as it is. A fee charged in the base currency (Binance's default: the fee is taken from the asset
received, so a buy of 1 BTC with a fee of 0.001 BTC leaves 0.999 BTC and costs the full quote) is booked exactly:
a fee ``f`` on a fill of ``q`` at ``p`` is a fill of ``q - f`` units (a buy; ``q + f`` for a sell) with a fee of
``f * p`` in the quote, so the ledger's position and cash move as the venue's balances do; the order itself still
counts ``q`` as filled (its status, the units left to fill and those in flight are the venue's). The fills the
reconciliation reads (``venue_view``) are converted the same way, so they compare with the ledgers. A fee in a third
currency (e.g. BNB) is recorded as 0 and logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import Any

import ccxt
from ccxt.base.decimal_to_precision import TICK_SIZE

from pipeline.domain import utc_from_ms
from pipeline.domain.trading import OrderStatus, OrderType, Side
from pipeline.retry import RetryPolicy, describe, is_transient
from runtime.brokers.base import VenueFill, VenueOrder, VenueView, Working, client_order_id
from runtime.brokers.routing import Step, VenueRouting
from runtime.brokers.submission import OrderRejected, OrderRequest, Submission, VenueUnavailable

log = logging.getLogger(__name__)

TRADES_PAGE = 500
"""Trades asked per ``fetch_my_trades`` call (Binance's default page); the next page starts at the last one's time."""
MAX_PAGES = 20
"""Pages of trades one reconciliation reads per symbol at most (the rest is read by the next one)."""
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
        self.routed: dict[str, int] = {}
        self._client_ids: dict[str, str] = {}
        """The client id of each venue order id met (ids never change)."""

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
            price, amount = _decimal(trade["price"]), _decimal(trade["amount"])
            units, fee = self._booked(trade, entry.symbol, entry.side)
            at = utc_from_ms(int(trade.get("timestamp") or entry.bar_ms))
            inflight = step.engine.ledger.inflight
            self._fill(entry, step, units, price, fee, trade_id, at)
            if units != amount:  # a fee taken from the base: the order filled ``amount`` at the venue all the same
                entry.filled += amount - units
                if not entry.protective:
                    step.engine.ledger.inflight = _less_in_flight(inflight, amount if entry.qty > 0 else -amount)
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
            raise VenueUnavailable(f"{self.exchange.id}: balances could not be read ({describe(exc)})"
                                   ) from exc
        totals = balance.get("total") or {}
        return {symbol: _decimal(totals.get(symbol.partition("/")[0]) or 0) for symbol in symbols}

    def venue_view(self, symbols: Sequence[str], since_ms: Mapping[str, int], known: Mapping[str, str]
                   ) -> VenueView:
        """The open orders of ``symbols``, each one's trades from its ``since_ms`` on, the total balances of their
        base and quote assets; ``VenueUnavailable`` when the venue cannot be asked."""
        self._client_ids.update(known)
        try:
            before = self._call(self.exchange.fetch_balance, "fetch balance")
            orders = [self._order(o) for s in symbols
                      for o in self._call(partial(self.exchange.fetch_open_orders, s), "fetch open orders")]
            self._client_ids.update({o.venue_id: o.client_id for o in orders})
            trades = {s: self._trades(s, since_ms.get(s, 0)) for s in symbols}
            fills = [self._venue_fill(t, s) for s, (read, _cut) in trades.items() for t in read]
            after = self._call(self.exchange.fetch_balance, "fetch balance")
        except ccxt.BaseError as exc:
            raise VenueUnavailable(f"{self.exchange.id}: {describe(exc)}") from exc
        currency_of = {s: s.partition("/")[2].split(":")[0] for s in symbols}
        assets = sorted({*currency_of.values(), *(s.partition("/")[0] for s in symbols)})

        def totals(balance: dict[str, Any]) -> dict[str, Decimal]:
            total = balance.get("total") or {}
            return {asset: _decimal(total.get(asset) or 0) for asset in assets}

        held = totals(after)
        read_to = {s: int(read[-1]["timestamp"]) for s, (read, cut) in trades.items() if cut and read}
        return VenueView(tuple(orders), tuple(fills), {s: held[s.partition("/")[0]] for s in symbols},
                         {c: held[c] for c in currency_of.values()}, currency_of, steady=totals(before) == held,
                         read_to_ms=read_to)

    def _trades(self, symbol: str, since_ms: int) -> tuple[list[dict[str, Any]], bool]:
        """``symbol``'s trades from ``since_ms`` on, oldest first, page after page (``MAX_PAGES`` at most), and
        whether the page limit cut the reading short.

        The first page is asked from the time on (Binance: ``startTime`` alone, which reads on from that time as
        far as the page goes; only ``startTime`` with ``endTime`` is bounded, to 24 hours). A Binance exchange
        pages on by trade id (``fromId``: the trades after the last one read, whatever their times, so a page full
        of trades of one millisecond does not hold the reading up); another exchange by time, from the last
        trade's time (a full page of one millisecond is passed a millisecond on, logged)."""
        found: dict[str, dict[str, Any]] = {}
        since: int | None = since_ms
        params: dict[str, Any] = {}
        by_id = str(self.exchange.id).startswith("binance")
        cut = True
        for _ in range(MAX_PAGES):
            page = self._call(partial(self.exchange.fetch_my_trades, symbol, since, TRADES_PAGE, dict(params)),
                              "fetch trades")
            new = [t for t in page if str(t["id"]) not in found]
            found.update((str(t["id"]), t) for t in new)
            if len(page) < TRADES_PAGE:
                cut = False
                break
            if by_id:
                since, params = None, {"fromId": max(int(t["id"]) for t in page) + 1}
                continue
            last = max(int(t["timestamp"]) for t in page)
            if not new:  # a full page of one millisecond read again: what it does not hold there is passed
                log.warning("%s: more than %d trades of %s at %s; the next are read from a millisecond later",
                            self.exchange.id, TRADES_PAGE, symbol, utc_from_ms(last))
                last += 1
            since = last
        return sorted(found.values(), key=lambda t: (int(t["timestamp"]), str(t["id"]))), cut

    def _order(self, order: dict[str, Any]) -> VenueOrder:
        price, stop = order.get("price"), order.get("triggerPrice") or order.get("stopPrice")
        return VenueOrder(str(order["id"]), str(order.get("clientOrderId") or ""), str(order["symbol"]),
                          Side(order["side"]), str(order.get("type") or ""), _decimal(order.get("amount") or 0),
                          _decimal(order.get("filled") or 0), _decimal(price) if price else None,
                          _decimal(stop) if stop else None)

    def _venue_fill(self, trade: dict[str, Any], symbol: str) -> VenueFill:
        """A trade as the ledgers book it (``_booked``): the units it moved, its fee in the quote currency."""
        venue_id = str(trade.get("order") or "")
        side = Side(trade["side"])
        units, fee = self._booked(trade, symbol, side)
        return VenueFill(f"{self.exchange.id}:{trade['id']}", venue_id, self._client_id(venue_id, symbol), symbol,
                         side, units, _decimal(trade["price"]), fee, int(trade["timestamp"]))

    def _client_id(self, venue_id: str, symbol: str) -> str:
        """The client id of the venue's order ``venue_id`` (looked up once; empty when the venue has none)."""
        known = self._client_ids.get(venue_id)
        if known is None:
            known = next((e.client_id for e in self.open.values() if e.venue_id == venue_id), None)
        if known is None and venue_id:
            try:
                order = self._call(lambda: self.exchange.fetch_order(venue_id, symbol), "fetch order")
            except ccxt.OrderNotFound:
                order = {}
            known = str(order.get("clientOrderId") or "")
        self._client_ids[venue_id] = known or ""
        return known or ""

    # ------------------------------------------------------------------ helpers
    def _call(self, call: Callable[[], Any], what: str) -> Any:
        """``call`` through the retry policy; the last ccxt error is raised when the policy gives up, and a
        rejection at once."""
        return self.retry.call(call, what=f"{self.orders.venue.name} {what}", give_up=lambda exc, _attempts: exc)

    def _booked(self, trade: dict[str, Any], symbol: str, side: Side) -> tuple[Decimal, Decimal]:
        """What a trade of ``symbol`` on ``side`` did to the holdings: the base units it moved and its fee in the
        quote currency.

        A fee in the quote is booked as it is. A fee ``f`` taken from the base (Binance's rule when it is not paid
        in BNB: the fee comes out of the asset received) on an amount ``q`` at price ``p`` moved ``q - f`` units
        (a buy) or ``q + f`` (a sell) for the full ``q * p`` of quote, so it is booked as that many units with a
        fee of ``f * p``: the ledger's units and cash then move exactly as the venue's balances. A fee in a third
        currency (e.g. BNB) is booked as 0 and logged."""
        amount = _decimal(trade["amount"])
        fee = trade.get("fee") or {}
        cost = _decimal(fee.get("cost") or 0)
        base, _, quote = symbol.partition("/")
        currency = fee.get("currency")
        if not cost or currency in (None, quote.split(":")[0]):
            return amount, cost
        if currency == base:
            return (amount - cost if side is Side.BUY else amount + cost), cost * _decimal(trade["price"])
        log.warning("fee of %s %s on %s booked as 0 (no conversion to %s)", cost, currency, symbol, quote)
        return amount, Decimal(0)


def _less_in_flight(inflight: float, filled: Decimal) -> float:
    """The units in flight once ``filled`` signed units of a counted order filled (``pipeline.engine``'s rule: a
    fill takes its units off what is in flight on its side, down to nothing)."""
    qty = float(filled)
    if inflight == 0.0 or qty * inflight <= 0.0:
        return inflight
    return inflight - qty if abs(qty) < abs(inflight) else 0.0
