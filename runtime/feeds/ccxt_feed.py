"""A live feed of closed candles from a ccxt exchange, by REST polling.

Every ``poll_s`` seconds the worker asks ``fetch_ohlcv(symbol, tf, since=<last bar handed over + tf>)`` for
each series and keeps the candles that have closed by the clock (open time + timeframe <= now): the candle
still open is never delivered. Backfill (a restart, or the time a venue was unreachable) is the same request
paged forward ``page_limit`` candles at a time. ccxt errors (network, timeouts, 429/418, 5xx, maintenance)
are logged and retried by the feed's retry policy (``pipeline.retry``); nothing is skipped because the next
request starts after the last bar handed over.

Build it with an exchange from ``pipeline.data.sources.ccxt_source.build_exchange`` (which also points ccxt at
another REST base, such as a local test server).
"""

from __future__ import annotations

import logging
from typing import Any, Unpack

import ccxt
import pandas as pd

from pipeline.clock import Clock
from pipeline.data.sources.ccxt_source import Candle, candles_frame, parse_candles
from pipeline.domain import DataError, Timeframe, parse_symbol
from pipeline.retry import describe
from runtime.feeds.base import FeedError, LiveFeed, LiveOptions
from runtime.feeds.frames import floor_ms, now_ms, stamp

log = logging.getLogger(__name__)


class CcxtFeed(LiveFeed):
    """Closed candles of ``symbols_by_key`` (feed key → ccxt symbol such as ``BTC/USDT``) as they close.

    ``warmup`` bars before now are loaded at construction (retried ``warmup_attempts`` times, then
    ``FeedError``); unknown symbols and timeframes the exchange does not offer are a ``DataError``.
    ``sleep`` waits between polls and backoff attempts (default: a wait that ``stop()`` cuts short). These and
    the other keyword ``options`` (``LiveOptions``: ``poll_s``, ``tick_s``, the backoff, ``monotonic``...) are
    ``LiveFeed``'s, with its defaults.
    """

    def __init__(self, exchange: Any, symbols_by_key: dict[str, str], timeframe: Timeframe, clock: Clock, *,
                 page_limit: int = 1000, **options: Unpack[LiveOptions]) -> None:
        if page_limit < 1:
            raise DataError(f"page limit {page_limit} is not valid: it must be at least 1")
        super().__init__(list(symbols_by_key), timeframe, clock, **options)
        self.exchange = exchange
        self.venue = str(getattr(exchange, "id", "ccxt"))
        self.page_limit = page_limit
        self.symbols = {key: parse_symbol(symbol)[0] for key, symbol in symbols_by_key.items()}
        self._intervals = {key: self._check_timeframe(self.timeframe_of(key)) for key in self.keys}
        self._check_symbols()
        self._warm_up()

    # ------------------------------------------------------------------ checks at construction
    def _check_timeframe(self, timeframe: Timeframe) -> str:
        if not self.exchange.has.get("fetchOHLCV"):
            raise DataError(f"exchange {self.venue!r} does not serve OHLCV bars")
        interval = str(timeframe)
        offered = self.exchange.timeframes or {}
        if offered and interval not in offered:
            raise DataError(
                f"timeframe {interval!r} is not offered by {self.venue}; available: {', '.join(sorted(offered))}"
            )
        return interval

    def _check_symbols(self) -> None:
        def failed(exc: BaseException, tries: int) -> BaseException:
            return FeedError(f"{self.venue}: the market list could not be loaded after {tries} attempts: "
                             f"{describe(exc)}")

        try:  # network, timeouts, 429, 5xx, maintenance: retried; a refusal is a configuration error
            markets = dict(self.retry.with_options(attempts=self.warmup_attempts).call(
                self.exchange.load_markets, what=f"{self.venue}: market list", give_up=failed) or {})
        except ccxt.BaseError as exc:
            raise DataError(
                f"{self.venue} refused the market list request: {type(exc).__name__}: {exc}"
            ) from exc
        for key, symbol in self.symbols.items():
            if symbol not in markets:
                raise DataError(
                    f"feed {key!r}: symbol {symbol!r} is not listed on {self.venue} "
                    f"({len(markets)} markets listed; check the spelling, e.g. BTC/USDT)"
                )

    # ------------------------------------------------------------------ venue access
    def _warm_up_start(self, key: str, now: int) -> int:
        step = self.timeframe_of(key).millis
        return floor_ms(now, step) - self.warmup * step

    def _fetch(self, key: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Closed candles of ``key`` with ``start_ms <= open < end_ms``, paged forward, as a bar frame."""
        return candles_frame(self._fetch_candles(key, start_ms, end_ms))

    def _fetch_candles(self, key: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed candles of ``key`` with ``start_ms <= open < end_ms``, paged forward."""
        step = self.timeframe_of(key).millis
        now = now_ms(self.clock)
        symbol = self.symbols[key]
        candles: list[Candle] = []
        cursor = max(0, start_ms)
        while cursor < end_ms and cursor + step <= now:
            raw = self.exchange.fetch_ohlcv(symbol, timeframe=self._intervals[key], since=cursor, limit=self.page_limit)
            page = [candle for candle in parse_candles(raw) if candle[0] >= cursor]
            if not page:
                break
            kept = [candle for candle in page if candle[0] < end_ms and candle[0] + step <= now]
            candles.extend(kept)
            if len(kept) < len(page) or len(page) < self.page_limit:
                break  # reached the open candle, the end, or everything the venue has
            cursor = page[-1][0] + step
        log.debug("%s: %d closed %s candles of %s from %s", self.venue, len(candles), self._intervals[key], symbol,
                  stamp(start_ms))
        return candles
