"""Crypto bars from any exchange ccxt supports (Binance by default), as canonical bar frames.

This module is the edge between ccxt and tradeforge: ccxt markets, candle lists and exceptions are turned into
``Instrument``, bar frames and ``DataError`` here, and nothing ccxt-shaped leaves it.

* Requests respect the exchange's rate limit and the ``http_timeout_s`` setting.
* Transient failures (network errors, timeouts, 429/418, 5xx, maintenance) are retried by the one retry
  policy (``pipeline.retry``: ``max_retries``, ``retry_backoff_s``, a ``Retry-After`` honoured); when the
  retries run out a ``RuntimeError`` names the request.
* Rejections (unknown symbol, bad parameters, bad credentials) raise ``DataError`` naming the exchange, the
  symbol and the problem; they are not retried.
* ``ccxt_rest_url`` points the client at another REST base (a proxy or a local test server).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import ccxt
import pandas as pd

from pipeline.clock import Clock
from pipeline.domain import DataError, Instrument, Timeframe, canonical_bars, empty_bars, parse_symbol
from pipeline.retry import RetryPolicy, is_transient
from pipeline.settings import Settings
from pipeline.data.sources.base import ProgressCallback, closed_only

T = TypeVar("T")

log = logging.getLogger(__name__)

_EPOCH = pd.Timestamp(0, tz="UTC")
_ONE_MS = pd.Timedelta(milliseconds=1)

Candle = tuple[int, float, float, float, float, float]
"""One candle as read from the venue: open time in epoch ms, open, high, low, close, volume."""


def _epoch_ms(stamp: pd.Timestamp) -> int:
    """``stamp`` as integer epoch milliseconds; a naive timestamp is taken as UTC."""
    aware = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int((aware - _EPOCH) // _ONE_MS)


def _exchange_class(exchange_id: str) -> type[Any]:
    """The ccxt class of ``exchange_id``; ``DataError`` when ccxt has no such exchange."""
    cls = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
    if not isinstance(cls, type):
        raise DataError(
            f"exchange {exchange_id!r} is not supported by ccxt; use a ccxt exchange id such as "
            "'binance', 'kraken' or 'coinbase'"
        )
    return cls


def _rebase(url: str, base: str) -> str:
    """``url`` with its scheme and host replaced by ``base`` (the path after the host is kept)."""
    parts = urlsplit(url)
    rest = url[len(f"{parts.scheme}://{parts.netloc}") :]
    return base.rstrip("/") + rest


def _is_rest_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _rebase_all(urls: dict[str, Any], base: str, host: str | None) -> None:
    """Rewrite, in place, every REST URL in ``urls`` (nested dicts included) to ``base``.

    With ``host`` set only URLs on that host are rewritten.
    """
    for key, value in urls.items():
        if isinstance(value, dict):
            _rebase_all(value, base, host)
        elif _is_rest_url(value) and (host is None or urlsplit(value).netloc == host):
            urls[key] = _rebase(value, base)


def _is_binance_family(exchange: Any) -> bool:
    return isinstance(exchange, ccxt.binance)


def _spot_markets_only(exchange: Any) -> None:
    """Load a Binance-family exchange's markets from its public spot catalogue alone.

    No margin or futures lists, and no currency list (with keys set ccxt would fetch it from a signed wallet
    endpoint that bars do not need). Exchanges that list no spot markets (the futures-only ids) keep their own
    catalogue.
    """
    exchange.options["fetchMargins"] = False
    exchange.options["fetchCurrencies"] = False
    fetch_markets = exchange.options.get("fetchMarkets")
    types = fetch_markets.get("types") if isinstance(fetch_markets, dict) else None
    if types is None or "spot" in types:
        exchange.options["fetchMarkets"] = {**(fetch_markets or {}), "types": ["spot"]}


def build_exchange(settings: Settings, exchange_id: str) -> Any:
    """A configured synchronous ccxt exchange object for ``exchange_id``."""
    return configured_exchange(_exchange_class(exchange_id), settings)


def configured_exchange(cls: type[Any], settings: Settings) -> Any:
    """An exchange of ccxt class ``cls`` (synchronous, or ccxt.pro's) with the settings' keys, timeout and REST
    base, listing spot markets only where the exchange lists several kinds."""
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": max(1, round(settings.http_timeout_s * 1000)),
    }
    if settings.ccxt_api_key is not None:
        config["apiKey"] = settings.ccxt_api_key.get_secret_value()
    if settings.ccxt_api_secret is not None:
        config["secret"] = settings.ccxt_api_secret.get_secret_value()
    exchange = cls(config)
    if _is_binance_family(exchange):
        _spot_markets_only(exchange)
    if settings.ccxt_rest_url:
        _point_at(exchange, settings.ccxt_rest_url)
    return exchange


def _point_at(exchange: Any, base: str) -> None:
    """Send the exchange's REST requests to ``base``.

    Binance-family exchanges: the URLs on the spot REST host (``public``, ``private`` and the wallet/margin
    ``sapi`` APIs that host also serves). Their futures and options hosts are left alone: two of them serve
    the same paths (``/futures/data``), so one base cannot stand in for both. Other exchanges: every REST
    URL, keeping its path.
    """
    if not _is_rest_url(base):
        raise DataError(f"ccxt REST URL {base!r} is not valid: use an http:// or https:// base URL")
    api = exchange.urls.get("api")
    if isinstance(api, str):
        exchange.urls["api"] = _rebase(api, base)
        return
    if not isinstance(api, dict):
        raise DataError(f"exchange {exchange.id!r} has no REST URLs that can be pointed at {base!r}")
    host = None
    if _is_binance_family(exchange) and _is_rest_url(api.get("public")):
        host = urlsplit(api["public"]).netloc
    _rebase_all(api, base, host)


def _increment(value: object, precision_mode: int) -> Decimal | None:
    """A market precision as an exact increment (``None`` when the venue does not give one)."""
    if value is None:
        return None
    if precision_mode == ccxt.TICK_SIZE:
        return Decimal(str(value))
    if precision_mode == ccxt.DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(float(str(value))))
    return None


def _number(value: object) -> float:
    """A candle field as a float (a missing value becomes NaN)."""
    return float("nan") if value is None else float(cast(float, value))


def parse_candles(raw: object) -> list[Candle]:
    """ccxt OHLCV rows as typed candles, oldest first."""
    if not isinstance(raw, list):
        return []
    rows: list[Candle] = []
    for row in raw:
        ms, o, h, low, c, v = (_number(value) for value in row[:6])
        rows.append((int(ms), o, h, low, c, v))
    rows.sort(key=lambda candle: candle[0])
    return rows


def candles_frame(candles: list[Candle]) -> pd.DataFrame:
    """Candles as a canonical bar frame (sorted, one row per open time: the last one read wins)."""
    if not candles:
        return empty_bars()
    raw = pd.DataFrame(candles, columns=["ms", "open", "high", "low", "close", "volume"])
    raw = raw.drop_duplicates(subset="ms", keep="last").sort_values("ms", kind="stable")
    raw["timestamp"] = pd.to_datetime(raw["ms"].to_numpy(dtype="int64"), unit="ms", utc=True)
    return canonical_bars(raw.reset_index(drop=True))


class CcxtSource:
    """Bars and instruments from a ccxt exchange (``settings.ccxt_exchange`` unless told otherwise)."""

    name = "ccxt"
    resumable = True

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        exchange_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        page_limit: int = 1000,
    ) -> None:
        if page_limit < 1:
            raise DataError(f"page limit {page_limit} is not valid: it must be at least 1")
        self._settings = settings
        self._clock = clock
        self._page_limit = page_limit
        self.exchange_id = (exchange_id or settings.ccxt_exchange).strip().lower()
        self._exchange = build_exchange(settings, self.exchange_id)
        self._retry = RetryPolicy.from_settings(settings.max_retries, settings.retry_backoff_s, sleep=sleep)

    def close(self) -> None:
        """Release the HTTP connections held by the client."""
        session = getattr(self._exchange, "session", None)
        if session is not None:
            session.close()

    def instrument(self, symbol: str) -> Instrument:
        """The instrument ``symbol`` (``BASE/QUOTE``) with the exchange's price and amount increments."""
        market = self._market(symbol)
        precision = cast(dict[str, object], market.get("precision") or {})
        mode = int(self._exchange.precisionMode)
        tick = _increment(precision.get("price"), mode)
        lot = _increment(precision.get("amount"), mode)
        if tick is None or lot is None:
            log.warning(
                "%s gives no usable precision for %s; default increments apply",
                self.exchange_id,
                market["symbol"],
            )
        return Instrument.of(
            venue=self.exchange_id, symbol=str(market["symbol"]), tick_size=tick, lot_size=lot
        )

    def fetch(self, instrument: Instrument, timeframe: Timeframe, since: pd.Timestamp | None,
              progress: ProgressCallback | None = None) -> pd.DataFrame:
        """Closed bars of ``instrument`` with open time ``>= since`` (all its history when ``since`` is None).

        Pages forward from ``since`` until the exchange has nothing newer or the next bar could not have
        closed yet; ``progress`` receives the number of new rows of each page.
        """
        if instrument.venue != self.exchange_id:
            raise DataError(
                f"instrument {instrument.symbol} belongs to venue {instrument.venue!r}, "
                f"but this source reads {self.exchange_id!r}"
            )
        symbol = str(self._market(instrument.symbol)["symbol"])
        interval = self._interval(timeframe)
        now = self._clock.now()
        start_ms = 0 if since is None else max(0, _epoch_ms(since))
        candles = self._read_pages(symbol, interval, timeframe.millis, start_ms, _epoch_ms(now), progress)
        bars = candles_frame(candles)
        bars = bars.loc[bars["timestamp"] >= pd.Timestamp(start_ms, unit="ms", tz="UTC")].reset_index(
            drop=True
        )
        return closed_only(bars, timeframe, now)

    def _read_pages(
        self,
        symbol: str,
        interval: str,
        step_ms: int,
        start_ms: int,
        now_ms: int,
        progress: ProgressCallback | None,
    ) -> list[Candle]:
        """All candles from ``start_ms`` whose bar could have closed by ``now_ms``, page by page."""
        candles: list[Candle] = []
        cursor = start_ms
        while cursor + step_ms <= now_ms:
            page = self._page(symbol, interval, cursor)
            fresh = [candle for candle in page if candle[0] >= cursor]
            if not fresh:
                break
            candles.extend(fresh)
            if progress is not None:
                progress(len(fresh))
            cursor = fresh[-1][0] + step_ms
        return candles

    def _page(self, symbol: str, interval: str, since_ms: int) -> list[Candle]:
        """One page of candles from ``since_ms``."""
        start = pd.Timestamp(since_ms, unit="ms", tz="UTC").isoformat()
        raw = self._call(
            lambda: self._exchange.fetch_ohlcv(
                symbol, timeframe=interval, since=since_ms, limit=self._page_limit
            ),
            what=f"{self.exchange_id} {interval} bars of {symbol} from {start}",
            symbol=symbol,
        )
        return parse_candles(raw)

    def _interval(self, timeframe: Timeframe) -> str:
        """The exchange's name for ``timeframe``; ``DataError`` when the exchange does not offer it."""
        if not self._exchange.has.get("fetchOHLCV"):
            raise DataError(f"exchange {self.exchange_id!r} does not serve OHLCV bars")
        interval = str(timeframe)
        offered = self._exchange.timeframes or {}
        if offered and interval not in offered:
            raise DataError(
                f"timeframe {interval!r} is not offered by {self.exchange_id}; "
                f"available: {', '.join(sorted(offered))}"
            )
        return interval

    def _market(self, symbol: str) -> dict[str, Any]:
        """The exchange's market for ``symbol``; ``DataError`` when it is not listed."""
        canonical, _ = parse_symbol(symbol)
        markets = self._load_markets(canonical)
        market = markets.get(canonical)
        if not isinstance(market, dict):
            raise DataError(
                f"symbol {canonical!r} is not listed on {self.exchange_id} "
                f"({len(markets)} markets listed; check the spelling, e.g. BTC/USDT)"
            )
        return market

    def _load_markets(self, symbol: str) -> dict[str, Any]:
        markets = self._call(
            lambda: self._exchange.load_markets(),
            what=f"{self.exchange_id} market list",
            symbol=symbol,
        )
        return cast(dict[str, Any], markets or {})

    def _call(self, call: Callable[[], T], *, what: str, symbol: str) -> T:
        """Run a ccxt call with retries; a rejection becomes a ``DataError`` naming exchange and symbol."""
        try:
            return self._retry.call(call, what=what, transient=is_transient)
        except ccxt.BadSymbol as exc:
            raise DataError(f"{self.exchange_id} does not know symbol {symbol!r} ({what}): {exc}") from exc
        except ccxt.AuthenticationError as exc:
            raise DataError(
                f"{self.exchange_id} refused the credentials ({what} for {symbol!r}): check "
                f"TRADEFORGE_CCXT_API_KEY and TRADEFORGE_CCXT_API_SECRET: {type(exc).__name__}: {exc}"
            ) from exc
        except ccxt.BaseError as exc:
            raise DataError(
                f"{self.exchange_id} rejected the request ({what} for {symbol!r}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
