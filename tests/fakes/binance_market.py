"""The fake Binance's market data: the spot symbols it lists and the bars it serves, with the venue's clock.

The public endpoints ccxt reads them from on spot markets (``load_markets``, ``fetch_ohlcv``):

* ``GET /api/v3/exchangeInfo`` — the listed symbols with their PRICE_FILTER / LOT_SIZE / NOTIONAL filters;
* ``GET /api/v3/time``;
* ``GET /api/v3/klines`` — ``symbol``, ``interval``, ``startTime``, ``limit`` (default 500, at most 1000),
  answered from bar frames handed to the server, as Binance's 12-field arrays with prices as strings.

The venue's clock (``set_now``): the bar containing ``now`` is served as the still-open candle, later bars are
not served, and orders and trades are stamped with it (the wall clock when it is not set).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np
import pandas as pd

from tests.fakes.binance_records import DEFAULT_LIMIT, INVALID_SYMBOL, MAX_LIMIT, Rejection, missing

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

        ``price`` is the limit price of a limit order, the trigger of a stop (``STOP_LOSS``) and the current price
        for a market order (Binance checks the notional of market orders against a recent average price; the fake
        uses the current price). PRICE_FILTER applies to limit prices and stop triggers, MARKET_LOT_SIZE (a
        maximum) to market and stop orders (a stop becomes a market order), and the notional maximum to limit
        orders only (``applyMaxToMarket`` is false).
        """
        tick, step, min_qty = Decimal(self.tick_size), Decimal(self.step_size), Decimal(self.min_qty)
        if order_type in ("LIMIT", "STOP_LOSS") and (
            price < tick or price > Decimal(self.max_price) or price % tick != 0
        ):
            return "PRICE_FILTER"
        if quantity < min_qty or quantity > Decimal(self.max_qty) or (quantity - min_qty) % step != 0:
            return "LOT_SIZE"
        if order_type in ("MARKET", "STOP_LOSS") and quantity > Decimal(self.market_max_qty):
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
class Series:
    """A served bar series: open times in epoch ms and the OHLCV values as float64 columns."""

    open_ms: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Series:
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        open_ms = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(
            dtype="int64"
        )
        if len(open_ms) > 1 and not bool(np.all(np.diff(open_ms) > 0)):
            raise ValueError("bars served by the fake exchange must be sorted with unique timestamps")
        values = frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")
        return cls(open_ms, values)


def price_text(value: float) -> str:
    """A number as Binance writes it: a decimal string (the shortest one that reads back to ``value``)."""
    return repr(float(value))


def kline(open_ms: int, row: np.ndarray, interval_ms: int) -> list[Any]:
    """One bar as Binance's 12-field kline array."""
    open_, high, low, close, volume = (float(v) for v in row)
    trades = int(volume * 40) + 1
    return [
        open_ms,
        price_text(open_),
        price_text(high),
        price_text(low),
        price_text(close),
        price_text(volume),
        open_ms + interval_ms - 1,
        f"{volume * close:.8f}",
        trades,
        f"{volume / 2:.8f}",
        f"{volume * close / 2:.8f}",
        "0",
    ]


class MarketData:
    """The listings, the served bar series and the venue's clock, guarded by the fake's ``lock``."""

    def __init__(self, listings: Iterable[Listing], lock: threading.RLock) -> None:
        self.listings = {listing.market_id: listing for listing in listings}
        self._lock = lock
        self._series: dict[tuple[str, str], Series] = {}
        self._now_ms: int | None = None

    def serve_bars(self, symbol: str, interval: str, frame: pd.DataFrame) -> None:
        market_id = self.market_id(symbol)
        if interval not in INTERVAL_MS:
            raise ValueError(f"interval {interval!r} is not one of Binance's: {', '.join(INTERVAL_MS)}")
        with self._lock:
            self._series[(market_id, interval)] = Series.of(frame)

    def set_now(self, now: pd.Timestamp | None) -> None:
        with self._lock:
            self._now_ms = (
                None
                if now is None
                else int(
                    (pd.Timestamp(now).tz_convert("UTC") - pd.Timestamp(0, tz="UTC"))
                    // pd.Timedelta(milliseconds=1)
                )
            )

    def server_time_ms(self) -> int:
        """The venue's clock in epoch ms: ``set_now``'s time, else the wall clock."""
        with self._lock:
            now = self._now_ms
        return now if now is not None else int(time.time() * 1000)

    def market_id(self, symbol: str) -> str:
        """``BTC/USDT`` as ``BTCUSDT``; ``ValueError`` when it is not listed."""
        market_id = symbol.replace("/", "").upper()
        if market_id not in self.listings:
            raise ValueError(f"{symbol} is not listed on the fake exchange; add a Listing for it")
        return market_id

    def listing_of(self, params: Mapping[str, str]) -> Listing:
        """The listing a request's ``symbol`` names (``-1102`` when missing, ``-1121`` when not listed)."""
        market_id = params.get("symbol")
        if not market_id:
            raise missing("symbol")
        listing = self.listings.get(market_id)
        if listing is None:
            raise Rejection(INVALID_SYMBOL)
        return listing

    def exchange_info(self) -> dict[str, Any]:
        """``GET /api/v3/exchangeInfo``."""
        return {
            "timezone": "UTC",
            "serverTime": self.server_time_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [listing.symbol_info() for listing in self.listings.values()],
        }

    def klines(self, params: Mapping[str, str]) -> list[list[Any]]:
        """``GET /api/v3/klines``: Binance's choice of bars, the first ``limit`` from ``startTime``, else the
        last ``limit``, none opening after the venue's clock."""
        market_id = params.get("symbol", "")
        if market_id not in self.listings:
            raise Rejection(INVALID_SYMBOL)
        interval = params.get("interval", "")
        if interval not in INTERVAL_MS:
            raise Rejection((-1120, "Invalid interval."))
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
            start = int(params["startTime"]) if "startTime" in params else None
        except ValueError:
            raise Rejection((-1100, "Illegal characters found in a parameter.")) from None
        if not 1 <= limit <= MAX_LIMIT:
            raise Rejection((-1130, "Data sent for parameter 'limit' is not valid."))
        with self._lock:
            series = self._series.get((market_id, interval))
            now = self._now_ms
        if series is None:
            return []
        stamps = series.open_ms
        lo = 0 if start is None else int(np.searchsorted(stamps, start, side="left"))
        hi = len(stamps)
        if now is not None:
            hi = min(hi, int(np.searchsorted(stamps, now, side="right")))
        if start is not None:
            hi = min(hi, lo + limit)
        else:
            lo = max(lo, hi - limit)
        interval_ms = INTERVAL_MS[interval]
        return [kline(int(stamps[i]), series.values[i], interval_ms) for i in range(lo, max(lo, hi))]

    def last_close(self, market_id: str) -> Decimal | None:
        """The close of the latest bar the klines endpoint would serve for ``market_id`` (any interval)."""
        with self._lock:
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
            return None if latest is None else Decimal(price_text(latest[2]))
