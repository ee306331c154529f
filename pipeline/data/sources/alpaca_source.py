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
from typing import Any, TypeVar

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient

from pipeline.clock import Clock
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
from pipeline.data.quality import exchange_calendar
from pipeline.retry import RetryPolicy
from pipeline.settings import Settings
from pipeline.data.sources.base import ProgressCallback, closed_only

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


class TimeoutSession(requests.Session):
    """An HTTP session whose requests give up after ``timeout_s`` seconds unless told otherwise."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, *args, **kwargs)


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
    """An alpaca-py data client with tradeforge's keys, URL and timeout, and without its own retries.

    alpaca-py sends requests without a timeout and retries 429/504 itself with fixed blocking sleeps
    (3 attempts, 3 s apart); both are replaced here so that ``http_timeout_s`` and one retry policy apply.
    """
    key, secret = credentials(settings)
    url = settings.alpaca_data_url.rstrip("/") if settings.alpaca_data_url else None
    return bounded(StockHistoricalDataClient(api_key=key, secret_key=secret, raw_data=True, url_override=url),
                   settings.http_timeout_s)


Client = TypeVar("Client", StockHistoricalDataClient, TradingClient)


def bounded(client: Client, timeout_s: float) -> Client:
    """``client`` with ``timeout_s`` on every request and without alpaca-py's own retries (429/504, three
    attempts 3 s apart, blocking), so that tradeforge's one retry policy applies."""
    client._session.close()
    client._session = TimeoutSession(timeout_s)
    client._retry_codes = []
    return client


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
