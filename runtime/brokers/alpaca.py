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

Errors: ``403`` (insufficient buying power or quantity) and ``422`` (an invalid order) and other refusals →
the order is rejected and its units stop counting as in flight; ``429``, ``5xx``, timeouts and connection errors
→ retried with backoff (``max_retries``, ``backoff_s``, injectable ``sleep``), looking the order up by its client
id before any resend; still unknown after the retries → on record as ``new`` without a venue id and looked up
again on the next bar (and after a restart). Nothing here raises into the runtime loop.

Before an exit, this sleeve's open orders on the other side are cancelled (as in ``runtime.brokers.ccxt``).
``resume`` takes over the orders on record still open after a restart; ``holdings`` reads the positions.

``make_trading_client`` builds the ``TradingClient`` from the settings: with ``http_timeout_s`` on every request
and without alpaca-py's own blocking retries, so that one retry policy (this broker's) applies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

import pandas as pd
import pydantic
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Order, Position
from alpaca.trading.requests import MarketOrderRequest

from pipeline.engine.core import Engine, Intent
from pipeline.settings import Settings
from pipeline.sources.alpaca_source import bounded, credentials
from pipeline.sources.retry import with_retries
from pipeline.state import FillRecord, FillRow, OrderRecord, OrderRow
from runtime.brokers.base import VenueRouting, VenueUnavailable, open_on_record

log = logging.getLogger(__name__)

QTY_QUANTUM = Decimal("0.000000001")
"""Alpaca takes quantities to 9 decimals."""
ENDED = frozenset({"canceled", "expired", "rejected", "replaced", "done_for_day"})
"""Alpaca order statuses after which nothing more fills."""
TRANSPORT: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.JSONDecodeError,
    pydantic.ValidationError,
)
"""Failures after which the outcome of a request is unknown: retried, an order looked up before any resend."""
T = TypeVar("T")


class _Rejected(Exception):
    """Alpaca refused the order; nothing was placed."""


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
    def side(self) -> str:
        return "buy" if self.qty > 0 else "sell"


def make_trading_client(settings: Settings, paper: bool | None = None) -> TradingClient:
    """A ``TradingClient`` with the settings' keys and URL, ``http_timeout_s`` per request and no retries of its own.

    ``paper`` defaults to True unless live trading is confirmed (``live_confirm`` = ``yes``);
    ``alpaca_trading_url``, when set, overrides the endpoint either way. Raises ``ValueError`` naming the
    variables to set when a key is missing.
    """
    key, secret = credentials(settings, "trading")
    url = settings.alpaca_trading_url.rstrip("/") if settings.alpaca_trading_url else None
    client = TradingClient(key, secret, paper=settings.live_confirm != "yes" if paper is None else paper,
                           url_override=url)
    return bounded(client, settings.http_timeout_s)


class AlpacaBroker(VenueRouting):
    """Market orders through an alpaca-py ``TradingClient`` (built by the caller, see ``make_trading_client``)."""

    name = "alpaca"
    external_fills = True

    def __init__(self, client: TradingClient, max_retries: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, time_in_force: TimeInForce = TimeInForce.DAY) -> None:
        self.client = client
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.time_in_force = time_in_force
        self.open: dict[str, _Open] = {}
        self._seen_fills: set[str] = set()

    # ------------------------------------------------------------------ the broker protocol
    def resume(self, orders: Sequence[OrderRow], fills: Sequence[FillRow]) -> None:
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
              orders: list[OrderRecord], fills: list[FillRecord]) -> None:
        side = "buy" if intent.qty > 0 else "sell"
        qty = Decimal(repr(abs(intent.qty))).quantize(QTY_QUANTUM, ROUND_HALF_EVEN)
        if qty <= 0:
            engine.release(intent.qty)
            orders.append(self._record(client_id, sleeve, symbol, side, Decimal(repr(abs(intent.qty))), "rejected",
                                       f"{intent.reason}: below alpaca's quantity increment", None, bar_ms))
            return
        signed = qty if side == "buy" else -qty
        if float(signed) != intent.qty:
            engine.release(intent.qty - float(signed))  # rounded to alpaca's 9 decimals
        try:
            order = self._existing(client_id)
            if order is None:
                order = self._place(symbol, side, qty, client_id)
        except _Rejected as exc:
            engine.release(float(signed))
            orders.append(self._record(client_id, sleeve, symbol, side, qty, "rejected", f"{intent.reason}: {exc}",
                                       None, bar_ms))
            log.warning("%s: %s %s %s rejected by alpaca: %s", sleeve, side, qty, symbol, exc)
            return
        except VenueUnavailable as exc:
            log.error("%s: %s %s %s could not be sent (%s); looked up again next bar", sleeve, side, qty, symbol, exc)
            self.open[client_id] = _Open(sleeve, symbol, "", client_id, signed, Decimal(0), Decimal(0), intent.reason,
                                         bar_ms)
            orders.append(self._record(client_id, sleeve, symbol, side, qty, "new", intent.reason, None, bar_ms))
            return
        entry = _Open(sleeve, symbol, str(order.id), client_id, signed, Decimal(0), Decimal(0), intent.reason, bar_ms)
        self.open[client_id] = entry
        if self._book(entry, order, engine, orders, fills):
            self._end(entry, order, engine)

    def _follow(self, entry: _Open, engine: Engine, orders: list[OrderRecord], fills: list[FillRecord]) -> None:
        """Look at an order placed earlier: new fills, or its end (filled, cancelled, rejected, expired)."""
        try:
            order = self._existing(entry.client_id)
        except VenueUnavailable as exc:
            log.warning("%s: order %s could not be looked up (%s); tried again next bar", entry.sleeve,
                        entry.client_id, exc)
            return
        if order is None:
            if not entry.venue_id:  # it never reached alpaca: its units stop counting as in flight
                engine.release(float(entry.qty - (entry.filled if entry.qty > 0 else -entry.filled)))
                del self.open[entry.client_id]
                orders.append(self._record(entry.client_id, entry.sleeve, entry.symbol, entry.side, abs(entry.qty),
                                           "rejected", f"{entry.reason}: never reached the venue", None, entry.bar_ms))
            return
        entry.venue_id = str(order.id)
        if self._book(entry, order, engine, orders, fills):
            self._end(entry, order, engine)

    def _end(self, entry: _Open, order: Order, engine: Engine) -> None:
        """The order is done at alpaca: what it will never fill stops counting as in flight."""
        if _status(order) in ENDED:
            rest = entry.qty - (entry.filled if entry.qty > 0 else -entry.filled)
            if rest:
                engine.release(float(rest))
        del self.open[entry.client_id]

    def _cancel_opposing(self, sleeve: str, intent: Intent, engine: Engine, orders: list[OrderRecord],
                         fills: list[FillRecord]) -> Intent:
        """Cancel this sleeve's open orders on the other side before turning around (see ``runtime.brokers.ccxt``):
        the exit then shrinks by the unfilled rest that will no longer arrive."""
        qty = intent.qty
        for entry in [e for e in self.open.values() if e.sleeve == sleeve and float(e.qty) * intent.qty < 0]:
            if not entry.venue_id:
                continue
            venue_id = entry.venue_id

            def cancel(venue_id: str = venue_id) -> None:
                self.client.cancel_order_by_id(venue_id)

            try:
                self._call(cancel, "cancel")
            except APIError as exc:
                if exc.status_code not in (404, 422):  # 404/422: filled or gone meanwhile; following books it
                    log.warning("%s: could not cancel %s (%s); the exit is sent as decided", sleeve,
                                entry.client_id, _describe(exc))
                    continue
            except VenueUnavailable as exc:
                log.warning("%s: could not cancel %s (%s); the exit is sent as decided", sleeve, entry.client_id, exc)
                continue
            before = entry.filled
            self._follow(entry, engine, orders, fills)
            rest = float(abs(entry.qty) - max(entry.filled, before))
            if entry.client_id not in self.open and rest > 0:
                qty += rest if entry.qty > 0 else -rest
        if qty * intent.qty <= 0:
            return Intent(intent.number, intent.bar, 0.0, intent.reference_price, intent.reason)
        return Intent(intent.number, intent.bar, qty, intent.reference_price, intent.reason)

    def _book(self, entry: _Open, order: Order, engine: Engine, orders: list[OrderRecord],
              fills: list[FillRecord]) -> bool:
        """Book what the order filled since it was last looked at; True when it is done at alpaca."""
        filled, average = _decimal(order.filled_qty), _decimal(order.filled_avg_price)
        if filled > entry.filled and average <= 0:  # not priced yet: booked when it is, the order stays open
            log.warning("%s: order %s reports %s filled without a price; booked when priced", entry.sleeve,
                        entry.client_id, filled)
            orders.append(self._record(entry.client_id, entry.sleeve, entry.symbol, entry.side, abs(entry.qty),
                                       "partially_filled" if entry.filled else "new", entry.reason, entry.venue_id,
                                       entry.bar_ms))
            return False
        if filled > entry.filled:
            notional = filled * average
            qty = filled - entry.filled
            price = (notional - entry.notional) / qty
            fill_id = f"alpaca:{order.id}:{_text(filled)}"
            if fill_id not in self._seen_fills:
                self._seen_fills.add(fill_id)
                engine.apply_fill(float(qty) if entry.qty > 0 else -float(qty), float(price), 0.0, entry.reason)
                at = order.updated_at if isinstance(order.updated_at, datetime) else _utc(entry.bar_ms)
                fills.append(FillRecord(fill_id=fill_id, client_order_id=entry.client_id, sleeve=entry.sleeve,
                                        symbol=entry.symbol, side=entry.side, qty=qty, price=price, fee=Decimal(0),
                                        at=at, reason=entry.reason))
            entry.filled, entry.notional = filled, notional
        status = _status(order)
        complete = status == "filled" or entry.filled >= abs(entry.qty)
        ended = status in ENDED
        if complete:
            recorded = "filled"
        elif ended:
            recorded = "rejected" if status == "rejected" else "canceled"
        else:
            recorded = "partially_filled" if entry.filled else "new"
        orders.append(self._record(entry.client_id, entry.sleeve, entry.symbol, entry.side, abs(entry.qty), recorded,
                                   entry.reason, entry.venue_id, entry.bar_ms))
        return complete or ended

    def _place(self, symbol: str, side: str, qty: Decimal, client_id: str) -> Order:
        """Send a market order; after a failure whose outcome is unknown, look it up by client id before any
        resend, so an order whose answer was lost is never placed twice.

        Raises ``_Rejected`` when alpaca refuses it and ``VenueUnavailable`` when its fate stays unknown.
        """
        request = MarketOrderRequest(symbol=symbol, qty=float(qty), side=OrderSide(side),
                                     time_in_force=self.time_in_force, client_order_id=client_id)
        for attempt in range(self.max_retries + 1):
            failure: BaseException
            try:
                return _order(self.client.submit_order(request))
            except APIError as exc:
                if not _retryable(exc):
                    if exc.status_code == 422 and "unique" in _message(exc):  # an earlier attempt arrived after all
                        found = self._existing(client_id)
                        if found is not None:
                            return found
                    raise _Rejected(_describe(exc)) from exc
                failure = exc
            except TRANSPORT as exc:
                failure = exc
            try:
                found = self._existing(client_id)
            except VenueUnavailable:
                found = None
            if found is not None:
                return found
            if attempt == self.max_retries:
                raise VenueUnavailable(f"order {client_id}: {_describe(failure)}") from failure
            delay = self.backoff_s * 2**attempt
            log.warning("%s %s failed (%s); not at alpaca, resent (%d/%d) in %.2fs", side, symbol,
                        _describe(failure), attempt + 1, self.max_retries, delay)
            self.sleep(delay)
        raise RuntimeError("unreachable")

    # ------------------------------------------------------------------ helpers
    def _existing(self, client_id: str) -> Order | None:
        """Alpaca's order with ``client_id``; None when alpaca says it has none.

        Raises ``VenueUnavailable`` when alpaca cannot be asked (so "unknown" is never taken for "absent").
        """
        try:
            return _order(self._call(lambda: self.client.get_order_by_client_id(client_id), "look up order"))
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise VenueUnavailable(f"order {client_id} could not be looked up ({_describe(exc)})") from exc

    def _call(self, call: Callable[[], T], what: str) -> T:
        """``call`` with retries of what may pass (429, 5xx, timeouts, connection errors); other API errors are
        raised as they are, and ``VenueUnavailable`` when the retries run out."""
        return with_retries(
            call, retryable=lambda exc: isinstance(exc, TRANSPORT) or (isinstance(exc, APIError) and _retryable(exc)),
            what=f"alpaca {what}", max_retries=self.max_retries, backoff_s=self.backoff_s, sleep=self.sleep,
            give_up=lambda exc, attempts: VenueUnavailable(f"{what}: {_describe(exc)} after {attempts} attempts"))

    @staticmethod
    def _record(client_id: str, sleeve: str, symbol: str, side: str, qty: Decimal, status: str, reason: str,
                venue_id: str | None, bar_ms: int) -> OrderRecord:
        at = _utc(bar_ms)
        return OrderRecord(client_order_id=client_id, sleeve=sleeve, symbol=symbol, side=side, qty=qty, price=None,
                           status=status, reason=reason, venue_order_id=venue_id or None, bar=at, created_at=at)


def _order(answer: Any) -> Order:
    """An alpaca-py ``Order`` from a client answer (a model, or its raw dict from a ``raw_data`` client)."""
    return answer if isinstance(answer, Order) else Order(**answer)


def _status(order: Order) -> str:
    return str(getattr(order.status, "value", order.status))


def _retryable(exc: APIError) -> bool:
    status = exc.status_code
    return status is None or status == 429 or status >= 500


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


def _utc(ms: int) -> datetime:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").to_pydatetime()
