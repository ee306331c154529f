"""A local stand-in for Alpaca's API v2 on 127.0.0.1: historical stock bars and the trading API.

Market data: ``GET /v2/stocks/bars`` the way Alpaca answers it, closely enough for the real alpaca-py client:
``symbols``, ``timeframe`` (``1Min``, ``1Hour``, ``1Day``...), ``start``, ``end``, ``limit``, ``page_token``,
``feed``, ``adjustment`` and ``sort``; the answer is ``{"bars": {SYMBOL: [...]}, "next_page_token": ...}``,
paginated by ``limit`` and by the server's own ``page_size`` (Alpaca also returns fewer bars than asked for).
Symbols the server holds no bars for get ``{"bars": {}}``, as at Alpaca; malformed ones get a 400. Bars are
served from canonical bar frames whose ``timestamp`` is the stamp Alpaca would give the bar (use
``alpaca_daily_stamps`` for daily bars: Alpaca stamps them at midnight New York time).

Trading (what alpaca-py's ``TradingClient`` calls, with the JSON fields its ``Order``, ``Position`` and
``TradeAccount`` models read):

* ``GET /v2/account`` — cash, buying power, equity;
* ``POST /v2/orders`` — ``market`` and ``limit`` orders by ``qty`` (fractional, up to 9 decimals, DAY only)
  or ``notional`` (market only), ``time_in_force``, ``client_order_id`` (at most 128 characters, unique: a
  second order with one already used is ``422 client_order_id must be unique``);
* ``GET /v2/orders`` (``status`` open / closed / all, ``limit``, ``direction``, ``symbols``, ``side``),
  ``GET /v2/orders/{id}``, ``GET /v2/orders:by_client_order_id?client_order_id=``, ``DELETE /v2/orders/{id}``
  (``204``; ``422`` when the order can no longer be cancelled), ``DELETE /v2/orders`` (cancel all, ``207``);
* ``GET /v2/positions`` and ``GET /v2/positions/{symbol}`` (``404`` when nothing is held).

Trading requests need ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY`` (``401`` when missing, ``403`` when
they are not the server's ``api_key`` / ``api_secret``); bar requests need the headers present.

The ledger: starting ``cash``, positions with their average entry price, a current price per symbol
(``set_price``), no commission (as at Alpaca). A market order fills at once at the current price; a limit
order fills at its limit price when the current price reaches it (at once or on a later ``set_price``).
Buying more than the buying power (cash less what open buys reserve) is ``403 insufficient buying power``;
selling more than is held (less what open sells reserve) is ``403 insufficient qty available for order``.

Trouble is scripted per endpoint (``bars``, ``account``, ``orders``, ``positions`` or ``*``, optionally per
method): ``fail_next`` (an HTTP status with Alpaca's error body, e.g. 429 or 5xx, the request unhandled),
``delay_next`` (a slow answer, the request handled: a client that times out cannot know an order was placed),
``lose_response_next`` (the order is placed, then the connection closes without an answer), ``reject_next``
(``403`` / ``422`` with Alpaca's body, nothing placed), ``partial_fill_next`` (the next market order fills in
part and stays ``partially_filled`` until ``complete_partial`` or the next ``set_price`` of its symbol). Every
request is recorded; ``orders``, ``executions``, ``positions`` and ``cash`` read the ledger back.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pandas as pd

MAX_LIMIT = 10_000
NEW_YORK = "America/New_York"
_SYMBOL_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-/")

DEFAULT_KEY_ID = "fake-alpaca-key-id"
DEFAULT_SECRET_KEY = "fake-alpaca-secret-key"
DEFAULT_CASH = Decimal(100_000)
QTY_QUANTUM = Decimal("0.000000001")
"""Alpaca takes quantities to 9 decimals."""
OPEN_STATUSES = frozenset({"new", "accepted", "pending_new", "partially_filled"})
TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
INSUFFICIENT_BUYING_POWER = (403, 40310000, "insufficient buying power")
NOT_UNIQUE = (422, 40010001, "client_order_id must be unique")
ERROR_BODIES: dict[int, tuple[int, str]] = {
    400: (40010000, "bad request"),
    403: INSUFFICIENT_BUYING_POWER[1:],
    404: (40410000, "not found"),
    422: (42210000, "invalid order"),
    429: (42910000, "rate limit exceeded"),
    500: (50010000, "internal server error occurred"),
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (query parameters flattened to their last value; ``body`` the JSON)."""

    method: str
    path: str
    params: dict[str, str]
    had_key_headers: bool
    body: Any = None

    @property
    def endpoint(self) -> str:
        return _endpoint(self.path)


@dataclass(frozen=True)
class Fault:
    """Trouble for one coming request to ``endpoint`` (``"*"``: any), of ``method`` when given.

    ``status`` answers that HTTP status without handling the request (``body``: Alpaca's error for it unless
    given); ``delay_s`` holds the answer back first (with no status the request is handled: an order is
    placed); ``lose_response`` handles the request, then closes the connection without an answer.
    """

    endpoint: str = "bars"
    method: str | None = None
    status: int | None = None
    delay_s: float = 0.0
    body: dict[str, Any] | None = None
    lose_response: bool = False

    def matches(self, method: str, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint) and self.method in (None, method)


@dataclass
class VenueOrder:
    """An order in the fake's book (``filled_notional``: the sum of quantity times price of its fills)."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    created_at: str
    updated_at: str
    status: str = "new"
    filled_qty: Decimal = Decimal(0)
    filled_notional: Decimal = Decimal(0)
    filled_at: str | None = None
    canceled_at: str | None = None
    extended_hours: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None

    def copy(self) -> VenueOrder:
        return replace(self)

    def as_json(self) -> dict[str, Any]:
        average = self.filled_avg_price
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "submitted_at": self.created_at,
            "filled_at": self.filled_at,
            "expired_at": None,
            "expires_at": None,
            "canceled_at": self.canceled_at,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": _asset_id(self.symbol),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _text(self.qty),
            "filled_qty": _text(self.filled_qty),
            "filled_avg_price": None if average is None else _text(average),
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else _text(self.limit_price),
            "stop_price": None,
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
        }


@dataclass(frozen=True)
class Execution:
    """One fill of an order: ``qty`` at ``price``; ``cumulative_qty`` is the order's filled quantity after it."""

    order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    cumulative_qty: Decimal
    at: str


@dataclass
class _Holding:
    qty: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


@dataclass
class _Reply:
    status: int
    body: Any = None
    delay_s: float = 0.0
    lose_response: bool = False


class _Refused(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def alpaca_daily_stamps(frame: pd.DataFrame) -> pd.DataFrame:
    """A daily bar frame labelled at 00:00 UTC, restamped the way Alpaca stamps it: midnight in New York."""
    dates = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    out = frame.copy()
    out["timestamp"] = dates.dt.tz_localize(NEW_YORK).dt.tz_convert("UTC")
    return out


class AlpacaServer:
    """Alpaca's stock-bars endpoint served from pandas frames, and its trading API against a ledger.

    Use as a context manager; point alpaca-py clients at ``url`` (``url_override``) with ``api_key`` and
    ``api_secret``.
    """

    def __init__(self, page_size: int = MAX_LIMIT, *, cash: Decimal | int | str = DEFAULT_CASH,
                 api_key: str = DEFAULT_KEY_ID, api_secret: str = DEFAULT_SECRET_KEY) -> None:
        self.page_size = page_size
        self.api_key = api_key
        self.api_secret = api_secret
        self.requests: list[RecordedRequest] = []
        self._bars: dict[tuple[str, str], pd.DataFrame] = {}
        self._faults: deque[Fault] = deque()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._cash = Decimal(cash)
        self._holdings: dict[str, _Holding] = {}
        self._prices: dict[str, Decimal] = {}
        self._orders: list[VenueOrder] = []
        self._executions: list[Execution] = []
        self._partials: deque[Decimal] = deque()
        self._order_numbers = itertools.count(1)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-alpaca", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL to give alpaca-py as ``url_override`` (the client adds ``/v2/...``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scripting -------------------------------------------------------------------------------------------

    def add_bars(self, symbol: str, timeframe: str, frame: pd.DataFrame) -> None:
        """Serve ``frame`` (timestamps as Alpaca stamps the bars) for ``symbol`` at Alpaca's ``timeframe``."""
        ordered = frame.sort_values("timestamp").reset_index(drop=True)
        ordered["timestamp"] = ordered["timestamp"].dt.tz_convert("UTC")
        with self._lock:
            self._bars[(symbol, timeframe)] = ordered

    def fail_next(self, status: int = 429, times: int = 1, *, endpoint: str = "bars", method: str | None = None,
                  message: str | None = None) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (``bars``, ``account``, ``orders``, ``positions``
        or ``*``; of ``method`` when given) with HTTP ``status`` (e.g. 429, 500, 504), leaving them unhandled."""
        body = None if message is None else {"code": ERROR_BODIES.get(status, (status * 100_000, ""))[0],
                                             "message": message}
        self._queue(Fault(endpoint, _upper(method), status, body=body), times)

    def delay_next(self, seconds: float, times: int = 1, *, endpoint: str = "bars", method: str | None = None) -> None:
        """Hold the next ``times`` answers of ``endpoint`` for ``seconds``; the requests are handled (an order
        is placed even when the client gave up waiting)."""
        self._queue(Fault(endpoint, _upper(method), delay_s=seconds), times)

    def lose_response_next(self, times: int = 1, *, endpoint: str = "orders", method: str | None = "POST") -> None:
        """Handle the next ``times`` matching requests (an order IS placed), then close the connection unanswered."""
        self._queue(Fault(endpoint, _upper(method), lose_response=True), times)

    def reject_next(self, status: int = 403, message: str = "insufficient buying power", times: int = 1) -> None:
        """Refuse the next ``times`` order placements with ``status`` (403 or 422) and Alpaca's body; nothing is
        placed."""
        code = 40310000 if status == 403 else 40010001
        self._queue(Fault("orders", "POST", status, body={"code": code, "message": message}), times)

    def partial_fill_next(self, fraction: Decimal | float | str) -> None:
        """Fill only ``fraction`` (0 < fraction < 1, rounded down to 9 decimals) of the next market order.

        It stays ``partially_filled`` until ``complete_partial`` or the next ``set_price`` of its symbol fills
        the rest at the current price, or it is cancelled. Queued calls apply to successive market orders.
        """
        value = Decimal(str(fraction))
        if not 0 < value < 1:
            raise ValueError(f"a partial fill fraction must be between 0 and 1, not {fraction}")
        with self._lock:
            self._partials.append(value)

    def set_price(self, symbol: str, price: Decimal | float | str | int) -> None:
        """Set ``symbol``'s current price, then fill what it reaches, oldest order first: open market-order
        remainders at ``price``, buy limits at or above it and sell limits at or below it at their limit."""
        value = Decimal(str(price))
        if value <= 0:
            raise ValueError(f"a price must be positive, not {price}")
        with self._lock:
            self._prices[symbol] = value
            for order in self._orders:
                if order.is_open and order.symbol == symbol:
                    self._fill_if_reached(order, order.remaining)

    def complete_partial(self, ref: VenueOrder | str) -> VenueOrder:
        """Fill the rest of an open order now (a market order at the current price, a limit one at its limit).

        ``ref`` is a ``VenueOrder``, an order id or a client order id; returns the order as it is after.
        """
        with self._lock:
            order = self._find(ref)
            if order is None or not order.is_open:
                raise ValueError(f"order {ref!r} is not open on the fake Alpaca")
            price = order.limit_price if order.type == "limit" else self._prices[order.symbol]
            assert price is not None
            self._fill(order, order.remaining, price)
            return order.copy()

    def set_cash(self, cash: Decimal | int | str) -> None:
        with self._lock:
            self._cash = Decimal(cash)

    # -- introspection ---------------------------------------------------------------------------------------

    def bar_requests(self) -> list[RecordedRequest]:
        """The recorded requests for stock bars, in arrival order."""
        return self.requests_to("bars")

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests to ``endpoint`` (``bars``, ``account``, ``orders``, ``positions``), of ``method``
        when given, in arrival order."""
        with self._lock:
            return [r for r in self.requests
                    if r.endpoint == endpoint and (method is None or r.method == method.upper())]

    @property
    def pending_faults(self) -> int:
        """Faults queued and not yet met by a request."""
        with self._lock:
            return len(self._faults)

    @property
    def orders(self) -> list[VenueOrder]:
        """Every order placed so far (copies), oldest first, whatever its status."""
        with self._lock:
            return [order.copy() for order in self._orders]

    @property
    def executions(self) -> list[Execution]:
        """Every fill so far, oldest first."""
        with self._lock:
            return list(self._executions)

    @property
    def positions(self) -> dict[str, Decimal]:
        """Units held per symbol (symbols with none left out)."""
        with self._lock:
            return {symbol: held.qty for symbol, held in self._holdings.items() if held.qty}

    @property
    def cash(self) -> Decimal:
        with self._lock:
            return self._cash

    def order(self, ref: str) -> VenueOrder | None:
        """The order with id or client order id ``ref``."""
        with self._lock:
            found = self._find(ref)
            return None if found is None else found.copy()

    # -- the HTTP side ---------------------------------------------------------------------------------------

    def _queue(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.extend(fault for _ in range(times))

    def _take_fault(self, method: str, endpoint: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, endpoint):
                    del self._faults[index]
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length > 0 else ""
                reply = server._answer(self, method, raw)
                if reply.delay_s > 0:
                    server._stopping.wait(reply.delay_s)
                if reply.lose_response:
                    self.close_connection = True  # no status line, no body: the client sees the connection close
                    return
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out
                    self.send_response(reply.status)
                    if reply.body is not None:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, method: str, raw: str) -> _Reply:
        parts = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        key, secret = handler.headers.get("APCA-API-KEY-ID"), handler.headers.get("APCA-API-SECRET-KEY")
        has_keys = bool(key and secret)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _BAD_JSON
        endpoint = _endpoint(parts.path)
        with self._lock:
            self.requests.append(RecordedRequest(method, parts.path, params, has_keys, body))
        fault = self._take_fault(method, endpoint)
        if not has_keys:
            return _Reply(401, {"code": 40110000, "message": "request is not authorized"})
        if endpoint != "bars" and (key, secret) != (self.api_key, self.api_secret):
            return _Reply(403, {"message": "forbidden."})
        delay = 0.0 if fault is None else fault.delay_s
        if fault is not None and fault.status is not None:
            code, message = ERROR_BODIES.get(fault.status, (fault.status * 100_000, f"HTTP {fault.status}"))
            return _Reply(fault.status, fault.body or {"code": code, "message": message}, delay)
        if endpoint == "bars":
            reply = self._bars_reply(method, params)
        elif body is _BAD_JSON:
            reply = _Reply(400, {"code": 40010000, "message": "request body format is invalid"})
        else:
            reply = self._trading_reply(method, parts.path, params, body)
        reply.delay_s = delay
        reply.lose_response = fault is not None and fault.lose_response
        return reply

    def _bars_reply(self, method: str, params: dict[str, str]) -> _Reply:
        if method != "GET":
            return _Reply(405, {"message": "Method Not Allowed"})
        try:
            return _Reply(200, self._bars_page(params))
        except _BadRequest as exc:
            return _Reply(exc.status, {"message": str(exc)})

    def _trading_reply(self, method: str, path: str, params: dict[str, str], body: Any) -> _Reply:
        try:
            with self._lock:
                return self._trade(method, path, params, body)
        except _Refused as refused:
            return _Reply(refused.status, {"code": refused.code, "message": refused.message})

    def _trade(self, method: str, path: str, params: dict[str, str], body: Any) -> _Reply:
        if path == "/v2/account" and method == "GET":
            return _Reply(200, self._account())
        if path == "/v2/orders" and method == "POST":
            return _Reply(200, self._place(body).as_json())
        if path == "/v2/orders" and method == "GET":
            return _Reply(200, [o.as_json() for o in self._list_orders(params)])
        if path == "/v2/orders" and method == "DELETE":
            cancelled = [o for o in self._orders if o.is_open]
            for order in cancelled:
                self._cancel(order)
            return _Reply(207, [{"id": o.id, "status": 200, "body": o.as_json()} for o in cancelled])
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            found = self._by_client_id(params.get("client_order_id", ""))
            if found is None:
                raise _Refused(404, 40410000, "order not found")
            return _Reply(200, found.as_json())
        if path.startswith("/v2/orders/") and method in ("GET", "DELETE"):
            order = self._by_id(path.removeprefix("/v2/orders/"))
            if order is None:
                raise _Refused(404, 40410000, "order not found")
            if method == "GET":
                return _Reply(200, order.as_json())
            if not order.is_open:
                raise _Refused(422, 42210000, f"order is already in \"{order.status}\" state")
            self._cancel(order)
            return _Reply(204)
        if path == "/v2/positions" and method == "GET":
            return _Reply(200, [self._position(s) for s, held in sorted(self._holdings.items()) if held.qty])
        if path.startswith("/v2/positions/") and method == "GET":
            symbol = path.removeprefix("/v2/positions/")
            held = self._holdings.get(symbol)
            if held is None or not held.qty:
                raise _Refused(404, 40410000, "position does not exist")
            return _Reply(200, self._position(symbol))
        raise _Refused(404, 40410000, f"{method} {path} is not served by the fake Alpaca")

    # -- the trading ledger (called with the lock held) ------------------------------------------------------

    def _place(self, body: Any) -> VenueOrder:
        if not isinstance(body, dict):
            raise _Refused(400, 40010000, "request body format is invalid")
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _Refused(422, 40010001, "symbol is required")
        side, kind, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in ("buy", "sell"):
            raise _Refused(422, 40010001, f"invalid side: {side!r}")
        if kind not in ("market", "limit"):
            raise _Refused(422, 40010001, f"order type {kind!r} is not served by the fake Alpaca")
        if tif not in TIME_IN_FORCE:
            raise _Refused(422, 40010001, f"invalid time_in_force: {tif!r}")
        price = self._prices.get(symbol)
        if price is None:
            raise _Refused(422, 40010001, f"asset \"{symbol}\" not found")
        qty = self._quantity(body, kind, price)
        if qty != qty.to_integral_value() and tif != "day":
            raise _Refused(422, 40010001, "fractional orders must be DAY orders")
        limit = None
        if kind == "limit":
            limit = _decimal_field(body, "limit_price")
            if limit is None or limit <= 0:
                raise _Refused(422, 40010001, "limit_price is required for limit orders and must be > 0")
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(client_id, str) or len(client_id) > 128:
            raise _Refused(422, 40010001, "client_order_id must be a string of at most 128 characters")
        if self._by_client_id(client_id) is not None:
            raise _Refused(*NOT_UNIQUE)
        if side == "buy" and qty * (limit or price) > self._buying_power():
            raise _Refused(*INSUFFICIENT_BUYING_POWER)
        if side == "sell":
            held = self._holdings.get(symbol, _Holding()).qty
            available = held - sum((o.remaining for o in self._orders
                                    if o.is_open and o.symbol == symbol and o.side == "sell"), Decimal(0))
            if qty > available:
                raise _Refused(403, 40310000, f"insufficient qty available for order (requested: {_text(qty)}, "
                                              f"available: {_text(available)})")
        now = _now()
        order = VenueOrder(str(uuid.UUID(int=next(self._order_numbers))), client_id, symbol, side, kind, tif, qty,
                           limit, now, now, extended_hours=bool(body.get("extended_hours")))
        self._orders.append(order)
        share = qty
        if kind == "market" and self._partials:
            share = (qty * self._partials.popleft()).quantize(QTY_QUANTUM, ROUND_DOWN)
        if share > 0:
            self._fill_if_reached(order, share)
        return order

    def _quantity(self, body: dict[str, Any], kind: str, price: Decimal) -> Decimal:
        qty, notional = _decimal_field(body, "qty"), _decimal_field(body, "notional")
        if (qty is None) == (notional is None):
            raise _Refused(422, 40010001, "exactly one of qty and notional is required")
        if notional is not None:
            if kind != "market":
                raise _Refused(422, 40010001, "notional orders must be market orders")
            qty = (notional / price).quantize(QTY_QUANTUM, ROUND_DOWN)
        assert qty is not None
        if qty <= 0:
            raise _Refused(422, 40010001, "qty must be > 0")
        if qty != qty.quantize(QTY_QUANTUM, ROUND_DOWN):
            raise _Refused(422, 40010001, "qty must have at most 9 decimal places")
        return qty

    def _fill_if_reached(self, order: VenueOrder, qty: Decimal) -> None:
        price = self._prices[order.symbol]
        if order.type == "market":
            self._fill(order, qty, price)
        elif order.limit_price is not None and (
            price <= order.limit_price if order.side == "buy" else price >= order.limit_price
        ):
            self._fill(order, qty, order.limit_price)

    def _fill(self, order: VenueOrder, qty: Decimal, price: Decimal) -> None:
        now = _now()
        held = self._holdings.setdefault(order.symbol, _Holding())
        if order.side == "buy":
            self._cash -= qty * price
            held.cost += qty * price
            held.qty += qty
        else:
            self._cash += qty * price
            held.cost -= held.cost * qty / held.qty if held.qty else Decimal(0)
            held.qty -= qty
            if not held.qty:
                held.cost = Decimal(0)
        order.filled_qty += qty
        order.filled_notional += qty * price
        order.updated_at = now
        order.status = "filled" if order.remaining <= 0 else "partially_filled"
        if order.status == "filled":
            order.filled_at = now
        self._executions.append(Execution(order.id, order.client_order_id, order.symbol, order.side, qty, price,
                                          order.filled_qty, now))

    def _cancel(self, order: VenueOrder) -> None:
        order.status = "canceled"
        order.canceled_at = order.updated_at = _now()

    def _buying_power(self) -> Decimal:
        reserved = sum((o.remaining * (o.limit_price or self._prices[o.symbol]) for o in self._orders
                        if o.is_open and o.side == "buy"), Decimal(0))
        return self._cash - reserved

    def _list_orders(self, params: dict[str, str]) -> list[VenueOrder]:
        status = params.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise _Refused(422, 40010001, f"invalid status: {status!r}")
        try:
            limit = int(params.get("limit", "50"))
        except ValueError as exc:
            raise _Refused(422, 40010001, f"invalid limit: {params['limit']!r}") from exc
        if not 1 <= limit <= 500:
            raise _Refused(422, 40010001, "limit must be between 1 and 500")
        symbols = {s for s in params.get("symbols", "").split(",") if s}
        side = params.get("side")
        chosen = [o for o in self._orders
                  if (status == "all" or (status == "open") == o.is_open)
                  and (not symbols or o.symbol in symbols) and (side is None or o.side == side)]
        if params.get("direction", "desc") == "desc":
            chosen.reverse()
        return chosen[:limit]

    def _account(self) -> dict[str, Any]:
        value = sum((held.qty * self._prices[s] for s, held in self._holdings.items() if held.qty), Decimal(0))
        equity = self._cash + value
        power = _text(self._buying_power())
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-alpaca-account:{self.api_key}")),
            "account_number": "PA0FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": power,
            "regt_buying_power": power,
            "non_marginable_buying_power": power,
            "cash": _text(self._cash),
            "accrued_fees": "0",
            "pending_transfer_out": None,
            "pending_transfer_in": "0",
            "portfolio_value": _text(equity),
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T14:30:00Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": _text(equity),
            "last_equity": _text(equity),
            "long_market_value": _text(value),
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "options_buying_power": power,
            "options_approved_level": 0,
            "options_trading_level": 0,
        }

    def _position(self, symbol: str) -> dict[str, Any]:
        held = self._holdings[symbol]
        price = self._prices[symbol]
        reserved = sum((o.remaining for o in self._orders if o.is_open and o.symbol == symbol and o.side == "sell"),
                       Decimal(0))
        value = held.qty * price
        average = held.cost / held.qty
        return {
            "asset_id": _asset_id(symbol),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "qty": _text(held.qty),
            "qty_available": _text(held.qty - reserved),
            "avg_entry_price": _text(average),
            "side": "long" if held.qty > 0 else "short",
            "market_value": _text(value),
            "cost_basis": _text(held.cost),
            "unrealized_pl": _text(value - held.cost),
            "unrealized_plpc": _text((value - held.cost) / held.cost) if held.cost else "0",
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": _text(price),
            "lastday_price": _text(price),
            "change_today": "0",
        }

    def _find(self, ref: VenueOrder | str) -> VenueOrder | None:
        key = ref.id if isinstance(ref, VenueOrder) else ref
        return self._by_id(key) or self._by_client_id(key)

    def _by_id(self, order_id: str) -> VenueOrder | None:
        return next((o for o in self._orders if o.id == order_id), None)

    def _by_client_id(self, client_id: str) -> VenueOrder | None:
        return next((o for o in self._orders if o.client_order_id == client_id), None)

    # -- market data -----------------------------------------------------------------------------------------

    def _bars_page(self, params: dict[str, str]) -> dict[str, Any]:
        symbols = _symbols(params.get("symbols", ""))
        timeframe = params.get("timeframe", "")
        if not timeframe:
            raise _BadRequest(422, "invalid timeframe")
        start, end = _time_param(params, "start"), _time_param(params, "end")
        if start is not None and end is not None and start > end:
            raise _BadRequest(422, "end should not be before start")
        limit = _limit(params.get("limit"))
        if params.get("sort", "asc") not in ("asc", "desc"):
            raise _BadRequest(422, "invalid sort")
        rows = self._rows(symbols, timeframe, start, end, descending=params.get("sort") == "desc")
        offset = _offset(rows, params.get("page_token") or None)
        page = rows[offset : offset + min(limit, self.page_size)]
        following = offset + len(page)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar)
        token = None
        if following < len(rows):
            next_symbol, next_bar = rows[following]
            token = _token(next_symbol, next_bar["t"])
        return {"bars": grouped, "next_page_token": token}

    def _rows(
        self,
        symbols: list[str],
        timeframe: str,
        start: pd.Timestamp | None,
        end: pd.Timestamp | None,
        descending: bool,
    ) -> list[tuple[str, dict[str, Any]]]:
        rows: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            frames = {s: self._bars.get((s, timeframe)) for s in sorted(symbols)}
        for symbol, frame in frames.items():
            if frame is None:
                continue
            mask = pd.Series(True, index=frame.index)
            if start is not None:
                mask &= frame["timestamp"] >= start
            if end is not None:
                mask &= frame["timestamp"] <= end
            selected = frame.loc[mask]
            if descending:
                selected = selected.iloc[::-1]
            rows.extend((symbol, _bar_json(bar)) for bar in selected.itertuples(index=False))
        return rows


_BAD_JSON = object()


def _endpoint(path: str) -> str:
    """The endpoint family of a path: ``bars``, ``account``, ``orders``, ``positions`` or ``other``."""
    if path == "/v2/stocks/bars":
        return "bars"
    for name in ("account", "orders", "positions"):
        if path == f"/v2/{name}" or path.startswith((f"/v2/{name}/", f"/v2/{name}:")):
            return name
    return "other"


def _upper(method: str | None) -> str | None:
    return None if method is None else method.upper()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-alpaca-asset:{symbol}"))


def _text(value: Decimal) -> str:
    """A decimal as Alpaca writes numbers: plain digits, no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _decimal_field(body: dict[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise _Refused(422, 40010001, f"invalid {name}: {value!r}") from exc
    if not number.is_finite():
        raise _Refused(422, 40010001, f"invalid {name}: {value!r}")
    return number


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _symbols(text: str) -> list[str]:
    symbols = [s for s in text.split(",") if s]
    if not symbols:
        raise _BadRequest(400, "symbols is required")
    for symbol in symbols:
        if not set(symbol) <= _SYMBOL_CHARS or len(symbol) > 21:
            raise _BadRequest(400, f"invalid symbol: {symbol!r}")
    return symbols


def _time_param(params: dict[str, str], name: str) -> pd.Timestamp | None:
    text = params.get(name)
    if not text:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise _BadRequest(422, f"invalid {name}: {text!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return 1000
    try:
        value = int(text)
    except ValueError as exc:
        raise _BadRequest(422, f"invalid limit: {text!r}") from exc
    if not 1 <= value <= MAX_LIMIT:
        raise _BadRequest(422, f"invalid limit: {value} is not in 1..{MAX_LIMIT}")
    return value


def _token(symbol: str, stamp: str) -> str:
    return base64.b64encode(f"{symbol}|{stamp}".encode()).decode()


def _offset(rows: list[tuple[str, dict[str, Any]]], token: str | None) -> int:
    if token is None:
        return 0
    try:
        symbol, stamp = base64.b64decode(token.encode(), validate=True).decode().split("|")
    except ValueError as exc:
        raise _BadRequest(400, "invalid page_token") from exc
    for index, (row_symbol, bar) in enumerate(rows):
        if row_symbol == symbol and bar["t"] == stamp:
            return index
    raise _BadRequest(400, "invalid page_token")


def _bar_json(bar: Any) -> dict[str, Any]:
    stamp = pd.Timestamp(bar.timestamp).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    high, low, close = float(bar.high), float(bar.low), float(bar.close)
    return {
        "t": stamp,
        "o": float(bar.open),
        "h": high,
        "l": low,
        "c": close,
        "v": float(bar.volume),
        "n": 1 if float(bar.volume) > 0 else 0,
        "vw": round((high + low + close) / 3, 4),
    }
