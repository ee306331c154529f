"""A fake Binance spot REST API on 127.0.0.1, for driving the real ccxt client in tests.

It speaks the part of the API that ccxt's ``load_markets`` and ``fetch_ohlcv`` use on spot markets:

* ``GET /api/v3/exchangeInfo`` — the listed symbols with their PRICE_FILTER / LOT_SIZE filters;
* ``GET /api/v3/time`` and ``GET /api/v3/ping``;
* ``GET /api/v3/klines`` — ``symbol``, ``interval``, ``startTime``, ``endTime``, ``limit`` (default 500,
  at most 1000), answered from bar frames handed to the server, as Binance's 12-field arrays with prices as
  strings.

Tests script trouble with ``fail_next`` (HTTP errors with Binance's error bodies, slow answers that outlast
the client's timeout), set the venue's clock with ``set_now`` (the bar containing ``now`` is served as the
still-open candle, later bars are not served) and read back every request the server received.

Usage::

    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "1m", frame)
        server.fail_next(status=429)
        ...  # point a client at server.url
        assert len(server.requests_to("klines")) == 2
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

API_PREFIX = "/api/v3/"
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000

INTERVAL_MS: dict[str, int] = {
    name: count * unit
    for unit, names in (
        (60_000, {"1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30}),
        (3_600_000, {"1h": 1, "2h": 2, "4h": 4, "6h": 6, "8h": 8, "12h": 12}),
        (86_400_000, {"1d": 1, "3d": 3, "1w": 7}),
    )
    for name, count in names.items()
}
"""Binance's kline intervals with their lengths in milliseconds (``1M`` is not served)."""


def error_body(code: int, msg: str) -> str:
    """A Binance error response body, e.g. ``{"code":-1121,"msg":"Invalid symbol."}``."""
    return json.dumps({"code": code, "msg": msg})


GATEWAY_PAGE = (
    "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>"
)

DEFAULT_ERROR_BODIES: dict[int, str] = {
    400: error_body(-1100, "Illegal characters found in a parameter."),
    418: error_body(-1003, "Way too many requests; IP(127.0.0.1) banned until 4102444800000."),
    429: error_body(
        -1003,
        "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
    ),
    500: error_body(-1001, "Internal error; unable to process your request. Please try again."),
}
"""What Binance answers with each status; other 5xx statuses get a gateway's HTML page."""


@dataclass(frozen=True)
class Listing:
    """A spot symbol the fake exchange lists, with its price tick and amount step as Binance writes them."""

    base: str
    quote: str
    tick_size: str
    step_size: str
    min_qty: str = "0.00001000"
    min_notional: str = "5.00000000"
    status: str = "TRADING"

    @property
    def market_id(self) -> str:
        return self.base + self.quote

    def symbol_info(self) -> dict[str, Any]:
        """This listing as an entry of ``exchangeInfo["symbols"]``."""
        return {
            "symbol": self.market_id,
            "status": self.status,
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "amendAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": self.tick_size,
                    "maxPrice": "1000000.00000000",
                    "tickSize": self.tick_size,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": self.min_qty,
                    "maxQty": "9000.00000000",
                    "stepSize": self.step_size,
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": "100.00000000",
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "TRAILING_DELTA",
                    "minTrailingAboveDelta": 10,
                    "maxTrailingAboveDelta": 2000,
                    "minTrailingBelowDelta": 10,
                    "maxTrailingBelowDelta": 2000,
                },
                {
                    "filterType": "PERCENT_PRICE_BY_SIDE",
                    "bidMultiplierUp": "5",
                    "bidMultiplierDown": "0.2",
                    "askMultiplierUp": "5",
                    "askMultiplierDown": "0.2",
                    "avgPriceMins": 5,
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": self.min_notional,
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }


DEFAULT_LISTINGS: tuple[Listing, ...] = (
    Listing("BTC", "USDT", tick_size="0.01000000", step_size="0.00001000"),
    Listing("ETH", "USDT", tick_size="0.01000000", step_size="0.00010000", min_qty="0.00010000"),
    Listing(
        "ETH",
        "BTC",
        tick_size="0.00001000",
        step_size="0.00010000",
        min_qty="0.00010000",
        min_notional="0.00010000",
    ),
    Listing(
        "XRP",
        "ETH",
        tick_size="0.00000010",
        step_size="1.00000000",
        min_qty="1.00000000",
        min_notional="0.00100000",
    ),
)


@dataclass(frozen=True)
class Fault:
    """Trouble for one coming request to ``endpoint``: wait ``delay_s``, then answer ``status``.

    ``status`` 0 answers normally (late, when ``delay_s`` is set).
    """

    endpoint: str = "klines"
    status: int = 0
    delay_s: float = 0.0
    body: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, with what it answered."""

    method: str
    endpoint: str
    params: dict[str, str]
    status: int
    rows: int
    """Klines rows in the answer (0 for other endpoints and errors)."""
    delay_s: float = 0.0
    """How long the answer was held back."""

    def int_param(self, name: str) -> int | None:
        value = self.params.get(name)
        return None if value is None else int(value)


@dataclass(frozen=True)
class _Series:
    """A served bar series: open times in epoch ms and the OHLCV values as float64 columns."""

    open_ms: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Series:
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        open_ms = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(
            dtype="int64"
        )
        if len(open_ms) > 1 and not bool(np.all(np.diff(open_ms) > 0)):
            raise ValueError("bars served by the fake exchange must be sorted with unique timestamps")
        values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")
        return cls(open_ms, values)


def _price(value: float) -> str:
    """A number as Binance writes it: a decimal string (the shortest one that reads back to ``value``)."""
    return repr(float(value))


def _kline(open_ms: int, row: np.ndarray, interval_ms: int) -> list[Any]:
    """One bar as Binance's 12-field kline array."""
    open_, high, low, close, volume = (float(v) for v in row)
    trades = int(volume * 40) + 1
    return [
        open_ms,
        _price(open_),
        _price(high),
        _price(low),
        _price(close),
        _price(volume),
        open_ms + interval_ms - 1,
        f"{volume * close:.8f}",
        trades,
        f"{volume / 2:.8f}",
        f"{volume * close / 2:.8f}",
        "0",
    ]


class _Reply:
    """An HTTP answer: status, body and content type."""

    def __init__(
        self,
        status: int,
        body: str,
        content_type: str = "application/json;charset=UTF-8",
        headers: dict[str, str] | None = None,
        rows: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.rows = rows
        self.delay_s = delay_s

    @classmethod
    def json(cls, payload: object) -> _Reply:
        rows = len(payload) if isinstance(payload, list) else 0
        return cls(200, json.dumps(payload, separators=(",", ":")), rows=rows)


class FakeBinance:
    """The fake exchange: start it (or enter it as a context), feed it bars, point clients at ``url``."""

    def __init__(self, listings: Iterable[Listing] = DEFAULT_LISTINGS) -> None:
        self._listings = {listing.market_id: listing for listing in listings}
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._now_ms: int | None = None
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The REST base URL, e.g. ``http://127.0.0.1:54321``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-binance",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- scripting --------------------------------------------------------------------------------

    def serve_bars(self, symbol: str, interval: str, frame: pd.DataFrame) -> None:
        """Serve ``frame`` (a bar frame: timestamp, open, high, low, close, volume) as ``symbol``'s klines."""
        market_id = symbol.replace("/", "").upper()
        if market_id not in self._listings:
            raise ValueError(f"{symbol} is not listed on the fake exchange; add a Listing for it")
        if interval not in INTERVAL_MS:
            raise ValueError(f"interval {interval!r} is not one of Binance's: {', '.join(INTERVAL_MS)}")
        with self._lock:
            self._series[(market_id, interval)] = _Series.of(frame)

    def set_now(self, now: pd.Timestamp | None) -> None:
        """Set the venue's clock: bars opening after ``now`` are not served; the one containing it is open.

        ``None`` serves every bar handed to the server.
        """
        with self._lock:
            self._now_ms = (
                None
                if now is None
                else int(
                    (pd.Timestamp(now).tz_convert("UTC") - pd.Timestamp(0, tz="UTC"))
                    // pd.Timedelta(milliseconds=1)
                )
            )

    def fail_next(
        self,
        status: int = 0,
        *,
        delay_s: float = 0.0,
        body: str | None = None,
        times: int = 1,
        endpoint: str = "klines",
    ) -> None:
        """Queue trouble for the next ``times`` requests to ``endpoint`` (``klines``, ``exchangeInfo``, ...).

        ``status`` answers with that HTTP status and Binance's body for it (or ``body``); ``delay_s`` holds
        the answer back that long first (longer than the client's timeout, the client sees a timeout).
        """
        if status == 0 and delay_s <= 0:
            raise ValueError("a fault needs a status, a delay or both")
        with self._lock:
            self._faults.extend(Fault(endpoint, status, delay_s, body) for _ in range(times))

    def reset(self) -> None:
        """Forget faults, the clock and recorded requests (served bars stay)."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._now_ms = None

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.endpoint == endpoint]

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # --- serving ----------------------------------------------------------------------------------

    def answer(self, method: str, path: str, params: dict[str, str]) -> _Reply:
        """The reply to one request (faults applied), recorded on arrival."""
        endpoint = path.removeprefix(API_PREFIX)
        fault = self._take_fault(endpoint)
        if fault is not None and fault.status:
            reply = self._fault_reply(fault)
        else:
            reply = self._route(method, endpoint, params)
        reply.delay_s = 0.0 if fault is None else fault.delay_s
        with self._lock:
            self._requests.append(
                RecordedRequest(method, endpoint, dict(params), reply.status, reply.rows, reply.delay_s)
            )
        return reply

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering (cut short when the server stops)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.endpoint == endpoint:
                    return self._faults.pop(index)
        return None

    @staticmethod
    def _fault_reply(fault: Fault) -> _Reply:
        headers = {"Retry-After": "1"} if fault.status in (418, 429) else {}
        if fault.body is not None:
            return _Reply(fault.status, fault.body, headers=headers)
        if fault.status in DEFAULT_ERROR_BODIES:
            return _Reply(fault.status, DEFAULT_ERROR_BODIES[fault.status], headers=headers)
        return _Reply(fault.status, GATEWAY_PAGE.format(status=fault.status), "text/html", headers)

    def _route(self, method: str, endpoint: str, params: dict[str, str]) -> _Reply:
        if method != "GET":
            return _Reply(405, error_body(-1102, f"Method {method} is not served by the fake exchange."))
        if endpoint == "ping":
            return _Reply.json({})
        if endpoint == "time":
            return _Reply.json({"serverTime": self._server_time_ms()})
        if endpoint == "exchangeInfo":
            return _Reply.json(self._exchange_info())
        if endpoint == "klines":
            return self._klines(params)
        return _Reply(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")

    def _server_time_ms(self) -> int:
        with self._lock:
            now = self._now_ms
        return now if now is not None else int(time.time() * 1000)

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self._server_time_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [listing.symbol_info() for listing in self._listings.values()],
        }

    def _klines(self, params: dict[str, str]) -> _Reply:
        market_id = params.get("symbol", "")
        if market_id not in self._listings:
            return _Reply(400, error_body(-1121, "Invalid symbol."))
        interval = params.get("interval", "")
        if interval not in INTERVAL_MS:
            return _Reply(400, error_body(-1120, "Invalid interval."))
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return _Reply(400, error_body(-1100, "Illegal characters found in a parameter."))
        if not 1 <= limit <= MAX_LIMIT:
            return _Reply(400, error_body(-1130, "Data sent for parameter 'limit' is not valid."))
        with self._lock:
            series = self._series.get((market_id, interval))
            now = self._now_ms
        if series is None:
            return _Reply.json([])
        return _Reply.json(self._select(series, INTERVAL_MS[interval], start, end, limit, now))

    @staticmethod
    def _select(
        series: _Series, interval_ms: int, start: int | None, end: int | None, limit: int, now: int | None
    ) -> list[list[Any]]:
        """Binance's choice of bars: the first ``limit`` from ``startTime``, else the last ``limit``."""
        stamps = series.open_ms
        lo = 0 if start is None else int(np.searchsorted(stamps, start, side="left"))
        hi = len(stamps)
        if end is not None:
            hi = min(hi, int(np.searchsorted(stamps, end, side="right")))
        if now is not None:
            hi = min(hi, int(np.searchsorted(stamps, now, side="right")))
        if start is not None:
            hi = min(hi, lo + limit)
        else:
            lo = max(lo, hi - limit)
        return [_kline(int(stamps[i]), series.values[i], interval_ms) for i in range(lo, max(lo, hi))]


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-binance/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        fake: FakeBinance = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        reply = fake.answer(method, parts.path, params)
        fake.hold(reply.delay_s)
        payload = reply.body.encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout it was meant to see)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``FakeBinance.requests`` instead of an access log."""
