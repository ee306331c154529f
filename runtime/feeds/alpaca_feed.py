"""A live feed of US stock bars from Alpaca, on the NYSE calendar.

* Minute bars (``1m``) come from Alpaca's market-data stream (alpaca-py ``StockDataStream.subscribe_bars``),
  run by a watchdog (``runtime.feeds.alpaca_watchdog``) in a daemon thread that hands bars over through a queue.
  A connection that is lost or refused (HTTP 429, 406 "connection limit exceeded") is replaced by a fresh stream
  after a wait of the feed's retry policy (exponential between ``backoff_base_s`` and ``backoff_cap_s``, with
  jitter, a ``Retry-After`` honoured); so is a connection that stays open but delivers no bar for
  ``silent_after_bars`` bar lengths while the NYSE is in session (outside sessions silence is normal). A stream
  Alpaca refuses for good (wrong keys, a feed outside the account's plan, too many symbols: 402, 405, 409, 410)
  is given up, said once as the runtime event ``stream_rejected``; its minute bars are then polled through REST
  like the longer timeframes, and trading goes on.
* Longer timeframes (``5m``, ``1h``, ``1d``...) are polled through REST once their bar has closed: Alpaca
  builds them itself, so no resampling happens here.
* REST (alpaca-py ``StockHistoricalDataClient``) also loads the warm-up and fills every hole the stream left:
  when a streamed bar comes after a session minute that brought none, or when the next expected bar is
  ``grace_s`` seconds overdue (the stream was down, or reconnecting), the missing range is asked for through
  REST, from the last bar handed over. A minute without trades has no bar at Alpaca; the REST answer settles
  that, and the feed moves on. So the bars a lost or silent stream missed are delivered, once and in order,
  before the bars the next connection streams.
* Outside NYSE sessions (nights, weekends, holidays, after an early close) no bar is expected: the feed sends
  no request and ``expects_bar`` is False, so the node does not treat the silence as a fault.

Bars are split-adjusted (as ``pipeline.data.sources.alpaca_source`` loads history), stamped by their open time;
daily bars are labelled with their trading date at 00:00 UTC and close with the NYSE session.
"""

from __future__ import annotations

import logging
import math
import queue
from dataclasses import dataclass
from typing import Any, Unpack

import numpy as np
import pandas as pd
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.stock import StockDataStream
from alpaca.data.requests import StockBarsRequest

from pipeline.clock import Clock
from pipeline.data.quality import exchange_calendar
from pipeline.data.sources.alpaca_source import alpaca_timeframe_of, bar_frame, closed_bars, credentials
from pipeline.domain import STOCK_CALENDAR, AssetClass, DataError, Timeframe, empty_bars, epoch_ms, parse_symbol
from pipeline.settings import Settings
from runtime.feeds.alpaca_watchdog import DEFAULT_SILENT_AFTER_BARS, StreamFactory, StreamWatchdog, copy_of
from runtime.feeds.base import LiveFeed, LiveOptions, Update
from runtime.feeds.frames import bars_of, floor_ms, now_ms, stamp

log = logging.getLogger(__name__)

MINUTES_PER_SESSION = 390
_FEEDS = {"iex": DataFeed.IEX, "sip": DataFeed.SIP, "otc": DataFeed.OTC, "delayed_sip": DataFeed.DELAYED_SIP}
_DAY_MS = 86_400_000


def _dates_ms(sessions: pd.DatetimeIndex) -> np.ndarray:
    """Session dates (naive or UTC) as epoch ms at 00:00 UTC."""
    index = sessions.tz_localize("UTC") if sessions.tz is None else sessions.tz_convert("UTC")
    return np.asarray(index.as_unit("ms").asi8)


class SessionCalendar:
    """NYSE sessions (``exchange_calendars`` XNYS) as epoch-ms arrays: open, close and date of each session."""

    def __init__(self, name: str = STOCK_CALENDAR) -> None:
        calendar = exchange_calendar(name)
        self.opens = epoch_ms(calendar.opens)
        self.closes = epoch_ms(calendar.closes)
        self.dates = _dates_ms(pd.DatetimeIndex(calendar.sessions))

    def in_session(self, ms: int) -> bool:
        """Whether the market is open at ``ms`` (from the open, until the close)."""
        index = int(np.searchsorted(self.closes, ms, side="right"))
        return index < len(self.opens) and int(self.opens[index]) <= ms

    def first_minute_from(self, ms: int) -> int | None:
        """The first moment at or after ``ms`` when the market is open (None beyond the calendar)."""
        index = int(np.searchsorted(self.closes, ms, side="right"))
        return None if index >= len(self.opens) else max(ms, int(self.opens[index]))

    def session_at_or_before(self, ms: int) -> int:
        """The index of the last session that opened at or before ``ms`` (0 before the first one)."""
        return max(0, int(np.searchsorted(self.opens, ms, side="right")) - 1)

    def opened_at(self, ms: int) -> int:
        """The open of the last session that opened at or before ``ms`` (the first open before the first one)."""
        return int(self.opens[self.session_at_or_before(ms)])


@dataclass(frozen=True)
class _Expected:
    open_ms: int
    close_ms: int


class AlpacaFeed(LiveFeed):
    """Bars of ``symbols_by_key`` (feed key → US ticker) as they close, from Alpaca.

    ``data_client`` is an alpaca-py ``StockHistoricalDataClient`` (``pipeline.data.sources.alpaca_source.make_client``
    gives one with tradeforge's timeout and no retries of its own); ``stream`` a ``StockDataStream``
    (``alpaca_stream``) used for ``1m`` bars, or None to poll REST for minute bars too. ``grace_s`` is how
    long after its close a bar may take to arrive before REST is asked for it.

    The stream's watchdog: ``stream_factory`` builds the fresh stream of each reconnect (default: a stream like
    ``stream``, same endpoint, keys and options); ``silent_after_bars`` (default 3, i.e. 3 minutes; more than 1,
    or None to never judge silence) is how many bar lengths a connected stream may go without delivering any
    bar while the NYSE is in session before it is closed and replaced. A thinly traded ticker alone on the IEX
    feed can go minutes without a bar: raise it there. Each teardown and reconnect is logged and noted for
    ``on_event`` (``LiveFeed.note``; kinds ``stream_silent``, ``stream_down``, ``stream_reconnected``, and
    ``stream_rejected`` once when Alpaca refuses the stream for good and its bars are polled through REST from
    then on). The reconnect waits use ``backoff_base_s``, ``backoff_cap_s`` and ``sleep``.

    The other keyword ``options`` (``LiveOptions``: ``poll_s``, ``warmup``, ``tick_s``, the backoff, ``sleep``,
    ``monotonic``...) are ``LiveFeed``'s, with its defaults.
    """

    venue = "alpaca"

    def __init__(self, data_client: StockHistoricalDataClient, stream: StockDataStream | None,
                 symbols_by_key: dict[str, str], timeframe: Timeframe, clock: Clock, *, feed: str = "iex",
                 grace_s: float = 10.0, stream_factory: StreamFactory | None = None,
                 silent_after_bars: float | None = DEFAULT_SILENT_AFTER_BARS, **options: Unpack[LiveOptions]) -> None:
        super().__init__(list(symbols_by_key), timeframe, clock, **options)
        if feed not in _FEEDS:
            raise DataError(f"alpaca feed {feed!r} is not valid: use one of {', '.join(_FEEDS)}")
        if grace_s < 0:
            raise DataError(f"grace_s {grace_s} is not valid: it must be zero or more seconds")
        if silent_after_bars is not None and not silent_after_bars > 1:
            raise DataError(f"silent_after_bars {silent_after_bars} is not valid: a stream delivers a bar once a "
                            "bar length, so allow more than 1 bar length of silence (or None to never judge it)")
        self.symbols: dict[str, str] = {}
        for key, symbol in symbols_by_key.items():
            ticker, asset_class = parse_symbol(symbol)
            if asset_class is not AssetClass.STOCK:
                raise DataError(f"feed {key!r}: symbol {symbol!r} is not a US stock; alpaca serves US stocks only")
            self.symbols[key] = ticker
        self.client = data_client
        self.feed = feed
        self.grace_ms = int(grace_s * 1000)
        self.calendar = SessionCalendar()
        self.stream = stream if timeframe.seconds == 60 else None
        if stream is not None and self.stream is None:
            log.info("alpaca: %s bars are polled through REST; the stream serves minute bars only", timeframe)
        self._keys_of: dict[str, list[str]] = {}  # ticker -> the keys of its streamed minute bars
        for key, ticker in self.symbols.items():
            if self.stream is not None and self.timeframe_of(key).seconds == 60:
                self._keys_of.setdefault(ticker, []).append(key)
        self._streamed: queue.Queue[tuple[str, pd.DataFrame]] = queue.Queue()
        self._pending: dict[str, pd.DataFrame] = {key: empty_bars() for key in self.keys}
        self._verified: dict[str, int] = {}
        self.watchdog: StreamWatchdog | None = None
        """Runs the stream (None: no stream); bars missed while it reconnects come through REST."""
        if self.stream is not None:
            silent_ms = None if silent_after_bars is None else int(silent_after_bars * timeframe.millis)
            self.watchdog = StreamWatchdog(
                self.stream, stream_factory or copy_of(self.stream), sorted(self._keys_of), self._on_bar,
                clock=clock, sessions=self.calendar, silent_after_ms=silent_ms, retry=self.retry, sleep=self._sleep,
                stopping=lambda: self.stopped, report=self.note)
        self._warm_up()

    # ------------------------------------------------------------------ calendar
    def expects_bar(self, key: str, now_ms: int) -> bool:
        """True while the NYSE is in session (a bar of ``key`` is due), False when it is closed."""
        return self.calendar.in_session(now_ms)

    def _next_bar(self, key: str, after_ms: int) -> _Expected | None:
        """The first bar of ``key`` the market can make after the bar opening at ``after_ms``."""
        step = self.timeframe_of(key).millis
        if self.timeframe_of(key).is_daily:
            index = int(np.searchsorted(self.calendar.dates, after_ms, side="right"))
            if index >= len(self.calendar.dates):
                return None
            return _Expected(int(self.calendar.dates[index]), int(self.calendar.closes[index]))
        minute = self.calendar.first_minute_from(after_ms + step)
        if minute is None:
            return None
        start = floor_ms(minute, step)
        return _Expected(start, start + step)

    def _settled_through(self, key: str, now: int) -> int:
        """The open time of the last bar of ``key`` that closed at least ``grace_s`` ago: REST holds it for good."""
        settled, frame = now - self.grace_ms, self.timeframe_of(key)
        if frame.is_daily:
            index = int(np.searchsorted(self.calendar.closes, settled, side="right")) - 1
            return int(self.calendar.dates[max(index, 0)])
        return floor_ms(settled, frame.millis) - frame.millis

    def _warm_up_start(self, key: str, now: int) -> int:
        frame = self.timeframe_of(key)
        if frame.is_daily:
            index = int(np.searchsorted(self.calendar.dates, now, side="right")) - 1
            return int(self.calendar.dates[max(0, index - self.warmup)])
        sessions = math.ceil(self.warmup * frame.seconds / 60 / MINUTES_PER_SESSION) + 1
        index = self.calendar.session_at_or_before(now)
        return floor_ms(int(self.calendar.opens[max(0, index - sessions)]), frame.millis)

    # ------------------------------------------------------------------ REST
    def _rest(self, tickers: list[str], start_ms: int, now: int, timeframe: Timeframe) -> dict[str, pd.DataFrame]:
        """Closed ``timeframe`` bars of ``tickers`` with open time ``>= start_ms`` (one request, all pages)."""
        start = pd.Timestamp(start_ms, unit="ms", tz="UTC")
        end = pd.Timestamp(now, unit="ms", tz="UTC")
        if start > end:
            return {ticker: empty_bars() for ticker in tickers}
        request = StockBarsRequest(
            symbol_or_symbols=tickers,
            timeframe=alpaca_timeframe_of(timeframe),
            start=start.to_pydatetime(),
            end=end.to_pydatetime(),
            feed=_FEEDS[self.feed],
            adjustment=Adjustment.SPLIT,
        )
        result = self.client.get_stock_bars(request)
        raw = result if isinstance(result, dict) else _as_raw(result)
        out: dict[str, pd.DataFrame] = {}
        for ticker in tickers:
            bars = raw.get(ticker) or []
            frame = bar_frame(list(bars), timeframe, ticker)
            frame = frame.loc[frame["timestamp"] >= start].reset_index(drop=True)
            out[ticker] = closed_bars(frame, timeframe, end)
        log.debug("alpaca: REST %s bars of %s from %s", timeframe, ",".join(tickers), stamp(start_ms))
        return out

    def _fetch(self, key: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        ticker = self.symbols[key]
        bars = self._rest([ticker], start_ms, now_ms(self.clock), self.timeframe_of(key))[ticker]
        return bars.loc[bars["timestamp"] < pd.Timestamp(end_ms, unit="ms", tz="UTC")].reset_index(drop=True)

    # ------------------------------------------------------------------ the stream
    async def _on_bar(self, bar: Any) -> None:
        """A bar from the stream (an alpaca-py ``Bar`` or, with ``raw_data``, its message) into the queue."""
        try:
            ticker, frame = _stream_bar(bar)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("alpaca: malformed bar from the stream ignored (%s: %s)", type(exc).__name__, exc)
            return
        self._streamed.put((ticker, frame))

    def _started(self) -> None:
        if self.watchdog is not None:
            self.watchdog.start()

    def _stopped(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()

    def _drain_stream(self) -> None:
        while True:
            try:
                ticker, frame = self._streamed.get_nowait()
            except queue.Empty:
                return
            for key in self._keys_of.get(ticker, []):
                self._pending[key] = pd.concat([self._pending[key], frame], ignore_index=True)

    # ------------------------------------------------------------------ polling
    def _poll(self, known: dict[str, int]) -> Update:
        now = now_ms(self.clock)
        if self.watchdog is not None:
            self.watchdog.check()  # a connected stream silent for too long in session is replaced
            if self.watchdog.rejected is not None and self._keys_of:
                self._keys_of.clear()  # the stream is given up: its bars are polled through REST from now on
                log.info("alpaca: minute bars of %s are polled through REST", ", ".join(self.keys))
        self._drain_stream()
        streamed: dict[str, pd.DataFrame] = {}
        due: list[str] = []
        for key in self.keys:
            pending = bars_of(self._pending[key]) if len(self._pending[key]) else self._pending[key]
            closed = pending.loc[pending["timestamp"] + self.timeframe_of(key).delta <= pd.Timestamp(now, unit="ms",
                                                                                                    tz="UTC")]
            streamed[key] = closed
            mark = max(known[key], self._verified.get(key, known[key]))
            expected = self._next_bar(key, mark)
            if expected is None:
                continue
            if key not in self._keys_of.get(self.symbols[key], ()):  # polled through REST
                if expected.close_ms <= now:
                    due.append(key)
                continue
            later = epoch_ms(closed["timestamp"])
            later = later[later > mark]
            gap = len(later) > 0 and int(later[0]) > expected.open_ms
            covered = len(later) > 0 and int(later[0]) == expected.open_ms
            overdue = not covered and expected.close_ms + self.grace_ms <= now
            if gap or overdue:
                due.append(key)
        fetched: dict[str, pd.DataFrame] = {}
        for frame in sorted({self.timeframe_of(k) for k in due}, key=lambda t: t.seconds):
            group = [k for k in due if self.timeframe_of(k) == frame]
            start = min(max(known[k], self._verified.get(k, known[k])) for k in group)
            start += _DAY_MS if frame.is_daily else frame.millis
            rest = self._rest(sorted({self.symbols[k] for k in group}), start, now, frame)
            for key in group:
                settled = self._settled_through(key, now)
                bars = rest[self.symbols[key]]
                fetched[key] = bars.loc[epoch_ms(bars["timestamp"]) > known[key]].reset_index(drop=True)
                last = int(epoch_ms(fetched[key]["timestamp"])[-1]) if len(fetched[key]) else settled
                self._verified[key] = max(self._verified.get(key, known[key]), settled, last)
            log.info("alpaca: REST backfill of %s from %s: %s", ", ".join(group), stamp(start),
                     ", ".join(f"{k} {len(fetched[k])}" for k in group))
        update: Update = {}
        for key in self.keys:
            parts = [frame for frame in (streamed[key], fetched.get(key)) if frame is not None and len(frame)]
            if parts:
                update[key] = bars_of(pd.concat(parts, ignore_index=True))  # REST wins over the stream
            pending = self._pending[key]
            if len(pending):
                close_by = pending["timestamp"] + self.timeframe_of(key).delta
                self._pending[key] = pending.loc[close_by > pd.Timestamp(now, unit="ms", tz="UTC")]
        return update


def _stream_bar(bar: Any) -> tuple[str, pd.DataFrame]:
    """One streamed bar as (ticker, one-row bar frame)."""
    if isinstance(bar, dict):
        stamp_value = bar["t"]
        if hasattr(stamp_value, "to_unix_nano"):
            when = pd.Timestamp(int(stamp_value.to_unix_nano()), unit="ns", tz="UTC")
        else:
            when = pd.Timestamp(stamp_value)
        values = {"open": bar["o"], "high": bar["h"], "low": bar["l"], "close": bar["c"], "volume": bar["v"]}
        ticker = str(bar["S"])
    else:
        when = pd.Timestamp(bar.timestamp)
        values = {name: getattr(bar, name) for name in ("open", "high", "low", "close", "volume")}
        ticker = str(bar.symbol)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    frame = pd.DataFrame({"timestamp": [when], **{name: [float(value)] for name, value in values.items()}})
    return ticker, bars_of(frame)


def _as_raw(result: Any) -> dict[str, list[dict[str, Any]]]:
    """A parsed alpaca-py ``BarSet`` as the raw ``{symbol: [{t, o, h, l, c, v}, ...]}`` mapping."""
    data = getattr(result, "data", {}) or {}
    return {
        symbol: [
            {"t": pd.Timestamp(b.timestamp).isoformat(), "o": b.open, "h": b.high, "l": b.low, "c": b.close,
             "v": b.volume}
            for b in bars
        ]
        for symbol, bars in data.items()
    }


def alpaca_stream(settings: Settings, url: str | None = None) -> StockDataStream:
    """A bar stream with tradeforge's keys and feed (``iex`` or ``sip``); ``url`` overrides the websocket URL."""
    key, secret = credentials(settings)
    if settings.alpaca_feed not in ("iex", "sip"):
        raise DataError(
            f"alpaca feed {settings.alpaca_feed!r} has no live stream: use iex or sip (TRADEFORGE_ALPACA_FEED)"
        )
    return StockDataStream(key, secret, feed=_FEEDS[settings.alpaca_feed], url_override=url)
