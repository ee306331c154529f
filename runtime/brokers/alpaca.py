"""The Alpaca broker: the engine's orders as market, limit and stop orders at Alpaca (US stocks), the position's
protective stop resting there, and the fills booked from the venue.

Every order carries the deterministic client order id of ``runtime.brokers.base.client_order_id`` (a protective
stop ``…-s``), and before an order is sent Alpaca is asked whether it already holds that id
(``GET /v2/orders:by_client_order_id``). So an order whose answer was lost, or that was sent just before a crash,
is found instead of being sent twice.

Orders (alpaca-py's ``MarketOrderRequest``, ``LimitOrderRequest`` with ``limit_price`` and ``StopOrderRequest``
with ``stop_price``): the quantity rounded to Alpaca's 9 decimals (the rounding difference stops counting as in
flight), prices on Alpaca's grid (whole cents from $1, hundredths of a cent below; a limit never worse than the
engine asked, a stop never later: a sell's price rounded up, a buy's down). A market order is DAY (the
``time_in_force`` given, Alpaca's rule for fractional quantities); a limit or stop order is GTC unless it is a day
order or its quantity is fractional (Alpaca takes fractional orders as DAY only): a day order the venue expires at
the session's end is followed to its end like any other, and a protective stop that expired is placed again on
the next bar. A stop the market has already crossed is refused (``422 stop price must be less than current
price``): the position is then closed with a market order.

Fills: an Alpaca order carries only its cumulative ``filled_qty`` and ``filled_avg_price``. Each time an order is
looked at, the increase since the last look is booked as one fill: its quantity is the change of the filled
quantity, its price the change of the filled notional (quantity times average price, exact ``Decimal``) divided
by that quantity, its id ``alpaca:<order id>:<cumulative filled qty>`` (deterministic, so the state store never
books it twice). Alpaca charges no commission: the fee is 0.

Orders go out through the shared idempotent submission (``runtime.brokers.submission``) and the shared order flow
(``runtime.brokers.routing.VenueRouting``: a new decision replaces the sleeve's working orders, day orders are
cancelled when their day ends, one protective stop rests per position); this module supplies the venue calls
(``AlpacaVenue``: place, find by client id, cancel) and the conversions.

Errors: ``403`` (insufficient buying power or quantity) and ``422`` (an invalid order) and other refusals →
the order is rejected and its units stop counting as in flight; ``429``, ``5xx``, timeouts and connection errors
→ retried by the retry policy (``pipeline.retry``: ``max_retries``, ``backoff_s``, injectable ``sleep``), looking
the order up by its client id before any resend; still unknown after the retries → on record as ``new`` without
a venue id and looked up again on the next bar (and after a restart). Nothing here raises into the runtime loop.

``resume`` takes over the orders on record still open after a restart (the protective stop among them);
``holdings`` reads the positions, and ``venue_view`` what the reconciliation compares (``runtime.reconcile``):
the open orders of the symbols (``GET /v2/orders?status=open``), the fills from a time on (the account's
``FILL`` activities, ``GET /v2/account/activities/FILL``, page after page; each carries its order's cumulative
filled quantity, which is how this broker books an order's fills), the positions and the account's cash (read
before and after the rest, so a fill landing meanwhile is seen), and the client id of each traded order.

``make_trading_client`` builds the ``TradingClient`` from the settings: with ``http_timeout_s`` on every request
and without alpaca-py's own blocking retries, so that one retry policy (``pipeline.retry``) applies.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import Any, TypeVar

import pydantic
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, Position, TradeAccount
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest, StopOrderRequest
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest

from pipeline.data.sources.alpaca_source import BoundedTradingClient, credentials
from pipeline.domain import utc_from_ms
from pipeline.domain.trading import OrderStatus, OrderType, Side
from pipeline.retry import RetryPolicy, is_transient
from pipeline.settings import Settings
from runtime.brokers.base import VenueFill, VenueOrder, VenueView, Working
from runtime.brokers.routing import Step, VenueRouting
from runtime.brokers.submission import OrderRejected, OrderRequest, Submission, VenueUnavailable

log = logging.getLogger(__name__)

QTY_QUANTUM = Decimal("0.000000001")
"""Alpaca takes quantities to 9 decimals."""
PENNY, SUB_PENNY = Decimal("0.01"), Decimal("0.0001")
"""Alpaca's price grid: whole cents from $1, hundredths of a cent below."""
ENDED = frozenset({"canceled", "expired", "rejected", "replaced", "done_for_day"})
"""Alpaca order statuses after which nothing more fills."""
UNREADABLE: tuple[type[BaseException], ...] = (requests.exceptions.JSONDecodeError, pydantic.ValidationError)
"""An answer cut short: like a dropped connection, the outcome is unknown (retried, an order looked up first)."""
ACTIVITIES_PAGE = 100
"""Fill activities asked per page (Alpaca's largest ``page_size``)."""
MAX_PAGES = 20
"""Pages of fill activities one reconciliation reads at most (the rest is read by the next one)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
        common: dict[str, Any] = {"symbol": order.symbol, "qty": float(order.qty), "side": OrderSide(order.side),
                                  "time_in_force": self._time_in_force(order), "client_order_id": order.client_id}
        request: AlpacaOrderRequest
        if order.kind is OrderType.LIMIT:
            request = LimitOrderRequest(**common, limit_price=float(order.price or 0))
        elif order.kind is OrderType.STOP:
            request = StopOrderRequest(**common, stop_price=float(order.stop_price or 0))
        else:
            request = MarketOrderRequest(**common)
        try:
            return _order(self.client.submit_order(request))
        except APIError as exc:
            if self.transient(exc):
                raise
            message = _message(exc)
            raise OrderRejected(_describe(exc), duplicate=exc.status_code == 422 and "unique" in message,
                                triggered=exc.status_code == 422 and "stop price must be" in message) from exc

    def _time_in_force(self, order: OrderRequest) -> TimeInForce:
        """A market order's is the one given; a limit or stop order is GTC unless it is a day order or its
        quantity is fractional (Alpaca takes those as DAY only)."""
        if order.kind is OrderType.MARKET:
            return self.time_in_force
        whole = order.qty == order.qty.to_integral_value()
        return TimeInForce.GTC if order.tif == "gtc" and whole else TimeInForce.DAY

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
    """Market, limit and stop orders through an alpaca-py ``TradingClient`` (built by the caller, see
    ``make_trading_client``)."""

    name = "alpaca"
    external_fills = True

    def __init__(self, client: TradingClient, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, time_in_force: TimeInForce = TimeInForce.DAY) -> None:
        self.client = client
        self.retry = RetryPolicy.from_settings(max_retries, backoff_s, sleep=sleep)
        self.orders: Submission[Order] = Submission(AlpacaVenue(client, time_in_force), self.retry)
        self.open: dict[str, Working] = {}
        self.seen: set[str] = set()
        self.routed: dict[str, int] = {}
        self._client_ids: dict[str, str] = {}
        """The client id of each venue order id met (ids never change)."""

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

    def venue_view(self, symbols: Sequence[str], since_ms: Mapping[str, int], known: Mapping[str, str]
                   ) -> VenueView:
        """The open orders of ``symbols``, the account's fills of ``symbols`` from the earliest of their ``since_ms``
        on (one stream for the account: cut at the page limit, every symbol is read up to the same time), the
        positions and the cash (USD); ``VenueUnavailable`` when the venue cannot be asked."""
        self._client_ids.update(known)
        try:
            before = self._cash()
            held = self.holdings(symbols)
            named = {**{s.replace("/", ""): s for s in symbols}, **{s: s for s in symbols}}  # BTCUSD is BTC/USD
            listed = self._call(lambda: self.client.get_orders(GetOrdersRequest(
                status=QueryOrderStatus.OPEN, symbols=sorted(set(symbols)), limit=500)), "read open orders")
            orders = [replace(o, symbol=named[o.symbol]) for o in
                      (_open_order(_order(row)) for row in listed if isinstance(row, (Order, dict)))
                      if o.symbol in named]
            self._client_ids.update({o.venue_id: o.client_id for o in orders})
            activities = self._activities(min(since_ms.values(), default=0))
            fills = [replace(self._venue_fill(a), symbol=named[str(a["symbol"])]) for a in activities
                     if str(a.get("symbol")) in named]
            cut = len(activities) >= MAX_PAGES * ACTIVITIES_PAGE  # read up to the page limit: the rest next time
            read_to = max((_epoch_ms(str(a["transaction_time"])) for a in activities), default=0)
            after = self._cash()
        except (APIError, pydantic.ValidationError, KeyError, ValueError) as exc:
            raise VenueUnavailable(f"alpaca: {_describe(exc)}") from exc
        return VenueView(tuple(orders), tuple(fills), held, {"USD": after}, dict.fromkeys(symbols, "USD"),
                         steady=before == after, read_to_ms=dict.fromkeys(symbols, read_to) if cut else {})

    def _cash(self) -> Decimal:
        account = self._call(self.client.get_account, "read the account")
        if not isinstance(account, TradeAccount):
            account = TradeAccount(**account)
        return _decimal(account.cash)

    def _activities(self, since_ms: int) -> list[dict[str, Any]]:
        """The account's fill activities after ``since_ms`` (less a millisecond: Alpaca's ``after`` excludes it),
        oldest first, page after page."""
        params: dict[str, Any] = {"after": utc_from_ms(since_ms - 1).isoformat(), "direction": "asc",
                                  "page_size": ACTIVITIES_PAGE}
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            page = self._call(partial(self.client.get, "/account/activities/FILL", dict(params)),
                              "read fill activities")
            rows = [row for row in page or [] if isinstance(row, dict)]
            found += rows
            if len(rows) < ACTIVITIES_PAGE:
                break
            params["page_token"] = rows[-1]["id"]
        return found

    def _venue_fill(self, activity: dict[str, Any]) -> VenueFill:
        venue_id = str(activity["order_id"])
        at = _epoch_ms(str(activity["transaction_time"]))
        return VenueFill(f"alpaca-activity:{activity['id']}", venue_id, self._client_id(venue_id),
                         str(activity["symbol"]), _side(str(activity["side"])), _decimal(activity["qty"]),
                         _decimal(activity["price"]), Decimal(0), at, order_filled=_decimal(activity["cum_qty"]))

    def _client_id(self, venue_id: str) -> str:
        """The client id of the venue's order ``venue_id`` (looked up once; empty when Alpaca has none)."""
        known = self._client_ids.get(venue_id)
        if known is None:
            known = next((e.client_id for e in self.open.values() if e.venue_id == venue_id), None)
        if known is None:
            try:
                known = _order(self._call(lambda: self.client.get_order_by_id(venue_id), "read an order")
                               ).client_order_id
            except APIError as exc:
                if exc.status_code != 404:
                    raise
                known = ""
        self._client_ids[venue_id] = known
        return known

    # ------------------------------------------------------------------ conversions
    def _size(self, symbol: str, qty: float) -> Decimal:
        if not math.isfinite(qty) or qty <= 0:
            return Decimal(0)
        return Decimal(repr(qty)).quantize(QTY_QUANTUM, ROUND_HALF_EVEN)

    def _tick_size(self, symbol: str, price: Decimal) -> Decimal | None:
        return PENNY if price >= 1 else SUB_PENNY

    def _venue_id(self, order: Order) -> str:
        return str(order.id)

    # ------------------------------------------------------------------ booking
    def _book(self, entry: Working, order: Order, step: Step) -> OrderStatus:
        """Book what the order filled since it was last looked at; returns its status (final once it is done)."""
        filled, average = _decimal(order.filled_qty), _decimal(order.filled_avg_price)
        if filled > entry.filled and average <= 0:  # not priced yet: booked when it is, the order stays open
            log.warning("%s: order %s reports %s filled without a price; booked when priced", entry.sleeve,
                        entry.client_id, filled)
            return OrderStatus.working(entry.filled)
        if filled > entry.filled:
            notional = filled * average
            qty = filled - entry.filled
            price = (notional - entry.notional) / qty
            fill_id = f"alpaca:{order.id}:{_text(filled)}"
            if fill_id not in self.seen:
                self.seen.add(fill_id)
                at = order.updated_at if isinstance(order.updated_at, datetime) else utc_from_ms(entry.bar_ms)
                self._fill(entry, step, qty, price, Decimal(0), fill_id, at)
            entry.filled, entry.notional = filled, notional
        status = _status(order)
        if status == "filled" or entry.filled >= abs(entry.qty):
            return OrderStatus.FILLED
        if status in ENDED:
            return OrderStatus.REJECTED if status == "rejected" else OrderStatus.CANCELED
        return OrderStatus.working(entry.filled)

    def _call(self, call: Callable[[], T], what: str) -> T:
        """``call`` through the retry policy (429, 5xx, timeouts, connection errors are retried); other API errors
        are raised as they are, and ``VenueUnavailable`` when the policy gives up."""
        return self.retry.call(
            call, what=f"alpaca {what}", transient=self.orders.venue.transient,
            give_up=lambda exc, attempts: VenueUnavailable(f"{what}: {_describe(exc)} after {attempts} attempts"))


def _order(answer: Any) -> Order:
    """An alpaca-py ``Order`` from a client answer (a model, or its raw dict from a ``raw_data`` client)."""
    return answer if isinstance(answer, Order) else Order(**answer)


def _open_order(order: Order) -> VenueOrder:
    kind = str(getattr(order.order_type, "value", order.order_type) or getattr(order.type, "value", order.type))
    return VenueOrder(str(order.id), order.client_order_id, order.symbol or "",
                      Side(str(getattr(order.side, "value", order.side))), kind, _decimal(order.qty),
                      _decimal(order.filled_qty), _decimal(order.limit_price) or None,
                      _decimal(order.stop_price) or None)


def _epoch_ms(text: str) -> int:
    """Epoch milliseconds of a time as Alpaca writes it (RFC 3339, e.g. ``2024-01-02T14:30:00.123456Z``)."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (stamp - EPOCH) // timedelta(milliseconds=1)


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


def _side(text: str) -> Side:
    """An activity's side: ``buy`` or ``sell``, including Alpaca's ``sell_short`` and ``buy_minus`` forms."""
    return Side.SELL if text.lower().startswith("sell") else Side.BUY
