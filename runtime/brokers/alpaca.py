"""The Alpaca broker: the engine's orders as market orders at Alpaca (US stocks), its fills booked from the venue.

Every order carries the deterministic client order id of ``runtime.brokers.base.client_order_id``, and before an
order is sent Alpaca is asked whether it already holds that id (``GET /v2/orders:by_client_order_id``). So an
order whose answer was lost, or that was sent just before a crash, is found instead of being sent twice.

Orders: market, ``time_in_force`` DAY (Alpaca's rule for fractional quantities), the quantity rounded to
Alpaca's 9 decimals (the rounding difference stops counting as in flight).

Fills: an Alpaca order carries only its cumulative ``filled_qty`` and ``filled_avg_price``. Each time an order is
looked at, the increase since the last look is booked as one fill: its quantity is the change of the filled
quantity, its price the change of the filled notional (quantity times average price, exact ``Decimal``) divided
by that quantity, its id ``alpaca:<order id>:<cumulative filled qty>`` (deterministic, so the state store never
books it twice). Alpaca charges no commission: the fee is 0.

Orders go out through the shared idempotent submission (``runtime.brokers.submission``); this module supplies
the venue calls (``AlpacaVenue``: place, find by client id, cancel) and the conversions.

Errors: ``403`` (insufficient buying power or quantity) and ``422`` (an invalid order) and other refusals →
the order is rejected and its units stop counting as in flight; ``429``, ``5xx``, timeouts and connection errors
→ retried by the retry policy (``pipeline.retry``: ``max_retries``, ``backoff_s``, injectable ``sleep``), looking
the order up by its client id before any resend; still unknown after the retries → on record as ``new`` without
a venue id and looked up again on the next bar (and after a restart). Nothing here raises into the runtime loop.

Before an exit, this sleeve's open orders on the other side are cancelled (``runtime.brokers.base.VenueRouting``).
``resume`` takes over the orders on record still open after a restart; ``holdings`` reads the positions.

``make_trading_client`` builds the ``TradingClient`` from the settings: with ``http_timeout_s`` on every request
and without alpaca-py's own blocking retries, so that one retry policy (``pipeline.retry``) applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

import pydantic
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Order, Position
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from pipeline.data.sources.alpaca_source import BoundedTradingClient, credentials
from pipeline.domain import trading, utc_from_ms
from pipeline.domain.trading import Fill, OrderStatus, Side
from pipeline.engine.core import Engine, Intent
from pipeline.retry import RetryPolicy, is_transient
from pipeline.settings import Settings
from runtime.brokers.base import VenueRouting, open_on_record
from runtime.brokers.submission import OrderRejected, OrderRequest, Submission, VenueUnavailable

log = logging.getLogger(__name__)

QTY_QUANTUM = Decimal("0.000000001")
"""Alpaca takes quantities to 9 decimals."""
ENDED = frozenset({"canceled", "expired", "rejected", "replaced", "done_for_day"})
"""Alpaca order statuses after which nothing more fills."""
UNREADABLE: tuple[type[BaseException], ...] = (requests.exceptions.JSONDecodeError, pydantic.ValidationError)
"""An answer cut short: like a dropped connection, the outcome is unknown (retried, an order looked up first)."""
T = TypeVar("T")


class AlpacaVenue:
    """The order calls of an alpaca-py ``TradingClient`` for ``runtime.brokers.submission`` (one attempt each)."""

    name = "alpaca"
    errors: tuple[type[BaseException], ...] = (APIError, requests.RequestException, pydantic.ValidationError)

    def __init__(self, client: TradingClient, time_in_force: TimeInForce = TimeInForce.DAY) -> None:
        self.client = client
        self.time_in_force = time_in_force

    def transient(self, exc: BaseException) -> bool:
        return is_transient(exc) or isinstance(exc, UNREADABLE)

    def place(self, order: OrderRequest) -> Order:
        common = {"symbol": order.symbol, "qty": float(order.qty), "side": OrderSide(order.side),
                  "time_in_force": self.time_in_force, "client_order_id": order.client_id}
        request = (MarketOrderRequest(**common) if order.price is None else
                   LimitOrderRequest(**common, limit_price=float(order.price)))
        try:
            return _order(self.client.submit_order(request))
        except APIError as exc:
            if self.transient(exc):
                raise
            duplicate = exc.status_code == 422 and "unique" in _message(exc)
            raise OrderRejected(_describe(exc), duplicate=duplicate) from exc

    def find(self, client_id: str, symbol: str) -> Order | None:
        try:
            return _order(self.client.get_order_by_client_id(client_id))
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise

    def cancel(self, venue_id: str, symbol: str) -> None:
        try:
            self.client.cancel_order_by_id(venue_id)
        except APIError as exc:
            if exc.status_code not in (404, 422):  # 404/422: filled or gone meanwhile
                raise


@dataclass
class _Open:
    sleeve: str
    symbol: str
    venue_id: str
    client_id: str
    qty: Decimal  # signed, as ordered
    filled: Decimal  # cumulative filled quantity booked
    notional: Decimal  # cumulative filled notional booked
    reason: str
    bar_ms: int

    @property
    def side(self) -> Side:
        return Side.of(self.qty)


def make_trading_client(settings: Settings, paper: bool | None = None) -> BoundedTradingClient:
    """A ``TradingClient`` with the settings' keys and URL, ``http_timeout_s`` per request and no retries of its own
    (``pipeline.data.sources.alpaca_source.BoundedTradingClient``).

    ``paper`` defaults to True unless live trading is confirmed (``live_confirm`` = ``yes``);
    ``alpaca_trading_url``, when set, overrides the endpoint either way. Raises ``ValueError`` naming the
    variables to set when a key is missing.
    """
    key, secret = credentials(settings, "trading")
    url = settings.alpaca_trading_url.rstrip("/") if settings.alpaca_trading_url else None
    return BoundedTradingClient(key, secret, timeout_s=settings.http_timeout_s, url_override=url,
                                paper=settings.live_confirm != "yes" if paper is None else paper)


class AlpacaBroker(VenueRouting):
    """Market orders through an alpaca-py ``TradingClient`` (built by the caller, see ``make_trading_client``)."""

    name = "alpaca"
    external_fills = True

    def __init__(self, client: TradingClient, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, time_in_force: TimeInForce = TimeInForce.DAY) -> None:
        self.client = client
        self.retry = RetryPolicy.from_settings(max_retries, backoff_s, sleep=sleep)
        self.orders: Submission[Order] = Submission(AlpacaVenue(client, time_in_force), self.retry)
        self.open: dict[str, _Open] = {}
        self._seen_fills: set[str] = set()

    # ------------------------------------------------------------------ the broker protocol
    def resume(self, orders: Sequence[trading.Order], fills: Sequence[Fill]) -> None:
        """Take over the orders on record still open, with their stored fills (booked again never)."""
        for found in open_on_record(orders, fills):
            row = found.order
            if row.client_order_id in self.open:
                continue
            self.open[row.client_order_id] = _Open(row.sleeve, row.symbol, row.venue_order_id or "",
                                                   row.client_order_id, found.signed_qty, found.filled,
                                                   found.notional, row.reason, found.bar_ms)
            self._seen_fills |= found.fill_ids

    def holdings(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        """The position of each symbol (negative when short, 0 when none); ``VenueUnavailable`` when the
        positions cannot be read."""
        try:
            positions = self._call(self.client.get_all_positions, "read positions")
        except (APIError, VenueUnavailable) as exc:
            raise VenueUnavailable(f"alpaca: positions could not be read ({_describe(exc)})") from exc
        held: dict[str, Decimal] = {}
        for position in positions if isinstance(positions, list) else []:
            if not isinstance(position, Position):
                position = Position(**position)
            qty = abs(Decimal(str(position.qty)))
            held[position.symbol] = -qty if position.side.value == "short" else qty
        return {symbol: held.get(symbol, held.get(symbol.replace("/", ""), Decimal(0))) for symbol in symbols}

    # ------------------------------------------------------------------ orders
    def _send(self, sleeve: str, symbol: str, intent: Intent, engine: Engine, client_id: str, bar_ms: int,
              orders: list[trading.Order], fills: list[Fill]) -> None:
        side = Side.of(intent.qty)
        qty = Decimal(repr(abs(intent.qty))).quantize(QTY_QUANTUM, ROUND_HALF_EVEN)
        if qty <= 0:
            engine.release(intent.qty)
            orders.append(self._record(client_id, sleeve, symbol, side, Decimal(repr(abs(intent.qty))),
                                       OrderStatus.REJECTED, f"{intent.reason}: below alpaca's quantity increment",
                                       None, bar_ms))
            return
        signed = qty if side == "buy" else -qty
        if float(signed) != intent.qty:
            engine.release(intent.qty - float(signed))  # rounded to alpaca's 9 decimals
        sent = self.orders.submit(OrderRequest(client_id, symbol, side, qty))
        if sent.outcome == "rejected":
            engine.release(float(signed))
            orders.append(self._record(client_id, sleeve, symbol, side, qty, OrderStatus.REJECTED,
                                       f"{intent.reason}: {sent.reason}", None, bar_ms))
            log.warning("%s: %s %s %s rejected by alpaca: %s", sleeve, side, qty, symbol, sent.reason)
            return
        if sent.order is None:
            log.error("%s: %s %s %s could not be sent (%s); looked up again next bar", sleeve, side, qty, symbol,
                      sent.reason)
            self.open[client_id] = _Open(sleeve, symbol, "", client_id, signed, Decimal(0), Decimal(0), intent.reason,
                                         bar_ms)
            orders.append(self._record(client_id, sleeve, symbol, side, qty, OrderStatus.NEW, intent.reason, None,
                                       bar_ms))
            return
        entry = _Open(sleeve, symbol, str(sent.order.id), client_id, signed, Decimal(0), Decimal(0), intent.reason,
                      bar_ms)
        self.open[client_id] = entry
        self._track(entry, sent.order, engine, orders, fills)

    def _end(self, entry: _Open, order: Order, engine: Engine) -> None:
        """The order is done at alpaca: what it will never fill stops counting as in flight."""
        if _status(order) in ENDED:
            rest = entry.qty - (entry.filled if entry.qty > 0 else -entry.filled)
            if rest:
                engine.release(float(rest))
        del self.open[entry.client_id]

    def _book(self, entry: _Open, order: Order, engine: Engine, orders: list[trading.Order],
              fills: list[Fill]) -> bool:
        """Book what the order filled since it was last looked at; True when it is done at alpaca."""
        filled, average = _decimal(order.filled_qty), _decimal(order.filled_avg_price)
        if filled > entry.filled and average <= 0:  # not priced yet: booked when it is, the order stays open
            log.warning("%s: order %s reports %s filled without a price; booked when priced", entry.sleeve,
                        entry.client_id, filled)
            orders.append(self._record_of(entry, OrderStatus.working(entry.filled), entry.reason))
            return False
        if filled > entry.filled:
            notional = filled * average
            qty = filled - entry.filled
            price = (notional - entry.notional) / qty
            fill_id = f"alpaca:{order.id}:{_text(filled)}"
            if fill_id not in self._seen_fills:
                self._seen_fills.add(fill_id)
                engine.apply_fill(float(qty) if entry.qty > 0 else -float(qty), float(price), 0.0, entry.reason)
                at = order.updated_at if isinstance(order.updated_at, datetime) else utc_from_ms(entry.bar_ms)
                fills.append(Fill(fill_id=fill_id, client_order_id=entry.client_id, sleeve=entry.sleeve,
                                        symbol=entry.symbol, side=entry.side, qty=qty, price=price, fee=Decimal(0),
                                        at=at, reason=entry.reason))
            entry.filled, entry.notional = filled, notional
        status = _status(order)
        complete = status == "filled" or entry.filled >= abs(entry.qty)
        ended = status in ENDED
        if complete:
            recorded = OrderStatus.FILLED
        elif ended:
            recorded = OrderStatus.REJECTED if status == "rejected" else OrderStatus.CANCELED
        else:
            recorded = OrderStatus.working(entry.filled)
        orders.append(self._record_of(entry, recorded, entry.reason))
        return complete or ended

    def _venue_id(self, order: Order) -> str:
        return str(order.id)

    def _record_of(self, entry: _Open, status: OrderStatus, reason: str) -> trading.Order:
        return self._record(entry.client_id, entry.sleeve, entry.symbol, entry.side, abs(entry.qty), status, reason,
                            entry.venue_id, entry.bar_ms)

    def _call(self, call: Callable[[], T], what: str) -> T:
        """``call`` through the retry policy (429, 5xx, timeouts, connection errors are retried); other API errors
        are raised as they are, and ``VenueUnavailable`` when the policy gives up."""
        return self.retry.call(
            call, what=f"alpaca {what}", transient=self.orders.venue.transient,
            give_up=lambda exc, attempts: VenueUnavailable(f"{what}: {_describe(exc)} after {attempts} attempts"))

    @staticmethod
    def _record(client_id: str, sleeve: str, symbol: str, side: Side, qty: Decimal, status: OrderStatus,
                reason: str, venue_id: str | None, bar_ms: int) -> trading.Order:
        at = utc_from_ms(bar_ms)
        return trading.Order(client_order_id=client_id, sleeve=sleeve, symbol=symbol, side=side, qty=qty, price=None,
                           status=status, reason=reason, venue_order_id=venue_id or None, bar=at, created_at=at)


def _order(answer: Any) -> Order:
    """An alpaca-py ``Order`` from a client answer (a model, or its raw dict from a ``raw_data`` client)."""
    return answer if isinstance(answer, Order) else Order(**answer)


def _status(order: Order) -> str:
    return str(getattr(order.status, "value", order.status))


def _message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except (ValueError, KeyError, TypeError):
        return str(exc)[:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return f"HTTP {exc.status_code}: {_message(exc)}"
    return f"{type(exc).__name__}: {exc}"[:300]


def _decimal(value: Any) -> Decimal:
    return Decimal(0) if value is None or value == "" else Decimal(str(value))


def _text(value: Decimal) -> str:
    """A quantity written the same way however the venue wrote it (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


