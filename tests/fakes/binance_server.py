"""A fake Binance spot REST API on 127.0.0.1, for driving the real ccxt client in tests.

Market data — the part of the API that ccxt's ``load_markets`` and ``fetch_ohlcv`` use on spot markets:

* ``GET /api/v3/exchangeInfo`` — the listed symbols with their PRICE_FILTER / LOT_SIZE / NOTIONAL filters;
* ``GET /api/v3/time`` and ``GET /api/v3/ping``;
* ``GET /api/v3/klines`` — ``symbol``, ``interval``, ``startTime``, ``endTime``, ``limit`` (default 500,
  at most 1000), answered from bar frames handed to the server, as Binance's 12-field arrays with prices as
  strings.

Spot trading — the signed endpoints ccxt's ``binance`` class calls for spot (its ``private`` API,
``https://api.binance.com/api/v3``), against a ledger kept by the fake:

* ``GET /api/v3/account`` — balances, ``free`` and ``locked`` per asset (``omitZeroBalances`` honoured);
* ``POST /api/v3/order`` — ``MARKET`` (``quantity`` or ``quoteOrderQty``) and ``LIMIT`` (``quantity``,
  ``price``, ``timeInForce`` GTC / IOC / FOK) orders, ``newClientOrderId``, ``newOrderRespType``
  ACK / RESULT / FULL (FULL, Binance's default for these types, carries the ``fills``);
* ``GET /api/v3/order`` (by ``orderId`` or ``origClientOrderId``), ``DELETE /api/v3/order``,
  ``GET /api/v3/openOrders``, ``DELETE /api/v3/openOrders`` (cancel all of a symbol), ``GET /api/v3/allOrders``;
* ``GET /api/v3/myTrades`` — ``symbol``, ``orderId``, ``fromId``, ``startTime``, ``endTime``, ``limit``.

Signed requests need the ``X-MBX-APIKEY`` header (else HTTP 401 ``-2015``), a ``timestamp`` within
``recvWindow`` of the wall clock (``-1021``) and a ``signature``: the hex HMAC-SHA256, keyed with the secret,
of the query string followed by the form body, both as sent with the ``signature`` parameter taken out
(Binance's rule; ccxt signs exactly that string). A wrong one is HTTP 400 ``-1022``.

The ledger: starting ``balances`` (free amounts per asset), a current price per symbol (``set_price``; by
default the close of the last bar the klines endpoint would serve) and a commission of ``commission_rate``
(0.1 % by default) of each fill's quote amount, always charged in the quote asset: a buy pays
``qty * price + commission`` quote, a sell receives ``qty * price - commission`` quote. Amounts are kept to
8 decimals (commission rounded half up). Market orders fill at once at the current price (as taker).
A limit order that is marketable when placed fills at once at the current price (taker); otherwise it rests
(GTC; IOC and FOK expire), locking ``qty * price + commission`` of the quote (a buy) or ``qty`` of the base (a
sell), and fills in full at its limit price (maker) once ``set_price`` crosses it. Orders are checked as
Binance does: unknown symbol ``-1121``, missing parameters ``-1102``, PRICE_FILTER / LOT_SIZE /
MARKET_LOT_SIZE / NOTIONAL violations ``-1013 Filter failure: <FILTER>``, a ``newClientOrderId`` already used
by an open or filled order ``-2010 Duplicate order sent.``, too little free balance ``-2010 Account has
insufficient balance for requested action.`` (all HTTP 400).

Tests script trouble with ``fail_next`` on any endpoint (HTTP errors with Binance's error bodies, slow answers
that outlast the client's timeout, a connection closed without an answer), ``reject_next`` (a Binance error
for the next order), ``partial_fill_next`` (the next market order fills in part and stays open) and
``lose_response_next`` (the order is placed, then the connection is closed without an answer); they set the
venue's clock with ``set_now`` (the bar containing ``now`` is served as the still-open candle, later bars are
not served) and read back every request the server received, the ``orders``, the ``trades`` and the
``balances()``.

Usage::

    with FakeBinance() as server:
        server.serve_bars("BTC/USDT", "1m", frame)
        server.fail_next(status=429)
        ...  # point a client at server.url
        assert len(server.requests_to("klines")) == 2

    with FakeBinance(balances={"USDT": Decimal(10_000)}) as server:
        server.set_price("BTC/USDT", Decimal("30000"))
        ...  # a ccxt.binance client with apiKey=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET
        server.set_price("BTC/USDT", Decimal("29000"))  # fills resting buy limits at or above 29000
        assert server.balances()["BTC"].free == Decimal("0.01")
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from tests.fakes.local_http import LocalHttpServer

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

DEFAULT_API_KEY = "fake-binance-api-key"
DEFAULT_API_SECRET = "fake-binance-api-secret"
DEFAULT_COMMISSION_RATE = Decimal("0.001")
"""0.1 % of each fill's quote amount, charged in the quote asset."""
DEFAULT_BALANCES: Mapping[str, Decimal] = {"USDT": Decimal(100_000)}
"""The starting free balances when none are given."""

SIGNED_ENDPOINTS = frozenset({"account", "order", "openOrders", "allOrders", "myTrades"})
"""The endpoints that need an API key and a signature."""
PUBLIC_ENDPOINTS = frozenset({"ping", "time", "exchangeInfo", "klines"})

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK"})
RESPONSE_TYPES = frozenset({"ACK", "RESULT", "FULL"})
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
AMOUNT_QUANTUM = Decimal("0.00000001")
"""Balances, quote amounts and commissions are kept to Binance's 8 decimals."""
_CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

INVALID_API_KEY = (-2015, "Invalid API-key, IP, or permissions for action.")
BAD_SIGNATURE = (-1022, "Signature for this request is not valid.")
INSUFFICIENT_BALANCE = (-2010, "Account has insufficient balance for requested action.")
DUPLICATE_ORDER = (-2010, "Duplicate order sent.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
NO_SUCH_ORDER = (-2013, "Order does not exist.")
INVALID_SYMBOL = (-1121, "Invalid symbol.")


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
    max_qty: str = "9000.00000000"
    market_max_qty: str = "100.00000000"
    max_price: str = "1000000.00000000"
    max_notional: str = "9000000.00000000"

    @property
    def market_id(self) -> str:
        return self.base + self.quote

    def filter_failure(self, order_type: str, quantity: Decimal, price: Decimal) -> str | None:
        """The first filter an order breaks (``"LOT_SIZE"``, ``"NOTIONAL"``, ...), or ``None``.

        ``price`` is the limit price of a limit order and the current price for a market order (Binance checks
        the notional of market orders against a recent average price; the fake uses the current price).
        PRICE_FILTER applies to limit orders only, MARKET_LOT_SIZE (a maximum) to market orders only, and
        the notional maximum to limit orders only (``applyMaxToMarket`` is false).
        """
        tick, step, min_qty = Decimal(self.tick_size), Decimal(self.step_size), Decimal(self.min_qty)
        if order_type == "LIMIT" and (
            price < tick or price > Decimal(self.max_price) or price % tick != 0
        ):
            return "PRICE_FILTER"
        if quantity < min_qty or quantity > Decimal(self.max_qty) or (quantity - min_qty) % step != 0:
            return "LOT_SIZE"
        if order_type == "MARKET" and quantity > Decimal(self.market_max_qty):
            return "MARKET_LOT_SIZE"
        notional = quantity * price
        if notional < Decimal(self.min_notional) or (
            order_type == "LIMIT" and notional > Decimal(self.max_notional)
        ):
            return "NOTIONAL"
        return None

    def floor_to_step(self, quantity: Decimal) -> Decimal:
        """``quantity`` rounded down to a whole number of LOT_SIZE steps."""
        step = Decimal(self.step_size)
        return (quantity / step).to_integral_value(rounding=ROUND_DOWN) * step

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
                    "maxPrice": self.max_price,
                    "tickSize": self.tick_size,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": self.min_qty,
                    "maxQty": self.max_qty,
                    "stepSize": self.step_size,
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": self.market_max_qty,
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
                    "maxNotional": self.max_notional,
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

    ``status`` 0 answers normally (late, when ``delay_s`` is set). ``endpoint`` ``"*"`` matches any endpoint;
    ``method`` (``"GET"``, ``"POST"``, ``"DELETE"``) narrows the match, ``None`` matches any method.
    ``drop`` closes the connection without an answer and without handling the request; ``lose_response``
    handles the request (an order is placed) and then closes the connection without an answer.
    """

    endpoint: str = "klines"
    status: int = 0
    delay_s: float = 0.0
    body: str | None = None
    method: str | None = None
    drop: bool = False
    lose_response: bool = False

    def matches(self, method: str, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint) and self.method in (None, method)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, with what it answered."""

    method: str
    endpoint: str
    params: dict[str, str]
    status: int
    """The HTTP status answered; for a lost response the one that would have been sent; 0 when dropped unread."""
    rows: int
    """Rows in a list answer (klines, orders, trades); 0 for other answers and errors."""
    delay_s: float = 0.0
    """How long the answer was held back."""
    api_key: str | None = None
    """The ``X-MBX-APIKEY`` header, when sent."""
    dropped: bool = False
    """The connection was closed without an answer (``fail_next(drop=True)`` or ``lose_response_next``)."""

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


def _amount(value: Decimal) -> str:
    """An amount as Binance writes it: a fixed-point string with 8 decimals, e.g. ``"0.01000000"``."""
    return f"{value.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP):f}"


def _q8(value: Decimal) -> Decimal:
    """``value`` rounded half up to 8 decimals (the ledger's precision)."""
    return value.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Balance:
    """One asset of the account: ``free`` to trade and ``locked`` by open orders."""

    free: Decimal
    locked: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True)
class VenueTrade:
    """One fill of an order, as the venue booked it (``commission`` is in ``commission_asset``, the quote)."""

    trade_id: int
    order_id: int
    symbol: str
    """The market id, e.g. ``BTCUSDT``."""
    side: str
    """``BUY`` or ``SELL``."""
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool

    def as_fill(self) -> dict[str, Any]:
        """This trade as an entry of a FULL order response's ``fills``."""
        return {
            "price": _amount(self.price),
            "qty": _amount(self.qty),
            "commission": _amount(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.trade_id,
        }

    def as_my_trade(self) -> dict[str, Any]:
        """This trade as an entry of ``GET /api/v3/myTrades``."""
        return {
            "symbol": self.symbol,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": _amount(self.price),
            "qty": _amount(self.qty),
            "quoteQty": _amount(self.quote_qty),
            "commission": _amount(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time_ms,
            "isBuyer": self.side == "BUY",
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }


@dataclass
class VenueOrder:
    """An order on the fake venue. ``FakeBinance.orders`` hands out copies: changing them changes nothing."""

    order_id: int
    client_order_id: str
    symbol: str
    """The market id, e.g. ``BTCUSDT``."""
    side: str
    """``BUY`` or ``SELL``."""
    type: str
    """``MARKET`` or ``LIMIT``."""
    time_in_force: str
    quantity: Decimal
    price: Decimal
    """The limit price; 0 for a market order."""
    status: str
    """``NEW``, ``PARTIALLY_FILLED``, ``FILLED``, ``CANCELED`` or ``EXPIRED``."""
    time_ms: int
    update_ms: int
    orig_quote_qty: Decimal = Decimal(0)
    executed_qty: Decimal = Decimal(0)
    quote_qty: Decimal = Decimal(0)
    """The quote amount filled so far (Binance's ``cummulativeQuoteQty``), commission not included."""
    locked: Decimal = Decimal(0)
    """What this order still holds locked: quote for a buy, base for a sell."""
    trade_ids: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def copy(self) -> VenueOrder:
        return replace(self, trade_ids=list(self.trade_ids))

    def summary(self) -> dict[str, Any]:
        """The fields every order answer shares (RESULT responses, queries and cancels)."""
        return {
            "price": _amount(self.price),
            "origQty": _amount(self.quantity),
            "executedQty": _amount(self.executed_qty),
            "origQuoteOrderQty": _amount(self.orig_quote_qty),
            "cummulativeQuoteQty": _amount(self.quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
        }

    def as_query(self) -> dict[str, Any]:
        """This order as ``GET /api/v3/order``, ``openOrders`` and ``allOrders`` answer it."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            **self.summary(),
            "stopPrice": _amount(Decimal(0)),
            "icebergQty": _amount(Decimal(0)),
            "time": self.time_ms,
            "updateTime": self.update_ms,
            "isWorking": True,
            "workingTime": self.time_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


class _Rejection(Exception):
    """A request the venue refuses: HTTP ``status`` with Binance's ``{"code", "msg"}`` body."""

    def __init__(self, error: tuple[int, str], status: int = 400) -> None:
        super().__init__(error[1])
        self.code, self.msg = error
        self.status = status


def _missing(name: str) -> _Rejection:
    return _Rejection((-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."))


def _decimal_param(params: Mapping[str, str], name: str) -> Decimal | None:
    """A positive decimal parameter (``None`` when absent); ``-1100`` when it is not a plain decimal."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0 or not re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", raw):
        raise _Rejection((-1100, f"Illegal characters found in parameter '{name}'; legal range is a decimal > 0."))
    return value


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _Rejection((-1100, f"Illegal characters found in parameter '{name}'.")) from None


def _without_signature(raw: str) -> str:
    """A query string or form body with its ``signature`` parameter taken out, otherwise byte for byte."""
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


class _Reply:
    """An HTTP answer: status, body and content type (or, with ``drop``, no answer: the connection closes)."""

    def __init__(
        self,
        status: int,
        body: str,
        content_type: str = "application/json;charset=UTF-8",
        headers: dict[str, str] | None = None,
        rows: int = 0,
        delay_s: float = 0.0,
        drop: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.rows = rows
        self.delay_s = delay_s
        self.drop = drop

    @classmethod
    def json(cls, payload: object) -> _Reply:
        rows = len(payload) if isinstance(payload, list) else 0
        return cls(200, json.dumps(payload, separators=(",", ":")), rows=rows)

    @classmethod
    def rejection(cls, rejection: _Rejection) -> _Reply:
        return cls(rejection.status, error_body(rejection.code, rejection.msg))


class FakeBinance(LocalHttpServer):
    """The fake exchange: start it (or enter it as a context), feed it bars, point clients at ``url``.

    ``balances`` are the starting free balances (``DEFAULT_BALANCES`` when not given); ``api_key`` and
    ``api_secret`` are the credentials signed requests must carry; ``commission_rate`` is the share of each
    fill's quote amount charged as commission, in the quote asset.
    """

    def __init__(
        self,
        listings: Iterable[Listing] = DEFAULT_LISTINGS,
        *,
        balances: Mapping[str, Decimal | int | str] | None = None,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        commission_rate: Decimal | str = DEFAULT_COMMISSION_RATE,
    ) -> None:
        self._listings = {listing.market_id: listing for listing in listings}
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._now_ms: int | None = None
        self.api_key = api_key
        self.api_secret = api_secret
        self.commission_rate = Decimal(commission_rate)
        self._starting_balances = {
            asset: Decimal(amount) for asset, amount in (DEFAULT_BALANCES if balances is None else balances).items()
        }
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        self._prices: dict[str, Decimal] = {}
        self._orders: list[VenueOrder] = []
        self._trades: list[VenueTrade] = []
        self._partial_fractions: list[Decimal] = []
        self._order_ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)
        self._generated_ids = itertools.count(1)
        self._reset_ledger()
        self._listen(_Handler)

    thread_name = "fake-binance"

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

        ``None`` serves every bar handed to the server. Orders and trades are stamped with this clock too
        (the wall clock when it is not set); signed requests' timestamps are checked against the wall clock.
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
        method: str | None = None,
        drop: bool = False,
    ) -> None:
        """Queue trouble for the next ``times`` requests to ``endpoint`` (``klines``, ``order``, ... or ``*``).

        ``status`` answers with that HTTP status and Binance's body for it (or ``body``) without handling the
        request; ``delay_s`` holds the answer back that long first (longer than the client's timeout, the
        client sees a timeout; with no ``status`` the request is handled, so an order is placed);
        ``drop`` closes the connection without any answer, the request unhandled. ``method`` narrows the
        match (``"POST"`` for order placement, ``"GET"`` for order queries).
        """
        if status == 0 and delay_s <= 0 and not drop:
            raise ValueError("a fault needs a status, a delay, a drop or a combination")
        fault = Fault(endpoint, status, delay_s, body, None if method is None else method.upper(), drop)
        with self._lock:
            self._faults.extend(fault for _ in range(times))

    def reject_next(
        self,
        code: int,
        msg: str,
        *,
        status: int = 400,
        endpoint: str = "order",
        method: str | None = "POST",
        times: int = 1,
    ) -> None:
        """Refuse the next ``times`` order placements (by default) with Binance's ``{"code", "msg"}`` body.

        Nothing is placed. E.g. ``reject_next(-2010, "Market is closed.")``.
        """
        self.fail_next(status, body=error_body(code, msg), times=times, endpoint=endpoint, method=method)

    def lose_response_next(self, *, endpoint: str = "order", method: str | None = "POST", times: int = 1) -> None:
        """Handle the next ``times`` matching requests — an order IS placed — then close the connection unanswered.

        The client sees a network error and cannot know whether its order reached the venue: it must look it up
        (by client order id) rather than send it again.
        """
        fault = Fault(endpoint, method=None if method is None else method.upper(), lose_response=True)
        with self._lock:
            self._faults.extend(fault for _ in range(times))

    def partial_fill_next(self, fraction: float | Decimal | str) -> None:
        """Fill only ``fraction`` (0 < fraction < 1) of the next market order at once, rounded down to its step.

        The order stays ``PARTIALLY_FILLED`` (``NEW`` if nothing was filled), its remainder's funds locked, until
        ``complete_partial`` or the next ``set_price`` of its symbol fills the rest at the current price, or it
        is cancelled. Queued calls apply to successive market orders. Funds are not checked again when the rest
        fills: a buy remainder filled at a higher price takes the difference from the free quote balance.
        """
        value = Decimal(str(fraction))
        if not 0 < value < 1:
            raise ValueError(f"a partial fill fraction must be between 0 and 1, not {fraction}")
        with self._lock:
            self._partial_fractions.append(value)

    def set_price(self, symbol: str, price: Decimal | float | str | int) -> None:
        """Set ``symbol``'s current price and fill what it crosses, oldest order first.

        Resting buy limits at or above ``price`` and sell limits at or below it fill in full at their limit
        price (maker); open market-order remainders fill at ``price`` (taker).
        """
        market_id = self._market_id(symbol)
        value = Decimal(str(price))
        if value <= 0:
            raise ValueError(f"a price must be positive, not {price}")
        with self._lock:
            self._prices[market_id] = value
            for order in self._orders:
                if not order.is_open or order.symbol != market_id:
                    continue
                if order.type == "MARKET":
                    self._fill(order, order.remaining, value, is_maker=False)
                elif (order.side == "BUY" and value <= order.price) or (order.side == "SELL" and value >= order.price):
                    self._fill(order, order.remaining, order.price, is_maker=True)

    def complete_partial(self, order: VenueOrder | int | str) -> VenueOrder:
        """Fill the rest of an open order now: a market order at the current price, a limit one at its price.

        ``order`` is a ``VenueOrder``, an order id or a client order id. Returns the order as it is after.
        """
        with self._lock:
            target = self._find(order)
            if target is None or not target.is_open:
                raise ValueError(f"order {order!r} is not open on the fake exchange")
            if target.type == "MARKET":
                price = self._current_price(target.symbol)
                if price is None:
                    raise ValueError(f"no price for {target.symbol}: call set_price first")
                self._fill(target, target.remaining, price, is_maker=False)
            else:
                self._fill(target, target.remaining, target.price, is_maker=True)
            return target.copy()

    def set_balance(self, asset: str, free: Decimal | int | str) -> None:
        """Set ``asset``'s free balance (what open orders lock stays locked)."""
        with self._lock:
            self._free[asset.upper()] = Decimal(free)

    def reset(self) -> None:
        """Forget faults, the clock, recorded requests, orders, trades and set prices; restore the balances.

        Served bars stay.
        """
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._now_ms = None
            self._reset_ledger()

    # --- introspection ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        """The requests to ``endpoint`` (``klines``, ``order``, ...), of ``method`` when given."""
        return [
            request
            for request in self.requests
            if request.endpoint == endpoint and (method is None or request.method == method.upper())
        ]

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def orders(self) -> list[VenueOrder]:
        """Every order placed so far (copies), oldest first, whatever its status."""
        with self._lock:
            return [order.copy() for order in self._orders]

    @property
    def trades(self) -> list[VenueTrade]:
        """Every fill so far, oldest first."""
        with self._lock:
            return list(self._trades)

    def order(self, ref: int | str) -> VenueOrder | None:
        """The order with id ``ref`` (an int) or client order id ``ref`` (a str; the latest one using it)."""
        with self._lock:
            found = self._find(ref)
            return None if found is None else found.copy()

    def balances(self) -> dict[str, Balance]:
        """Every asset the account holds or has held, and every listed asset, with its free and locked amounts."""
        with self._lock:
            assets = sorted(
                {*self._free, *self._locked}
                | {listing.base for listing in self._listings.values()}
                | {listing.quote for listing in self._listings.values()}
            )
            return {
                asset: Balance(self._free.get(asset, Decimal(0)), self._locked.get(asset, Decimal(0)))
                for asset in assets
            }

    def price(self, symbol: str) -> Decimal | None:
        """``symbol``'s current price: the last ``set_price``, else the close of the last bar served."""
        return self._current_price(self._market_id(symbol))

    # --- serving ----------------------------------------------------------------------------------

    def answer(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        *,
        raw_query: str = "",
        raw_body: str = "",
        api_key: str | None = None,
    ) -> _Reply:
        """The reply to one request (faults applied), recorded on arrival.

        ``params`` are the query and form-body parameters together; ``raw_query`` and ``raw_body`` are the
        strings as sent (a signature is checked against them) and ``api_key`` the ``X-MBX-APIKEY`` header.
        """
        endpoint = path.removeprefix(API_PREFIX)
        fault = self._take_fault(method, endpoint)
        if fault is not None and fault.drop:
            reply = _Reply(0, "", drop=True)
        elif fault is not None and fault.status:
            reply = self._fault_reply(fault)
        else:
            reply = self._route(method, endpoint, params, raw_query, raw_body, api_key)
            reply.drop = fault is not None and fault.lose_response
        reply.delay_s = 0.0 if fault is None else fault.delay_s
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method,
                    endpoint,
                    dict(params),
                    reply.status,
                    reply.rows,
                    reply.delay_s,
                    api_key,
                    reply.drop,
                )
            )
        return reply

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering (cut short when the server stops)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self, method: str, endpoint: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, endpoint):
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

    def _route(
        self,
        method: str,
        endpoint: str,
        params: dict[str, str],
        raw_query: str = "",
        raw_body: str = "",
        api_key: str | None = None,
    ) -> _Reply:
        if endpoint in PUBLIC_ENDPOINTS and method != "GET":
            return _Reply(405, error_body(-1102, f"Method {method} is not served by the fake exchange."))
        if endpoint == "ping":
            return _Reply.json({})
        if endpoint == "time":
            return _Reply.json({"serverTime": self._server_time_ms()})
        if endpoint == "exchangeInfo":
            return _Reply.json(self._exchange_info())
        if endpoint == "klines":
            return self._klines(params)
        handler = self._signed_handlers().get((method, endpoint))
        if handler is None:
            if endpoint in SIGNED_ENDPOINTS:
                return _Reply(405, error_body(-1102, f"Method {method} is not served by the fake exchange."))
            return _Reply(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")
        try:
            self._authenticate(params, raw_query, raw_body, api_key)
            with self._lock:
                return handler(params)
        except _Rejection as rejection:
            return _Reply.rejection(rejection)

    def _signed_handlers(self) -> dict[tuple[str, str], Callable[[dict[str, str]], _Reply]]:
        return {
            ("GET", "account"): self._account,
            ("POST", "order"): self._place,
            ("GET", "order"): self._query_order,
            ("DELETE", "order"): self._cancel,
            ("GET", "openOrders"): self._open_orders,
            ("DELETE", "openOrders"): self._cancel_all,
            ("GET", "allOrders"): self._all_orders,
            ("GET", "myTrades"): self._my_trades,
        }

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

    # --- signed requests --------------------------------------------------------------------------

    def _authenticate(self, params: dict[str, str], raw_query: str, raw_body: str, api_key: str | None) -> None:
        """Binance's checks of a signed request, in its order: API key, timestamp, signature."""
        if not api_key or not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            raise _Rejection(INVALID_API_KEY, status=401)
        timestamp = _int_param(params, "timestamp")
        if timestamp is None:
            raise _missing("timestamp")
        recv_window = _int_param(params, "recvWindow")
        recv_window = DEFAULT_RECV_WINDOW_MS if recv_window is None else recv_window
        if recv_window > MAX_RECV_WINDOW_MS:
            raise _Rejection((-1131, "recvWindow must be less than 60000"))
        now = int(time.time() * 1000)
        if timestamp > now + 1000:
            raise _Rejection((-1021, "Timestamp for this request was 1000ms ahead of the server's time."))
        if now - timestamp > recv_window:
            raise _Rejection((-1021, "Timestamp for this request is outside of the recvWindow."))
        signature = params.get("signature")
        if not signature:
            raise _missing("signature")
        payload = _without_signature(raw_query) + _without_signature(raw_body)
        expected = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise _Rejection(BAD_SIGNATURE)

    def _account(self, params: dict[str, str]) -> _Reply:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        maker_bps = int(self.commission_rate * 10_000)
        rate, zero = _amount(self.commission_rate), _amount(Decimal(0))
        balances = [
            {"asset": asset, "free": _amount(balance.free), "locked": _amount(balance.locked)}
            for asset, balance in self.balances().items()
            if not (omit_zero and balance.total == 0)
        ]
        return _Reply.json(
            {
                "makerCommission": maker_bps,
                "takerCommission": maker_bps,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {"maker": rate, "taker": rate, "buyer": zero, "seller": zero},
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": self._server_time_ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": 354937868,
            }
        )

    def _place(self, params: dict[str, str]) -> _Reply:
        """``POST /api/v3/order``: validate, check funds, place, fill what can fill, answer ACK/RESULT/FULL."""
        listing = self._listing(params)
        side = params.get("side", "")
        if not side:
            raise _missing("side")
        if side not in ("BUY", "SELL"):
            raise _Rejection((-1100, "Illegal characters found in parameter 'side'; legal range is 'BUY, SELL'."))
        order_type = params.get("type", "")
        if not order_type:
            raise _missing("type")
        if order_type not in ("MARKET", "LIMIT"):
            raise _Rejection((-1116, "Invalid orderType."))
        response_type = params.get("newOrderRespType", "FULL")
        if response_type not in RESPONSE_TYPES:
            raise _Rejection((-1100, "Illegal characters found in parameter 'newOrderRespType'."))
        client_order_id = params.get("newClientOrderId") or f"fake{next(self._generated_ids):018d}"
        if not _CLIENT_ORDER_ID.match(client_order_id):
            raise _Rejection((-1100, "Illegal characters found in parameter 'newClientOrderId'."))
        if any(
            order.client_order_id == client_order_id and order.status in ("NEW", "PARTIALLY_FILLED", "FILLED")
            for order in self._orders
        ):
            raise _Rejection(DUPLICATE_ORDER)

        quantity = _decimal_param(params, "quantity")
        current = self._current_price(listing.market_id)
        orig_quote_qty = Decimal(0)
        if order_type == "LIMIT":
            time_in_force = params.get("timeInForce", "")
            if not time_in_force:
                raise _missing("timeInForce")
            if time_in_force not in TIME_IN_FORCE:
                raise _Rejection((-1115, "Invalid timeInForce."))
            price = _decimal_param(params, "price")
            if price is None:
                raise _missing("price")
            if quantity is None:
                raise _missing("quantity")
            reference = price
        else:
            time_in_force, price = "GTC", Decimal(0)
            quote_order_qty = _decimal_param(params, "quoteOrderQty")
            if quantity is None and quote_order_qty is None:
                raise _Rejection((-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"))
            if current is None:
                raise _Rejection(
                    (-2010, f"The fake exchange has no price for {listing.market_id}: call set_price or serve_bars.")
                )
            reference = current
            if quantity is None and quote_order_qty is not None:
                orig_quote_qty = quote_order_qty
                quantity = listing.floor_to_step(quote_order_qty / current)
        assert quantity is not None
        failure = listing.filter_failure(order_type, quantity, reference)
        if failure is not None:
            raise _Rejection((-1013, f"Filter failure: {failure}"))
        if side == "BUY":
            notional = _q8(quantity * reference)
            needed, asset = notional + self._commission(notional), listing.quote
        else:
            needed, asset = quantity, listing.base
        if self._free.get(asset, Decimal(0)) < needed:
            raise _Rejection(INSUFFICIENT_BALANCE)

        now = self._server_time_ms()
        order = VenueOrder(
            order_id=next(self._order_ids),
            client_order_id=client_order_id,
            symbol=listing.market_id,
            side=side,
            type=order_type,
            time_in_force=time_in_force,
            quantity=quantity,
            price=price,
            status="NEW",
            time_ms=now,
            update_ms=now,
            orig_quote_qty=orig_quote_qty,
        )
        self._orders.append(order)
        first_trade = len(self._trades)
        if order_type == "MARKET":
            assert current is not None
            fraction = self._partial_fractions.pop(0) if self._partial_fractions else None
            if fraction is None:
                self._fill(order, quantity, current, is_maker=False)
            else:
                partial = listing.floor_to_step(quantity * fraction)
                if partial > 0:
                    self._fill(order, partial, current, is_maker=False)
                self._lock_funds(order, current)
        elif current is not None and ((side == "BUY" and current <= price) or (side == "SELL" and current >= price)):
            self._fill(order, quantity, current, is_maker=False)
        elif time_in_force == "GTC":
            self._lock_funds(order, price)
        else:
            order.status = "EXPIRED"
        return _Reply.json(self._placement(order, response_type, self._trades[first_trade:]))

    def _placement(self, order: VenueOrder, response_type: str, fills: list[VenueTrade]) -> dict[str, Any]:
        """The answer to a placement: ACK (ids), RESULT (and the order) or FULL (and its fills)."""
        answer: dict[str, Any] = {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time_ms,
        }
        if response_type == "ACK":
            return answer
        answer.update(order.summary())
        answer["workingTime"] = order.time_ms
        answer["selfTradePreventionMode"] = "EXPIRE_MAKER"
        if response_type == "FULL":
            answer["fills"] = [trade.as_fill() for trade in fills]
        return answer

    def _query_order(self, params: dict[str, str]) -> _Reply:
        order = self._order_of(params)
        if order is None:
            raise _Rejection(NO_SUCH_ORDER)
        return _Reply.json(order.as_query())

    def _cancel(self, params: dict[str, str]) -> _Reply:
        """``DELETE /api/v3/order``: as Binance, ``clientOrderId`` in the answer is the cancel's own id.

        The order's client id is in ``origClientOrderId``; the cancel's is ``newClientOrderId`` or generated.
        """
        order = self._order_of(params)
        if order is None or not order.is_open:
            raise _Rejection(UNKNOWN_ORDER)
        return _Reply.json(self._cancelled(order, params.get("newClientOrderId")))

    def _cancelled(self, order: VenueOrder, cancel_id: str | None) -> dict[str, Any]:
        self._release(order)
        order.status = "CANCELED"
        order.update_ms = self._server_time_ms()
        return {
            "symbol": order.symbol,
            "origClientOrderId": order.client_order_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": cancel_id or f"cancel{next(self._generated_ids):016d}",
            "transactTime": order.update_ms,
            **order.summary(),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _cancel_all(self, params: dict[str, str]) -> _Reply:
        listing = self._listing(params)
        open_orders = [order for order in self._orders if order.is_open and order.symbol == listing.market_id]
        if not open_orders:
            raise _Rejection(UNKNOWN_ORDER)
        return _Reply.json([self._cancelled(order, None) for order in open_orders])

    def _open_orders(self, params: dict[str, str]) -> _Reply:
        market_id = self._listing(params).market_id if params.get("symbol") else None
        return _Reply.json(
            [
                order.as_query()
                for order in self._orders
                if order.is_open and (market_id is None or order.symbol == market_id)
            ]
        )

    def _all_orders(self, params: dict[str, str]) -> _Reply:
        """``GET /api/v3/allOrders``: a symbol's orders from ``orderId`` or in a time range, oldest first."""
        listing = self._listing(params)
        from_id = _int_param(params, "orderId")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        limit = self._limit(params)
        orders = [
            order
            for order in self._orders
            if order.symbol == listing.market_id
            and (from_id is None or order.order_id >= from_id)
            and (start is None or order.time_ms >= start)
            and (end is None or order.time_ms <= end)
        ]
        chosen = orders[:limit] if from_id is not None or start is not None else orders[-limit:]
        return _Reply.json([order.as_query() for order in chosen])

    def _my_trades(self, params: dict[str, str]) -> _Reply:
        """``GET /api/v3/myTrades``: from ``fromId`` or ``startTime`` the oldest first, else the latest ``limit``."""
        listing = self._listing(params)
        order_id = _int_param(params, "orderId")
        from_id = _int_param(params, "fromId")
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        limit = self._limit(params)
        trades = [
            trade
            for trade in self._trades
            if trade.symbol == listing.market_id
            and (order_id is None or trade.order_id == order_id)
            and (from_id is None or trade.trade_id >= from_id)
            and (start is None or trade.time_ms >= start)
            and (end is None or trade.time_ms <= end)
        ]
        chosen = trades[:limit] if from_id is not None or start is not None else trades[-limit:]
        return _Reply.json([trade.as_my_trade() for trade in chosen])

    # --- the ledger -------------------------------------------------------------------------------

    def _reset_ledger(self) -> None:
        self._free = dict(self._starting_balances)
        self._locked = {}
        self._prices.clear()
        self._orders.clear()
        self._trades.clear()
        self._partial_fractions.clear()

    def _market_id(self, symbol: str) -> str:
        market_id = symbol.replace("/", "").upper()
        if market_id not in self._listings:
            raise ValueError(f"{symbol} is not listed on the fake exchange; add a Listing for it")
        return market_id

    def _listing(self, params: Mapping[str, str]) -> Listing:
        market_id = params.get("symbol")
        if not market_id:
            raise _missing("symbol")
        listing = self._listings.get(market_id)
        if listing is None:
            raise _Rejection(INVALID_SYMBOL)
        return listing

    @staticmethod
    def _limit(params: Mapping[str, str]) -> int:
        limit = _int_param(params, "limit")
        if limit is None:
            return DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise _Rejection((-1130, "Data sent for parameter 'limit' is not valid."))
        return limit

    def _order_of(self, params: Mapping[str, str]) -> VenueOrder | None:
        """The order a query or cancel names by ``orderId`` or ``origClientOrderId``, on its symbol."""
        listing = self._listing(params)
        order_id = _int_param(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise _Rejection((-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"))
        found = self._find(order_id if order_id is not None else str(client_id))
        if found is None or found.symbol != listing.market_id:
            return None
        if client_id and found.client_order_id != client_id:
            return None
        return found

    def _find(self, ref: VenueOrder | int | str) -> VenueOrder | None:
        """An order by ``VenueOrder``, id or client id (the latest order with that client id)."""
        if isinstance(ref, VenueOrder):
            ref = ref.order_id
        if isinstance(ref, int):
            return next((order for order in self._orders if order.order_id == ref), None)
        return next((order for order in reversed(self._orders) if order.client_order_id == ref), None)

    def _current_price(self, market_id: str) -> Decimal | None:
        """The last ``set_price``; else the close of the latest bar the klines endpoint would serve."""
        with self._lock:
            price = self._prices.get(market_id)
            if price is not None:
                return price
            latest: tuple[int, int, float] | None = None
            for (series_market, interval), series in self._series.items():
                if series_market != market_id or len(series.open_ms) == 0:
                    continue
                end = len(series.open_ms)
                if self._now_ms is not None:
                    end = int(np.searchsorted(series.open_ms, self._now_ms, side="right"))
                if end == 0:
                    continue
                candidate = (int(series.open_ms[end - 1]), -INTERVAL_MS[interval], float(series.values[end - 1][3]))
                if latest is None or candidate > latest:
                    latest = candidate
            return None if latest is None else Decimal(_price(latest[2]))

    def _commission(self, quote_qty: Decimal) -> Decimal:
        return _q8(quote_qty * self.commission_rate)

    def _move(self, book: dict[str, Decimal], asset: str, amount: Decimal) -> None:
        book[asset] = book.get(asset, Decimal(0)) + amount

    def _lock_funds(self, order: VenueOrder, price: Decimal) -> None:
        """Lock what the order's remainder may need at ``price``: quote and commission (buy) or base (sell)."""
        listing = self._listings[order.symbol]
        if order.side == "BUY":
            notional = _q8(order.remaining * price)
            amount, asset = notional + self._commission(notional), listing.quote
        else:
            amount, asset = order.remaining, listing.base
        amount = min(amount, self._free.get(asset, Decimal(0)))
        self._move(self._free, asset, -amount)
        self._move(self._locked, asset, amount)
        order.locked += amount

    def _release(self, order: VenueOrder) -> None:
        """Give back to free whatever the order still holds locked."""
        listing = self._listings[order.symbol]
        asset = listing.quote if order.side == "BUY" else listing.base
        self._move(self._locked, asset, -order.locked)
        self._move(self._free, asset, order.locked)
        order.locked = Decimal(0)

    def _spend(self, order: VenueOrder, asset: str, amount: Decimal) -> None:
        """Take ``amount`` of ``asset`` for ``order``: from its lock first, the rest from free."""
        from_lock = min(order.locked, amount)
        order.locked -= from_lock
        self._move(self._locked, asset, -from_lock)
        self._move(self._free, asset, -(amount - from_lock))

    def _fill(self, order: VenueOrder, qty: Decimal, price: Decimal, *, is_maker: bool) -> None:
        """Book a fill of ``qty`` at ``price``: move the balances, record the trade, update the order."""
        listing = self._listings[order.symbol]
        quote_qty = _q8(qty * price)
        commission = self._commission(quote_qty)
        if order.side == "BUY":
            self._spend(order, listing.quote, quote_qty + commission)
            self._move(self._free, listing.base, qty)
        else:
            self._spend(order, listing.base, qty)
            self._move(self._free, listing.quote, quote_qty - commission)
        now = self._server_time_ms()
        trade = VenueTrade(
            trade_id=next(self._trade_ids),
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=quote_qty,
            commission=commission,
            commission_asset=listing.quote,
            time_ms=now,
            is_maker=is_maker,
        )
        self._trades.append(trade)
        order.trade_ids.append(trade.trade_id)
        order.executed_qty += qty
        order.quote_qty += quote_qty
        order.update_ms = now
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self._release(order)


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-binance/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        fake: FakeBinance = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode("utf-8") if length > 0 else ""
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if raw_body and "json" not in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        reply = fake.answer(
            method,
            parts.path,
            params,
            raw_query=parts.query,
            raw_body=raw_body,
            api_key=self.headers.get("X-MBX-APIKEY"),
        )
        fake.hold(reply.delay_s)
        if reply.drop:
            self.close_connection = True  # no status line, no body: the client sees the connection closed
            return
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
