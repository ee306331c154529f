"""US stock bars from Alpaca's market-data API, as canonical bar frames of closed bars.

Conventions at this edge (nothing Alpaca-shaped leaves this module):

* intraday bars keep their open time in UTC; Alpaca includes pre-market and after-hours bars;
* daily bars, which Alpaca stamps at midnight New York time (04:00 or 05:00 UTC), are labelled with their
  trading date at 00:00 UTC, like every daily stock series in tradeforge; a daily bar counts as closed once
  the NYSE session of its date has closed (early closes included);
* prices are split-adjusted and not dividend-adjusted, like tradeforge's other stock series;
* one retry policy applies (``pipeline.retry``): network errors, timeouts, 429 and 5xx answers are retried with
  the configured backoff (``max_retries``, ``retry_backoff_s``); every request gives up after ``http_timeout_s``.

The API keys come from ``TRADEFORGE_ALPACA_API_KEY`` / ``TRADEFORGE_ALPACA_API_SECRET`` and are only ever
sent to Alpaca.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Any

import pandas as pd
import requests
from alpaca.common.enums import BaseURL
from alpaca.common.exceptions import APIError
from alpaca.common.utils import get_default_user_agent
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient

from pipeline.clock import Clock
from pipeline.data.quality import exchange_calendar
from pipeline.data.sources.base import ProgressCallback, closed_only
from pipeline.domain import (
    STOCK_CALENDAR,
    AssetClass,
    DataError,
    Instrument,
    Timeframe,
    canonical_bars,
    empty_bars,
    parse_symbol,
)
from pipeline.retry import RetryPolicy
from pipeline.settings import Settings

log = logging.getLogger(__name__)

VENUE = "alpaca"
NEW_YORK = "America/New_York"
HISTORY_START = pd.Timestamp("2000-01-01", tz="UTC")
"""Start of a full-history request: well before the first bar Alpaca holds for any stock."""

KEY_ENV = "TRADEFORGE_ALPACA_API_KEY"
SECRET_ENV = "TRADEFORGE_ALPACA_API_SECRET"  # noqa: S105 - the name of a variable, not a secret
FEED_ENV = "TRADEFORGE_ALPACA_FEED"

_FEEDS: dict[str, DataFeed] = {
    "iex": DataFeed.IEX,
    "sip": DataFeed.SIP,
    "otc": DataFeed.OTC,
    "delayed_sip": DataFeed.DELAYED_SIP,
}
_BAR_FIELDS: dict[str, str] = {
    "t": "timestamp",
    "o": "open",
    "h": "high",
    "l": "low",
    "c": "close",
    "v": "volume",
}
_MAX_ERROR_TEXT = 300


class AlpacaHttp:
    """Requests to one Alpaca REST API made the way alpaca-py makes them, but each once and with a timeout.

    The same URL (base URL, API version, path), headers (the key pair and alpaca-py's user agent), query
    parameters for GET and DELETE and a JSON body otherwise, no redirects; and the same outcomes: the decoded
    JSON body (None when empty), alpaca-py's ``APIError`` carrying the HTTP error for an error answer (so its
    status and ``Retry-After`` are read as before), and what ``requests`` raises for a network fault or a
    timeout after ``timeout_s``.
    """

    def __init__(self, base_url: str, api_key: str, secret_key: str, timeout_s: float,
                 api_version: str = "v2") -> None:
        self.base_url = base_url
        self.api_version = api_version
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self._headers = {"APCA-API-KEY-ID": api_key, "APCA-API-SECRET-KEY": secret_key,
                         "User-Agent": get_default_user_agent()}

    def __repr__(self) -> str:
        return f"AlpacaHttp({self.base_url!r}, timeout_s={self.timeout_s})"  # never the keys

    def send(self, method: str, path: str, data: Any = None, base_url: str | None = None,
             api_version: str | None = None) -> Any:
        base = base_url or self.base_url
        if isinstance(base, Enum):  # alpaca-py's BaseURL
            base = str(base.value)
        url = f"{base}/{api_version or self.api_version}{path}"
        payload = {"params": data} if method in ("GET", "DELETE") else {"json": data}
        response = self.session.request(method, url, headers=dict(self._headers), allow_redirects=False,
                                        timeout=self.timeout_s, **payload)
        try:
            response.raise_for_status()
        except requests.HTTPError as http_error:
            raise APIError(response.text, http_error) from http_error  # type: ignore[no-untyped-call]
        return response.json() if response.text != "" else None


class SentOnce:
    """The HTTP verbs of an alpaca-py REST client, sent through ``http`` (an ``AlpacaHttp``).

    Why: alpaca-py (0.44) sends requests without a timeout and retries 429 and 504 answers itself, three times
    3 s apart with blocking sleeps, and offers no public way to change either. ``StockHistoricalDataClient``
    and ``TradingClient`` pass no retry settings on to ``RESTClient`` (whose ``retry_exception_codes`` cannot
    be emptied anyway: an empty list means the default), no timeout reaches its session, and the transport
    (``_request``, ``_one_request``, ``_session``) is private. The smallest public surface every request goes
    through is the verbs ``get``, ``post``, ``put``, ``patch`` and ``delete`` (the clients' methods and their
    paging call them), so a subclass overrides those and nothing else: every request is made once, with
    ``http_timeout_s``, and tradeforge's retry policy (``pipeline.retry``) decides what happens next.
    """

    http: AlpacaHttp

    def get(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self.http.send("GET", path, data, **kwargs)

    def post(self, path: str, data: Any = None) -> Any:
        return self.http.send("POST", path, data)

    def put(self, path: str, data: Any = None) -> Any:
        return self.http.send("PUT", path, data)

    def patch(self, path: str, data: Any = None) -> Any:
        return self.http.send("PATCH", path, data)

    def delete(self, path: str, data: Any = None) -> Any:
        return self.http.send("DELETE", path, data)


class BoundedStockClient(SentOnce, StockHistoricalDataClient):
    """alpaca-py's stock data client whose requests are each made once and give up after ``timeout_s``."""

    def __init__(self, api_key: str, secret_key: str, *, timeout_s: float, url_override: str | None = None,
                 raw_data: bool = True) -> None:
        super().__init__(api_key=api_key, secret_key=secret_key, raw_data=raw_data, url_override=url_override)
        base = url_override if url_override is not None else BaseURL.DATA.value
        self.http = AlpacaHttp(base, api_key, secret_key, timeout_s)


class BoundedTradingClient(SentOnce, TradingClient):
    """alpaca-py's trading client whose requests are each made once and give up after ``timeout_s``."""

    def __init__(self, api_key: str, secret_key: str, *, timeout_s: float, paper: bool = True,
                 url_override: str | None = None, raw_data: bool = False) -> None:
        super().__init__(api_key=api_key, secret_key=secret_key, paper=paper, raw_data=raw_data,
                         url_override=url_override)
        base = url_override or (BaseURL.TRADING_PAPER if paper else BaseURL.TRADING_LIVE).value
        self.http = AlpacaHttp(base, api_key, secret_key, timeout_s)


class AlpacaSource:
    """Bars of US stocks from Alpaca's historical market data (feed chosen by ``alpaca_feed``)."""

    name = VENUE
    resumable = True

    def __init__(self, settings: Settings, clock: Clock, sleep: Callable[[float], None] = time.sleep) -> None:
        self._settings = settings
        self._clock = clock
        self._retry = RetryPolicy.from_settings(settings.max_retries, settings.retry_backoff_s, sleep=sleep)
        self._client: StockHistoricalDataClient | None = None

    def instrument(self, symbol: str) -> Instrument:
        """The US stock ``symbol`` (e.g. ``AAPL``, ``BRK.B``); ``DataError`` for crypto pairs, bad tickers."""
        canonical, asset_class = parse_symbol(symbol)
        if asset_class is not AssetClass.STOCK:
            raise DataError(
                f"symbol {symbol!r} is a crypto pair; alpaca stock data covers US stocks only: "
                "use a US ticker such as AAPL (crypto comes from the ccxt source)"
            )
        return Instrument.of(VENUE, canonical)

    def fetch(
        self,
        instrument: Instrument,
        timeframe: Timeframe,
        since: pd.Timestamp | None,
        progress: ProgressCallback | None = None,
    ) -> pd.DataFrame:
        """Closed bars with open time ``>= since`` (since 2000 when ``since`` is None).

        ``DataError`` when the keys are missing, the instrument is not a US stock, the timeframe is not
        offered by Alpaca, or Alpaca does not know the symbol (a full-history request that returns nothing,
        or a 4xx answer). With ``since`` set, an empty answer simply means there is nothing new.
        """
        if instrument.asset_class is not AssetClass.STOCK:
            raise DataError(
                f"instrument {instrument.symbol!r} is not a US stock; alpaca serves US stock data only"
            )
        alpaca_timeframe = alpaca_timeframe_of(timeframe)
        client = self._connect()
        now = self._clock.now()
        start = HISTORY_START if since is None else as_utc(since)
        if start > now:
            return empty_bars()
        request = StockBarsRequest(
            symbol_or_symbols=instrument.symbol,
            timeframe=alpaca_timeframe,
            start=start.to_pydatetime(),
            end=now.to_pydatetime(),
            feed=_FEEDS[self._settings.alpaca_feed],
            adjustment=Adjustment.SPLIT,
        )
        raw = self._download(client, request, instrument.symbol, f"alpaca {timeframe} bars of {instrument.symbol}")
        if not raw and since is None:
            raise DataError(
                f"symbol {instrument.symbol!r} is unknown at alpaca: no {timeframe} bars since "
                f"{HISTORY_START.date()} on feed {self._settings.alpaca_feed!r}"
            )
        frame = bar_frame(raw, timeframe, instrument.symbol)
        frame = frame.loc[frame["timestamp"] >= start].reset_index(drop=True)
        frame = closed_bars(frame, timeframe, now)
        log.debug("alpaca: %d closed %s bars of %s", len(frame), timeframe, instrument.symbol)
        if progress is not None:
            progress(len(frame))
        return frame

    def _download(
        self, client: StockHistoricalDataClient, request: StockBarsRequest, symbol: str, what: str
    ) -> list[dict[str, Any]]:
        """All pages of ``symbol``'s bars (alpaca-py follows ``next_page_token``), retried by the retry policy."""
        try:
            result = self._retry.call(lambda: client.get_stock_bars(request), what=what)
        except APIError as exc:
            raise self._api_error(exc, symbol) from exc
        if not isinstance(result, dict):
            raise TypeError("alpaca client returned parsed models although raw data was requested")
        bars = result.get(symbol, [])
        if not isinstance(bars, list):
            shown = str(bars)[:_MAX_ERROR_TEXT]
            raise DataError(f"alpaca answered with malformed bars for {symbol!r}: {shown}")
        return bars

    def _connect(self) -> StockHistoricalDataClient:
        if self._client is None:
            self._client = make_client(self._settings)
        return self._client

    def _api_error(self, exc: APIError, symbol: str) -> Exception:
        """The tradeforge error for an error answer from Alpaca that is not worth another attempt."""
        status = exc.status_code
        text = api_error_text(exc)
        if status in (401, 403):
            return DataError(
                f"alpaca refused the request for {symbol!r} (HTTP {status}: {text}): check {KEY_ENV} and "
                f"{SECRET_ENV}, and that your subscription covers feed {self._settings.alpaca_feed!r} "
                f"({FEED_ENV})"
            )
        return DataError(f"alpaca rejected the request for symbol {symbol!r} (HTTP {status}: {text})")


def make_client(settings: Settings) -> StockHistoricalDataClient:
    """An alpaca-py data client with tradeforge's keys and URL, ``http_timeout_s`` per request and no retries of
    its own (``BoundedStockClient``), so that one retry policy applies."""
    key, secret = credentials(settings)
    url = settings.alpaca_data_url.rstrip("/") if settings.alpaca_data_url else None
    return BoundedStockClient(key, secret, timeout_s=settings.http_timeout_s, url_override=url)


def as_utc(stamp: pd.Timestamp) -> pd.Timestamp:
    """``stamp`` in UTC; a naive stamp is taken as UTC."""
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def credentials(settings: Settings, purpose: str = "market data") -> tuple[str, str]:
    """The API key id and secret; ``DataError`` naming the variables to set when either is missing."""
    key = settings.alpaca_api_key.get_secret_value().strip() if settings.alpaca_api_key else ""
    secret = settings.alpaca_api_secret.get_secret_value().strip() if settings.alpaca_api_secret else ""
    missing = [name for name, value in ((KEY_ENV, key), (SECRET_ENV, secret)) if not value]
    if missing:
        raise DataError(
            f"alpaca {purpose} needs API keys: set {' and '.join(missing)} "
            "(in the environment or in .env; a free Alpaca account provides them)"
        )
    return key, secret


def alpaca_timeframe_of(timeframe: Timeframe) -> TimeFrame:
    """Alpaca's name for ``timeframe``: minutes up to 59, hours up to 23, or one day."""
    if timeframe.is_daily:
        return TimeFrame(1, TimeFrameUnit.Day)
    if timeframe.seconds % 3600 == 0 and timeframe.seconds // 3600 <= 23:
        return TimeFrame(timeframe.seconds // 3600, TimeFrameUnit.Hour)
    if timeframe.seconds % 60 == 0 and timeframe.seconds // 60 <= 59:
        return TimeFrame(timeframe.seconds // 60, TimeFrameUnit.Minute)
    raise DataError(
        f"timeframe {timeframe} is not offered by alpaca: use 1-59 minutes, 1-23 hours or 1d "
        "(e.g. 1m, 15m, 1h, 1d)"
    )


def api_error_text(exc: APIError) -> str:
    """The message of an Alpaca error answer, shortened."""
    try:
        text = str(exc.message)
    except (ValueError, KeyError, TypeError):
        text = str(exc)
    return text[:_MAX_ERROR_TEXT]


def bar_frame(bars: list[dict[str, Any]], timeframe: Timeframe, symbol: str) -> pd.DataFrame:
    """Alpaca's bars as a canonical bar frame; daily bars are labelled with their trading date, 00:00 UTC."""
    if not bars:
        return empty_bars()
    table = pd.DataFrame(bars)
    missing = [field for field in _BAR_FIELDS if field not in table.columns]
    if missing:
        raise DataError(f"alpaca bars of {symbol!r} lack field(s) {', '.join(missing)}")
    table = table[list(_BAR_FIELDS)].rename(columns=_BAR_FIELDS)
    stamps = pd.to_datetime(table["timestamp"], utc=True, format="ISO8601")
    table["timestamp"] = trading_dates(stamps) if timeframe.is_daily else stamps
    frame = canonical_bars(table)
    frame = frame.sort_values("timestamp", kind="stable").drop_duplicates("timestamp", keep="last")
    return frame.reset_index(drop=True)


def trading_dates(stamps: pd.Series) -> pd.Series:
    """The New York calendar date of each stamp, at 00:00 UTC."""
    local = stamps.dt.tz_convert(NEW_YORK).dt.tz_localize(None).dt.normalize()
    dates: pd.Series = local.dt.tz_localize("UTC")
    return dates


def closed_bars(frame: pd.DataFrame, timeframe: Timeframe, now: pd.Timestamp) -> pd.DataFrame:
    """Bars that have closed at ``now``; a daily bar closes with the NYSE session of its date."""
    if not timeframe.is_daily or frame.empty:
        return closed_only(frame, timeframe, now)
    closed = frame["timestamp"] + timeframe.delta <= now
    for index, stamp in frame.loc[~closed, "timestamp"].items():
        close = session_close(pd.Timestamp(stamp))
        closed.at[index] = close is not None and close <= now
    return frame.loc[closed].reset_index(drop=True)


def session_close(day: pd.Timestamp) -> pd.Timestamp | None:
    """When the NYSE session of the date ``day`` (00:00 UTC label) closes; None when it has no session."""
    date = pd.Timestamp(day).tz_convert("UTC").tz_localize(None).normalize()
    calendar = exchange_calendar(STOCK_CALENDAR)
    if not calendar.first_session <= date <= calendar.last_session or not calendar.is_session(date):
        return None
    close: pd.Timestamp = pd.Timestamp(calendar.session_close(date)).tz_convert("UTC")
    return close
