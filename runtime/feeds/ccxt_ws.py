"""Live crypto candles from a ccxt.pro websocket (``watch_ohlcv``), a cache on top of REST history.

``CcxtWsFeed`` is a ``CcxtFeed`` (REST warm-up, catch-up after a restart, paging, the same checks) whose worker
takes closed candles from the exchange's websocket instead of asking REST every ``poll_s``:

* **Closed candles only.** A candle is closed once a later candle of its series has started on the same
  connection (``runtime.feeds.candle_cache``); the candle still open is never delivered. Duplicate and
  out-of-order messages change nothing already delivered, and an older update never replaces a newer one.
* **REST fills every hole before trading goes on.** Bars are delivered contiguously from the last one handed
  over: when the stream's first closed candle is later than the next bar due (a reconnect skipped bars, the
  candle open at a disconnect is not trusted), or when the next bar is ``grace_s`` overdue and the stream has
  not closed it (a silent stream, a quiet market), the missing bars come from REST first, then the stream's
  candles after them. So no bar is delivered twice, out of order, or not at all. REST is asked for one series at
  most once every ``poll_s``.
* **Silence and age.** A connection that has sent nothing for ``silence_s`` (default: one bar of the feed's
  timeframe, at least 30 s and at most 5 minutes) is torn down and rebuilt, and every connection is rebuilt once
  it is ``recycle_s`` old (a day). Reconnects back off through the one retry policy (``pipeline.retry``:
  doubling, capped, jittered; a connection that delivers resets it), and ccxt honours a ``Retry-After`` on a
  refused handshake. Every teardown is a note (``on_event``) the runtime records as a runtime event.

The websocket runs on its own asyncio loop in a daemon thread; ``silence_s`` and ``recycle_s`` are judged on the
feed's ``monotonic`` clock, so tests drive them without waiting. ``live_ccxt_feed`` picks this feed when the
exchange has websocket candles in ccxt.pro, and REST polling (said once) when it has not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from itertools import islice
from typing import Any, NamedTuple, Unpack

from pipeline.clock import Clock
from pipeline.data.sources.ccxt_source import Candle, candles_frame, parse_candles
from pipeline.domain import DataError, Timeframe
from pipeline.retry import describe
from runtime.feeds.base import LiveOptions, Update
from runtime.feeds.candle_cache import CandleCache
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.feeds.frames import now_ms, stamp

log = logging.getLogger(__name__)

DAY_S = 86_400.0
_LOOK_S = 0.05
"""How often the stream's loop looks at the stop flag, the clocks and ccxt's candle cache while it waits for
messages."""
_TAIL = 16
"""The candles at the end of ccxt's cache read at each look (a new candle is appended, an update changes its row
in place: the candles being updated are the newest)."""
RECONNECT = "feed_reconnect"
"""The kind of the note (and runtime event) of a websocket torn down and rebuilt."""


def default_silence_s(timeframe: Timeframe) -> float:
    """How long a connection may stay silent: one bar, at least 30 s, at most 5 minutes."""
    return float(min(max(timeframe.seconds, 30), 300))


class CcxtWsFeed(CcxtFeed):
    """Closed candles of ``symbols_by_key`` from ``ws_exchange`` (a ccxt.pro exchange pointed at the same venue as
    ``exchange``, the REST one), with REST filling every hole. ``grace_s`` (default: 5 % of a bar, 2 to 30 s) is
    how long after its close a bar the stream has not delivered is asked of REST."""

    def __init__(self, exchange: Any, ws_exchange: Any, symbols_by_key: dict[str, str], timeframe: Timeframe,
                 clock: Clock, *, silence_s: float | None = None, recycle_s: float = DAY_S,
                 grace_s: float | None = None, page_limit: int = 1000, **options: Unpack[LiveOptions]) -> None:
        if not getattr(ws_exchange, "has", {}).get("watchOHLCV"):
            raise DataError(f"exchange {getattr(ws_exchange, 'id', '?')!r} has no websocket candles in ccxt.pro")
        super().__init__(exchange, symbols_by_key, timeframe, clock, page_limit=page_limit, **options)
        self.ws = ws_exchange
        self.silence_s = default_silence_s(timeframe) if silence_s is None else silence_s
        self.recycle_s = recycle_s
        grace = max(2.0, min(0.05 * timeframe.seconds, 30.0)) if grace_s is None else grace_s
        for name, value in (("silence_s", self.silence_s), ("recycle_s", recycle_s)):
            if value <= 0:
                raise DataError(f"{name} {value} is not valid: it must be a positive number of seconds")
        if grace < 0:
            raise DataError(f"grace_s {grace} is not valid: it must be zero or more seconds")
        self.grace_ms = int(grace * 1000)
        self.cache = CandleCache(self.keys)
        self.reconnects = 0
        """Connections torn down and rebuilt (silence, age, a dropped connection, a refused handshake)."""
        self.polls = 0
        """Polls the worker has completed (tests wait on it)."""
        self._wake = threading.Event()
        self._asked: dict[str, float] = {}
        self._stream_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the worker
    def stop(self) -> None:
        super().stop()
        self._wake.set()

    def _pause(self) -> None:
        self._wake.wait(self.poll_s)
        self._wake.clear()

    def _started(self) -> None:
        self._stream_thread = threading.Thread(target=lambda: asyncio.run(self._run_stream()),
                                               name=f"feed-{self.venue}-ws", daemon=True)
        self._stream_thread.start()

    def _stopped(self) -> None:
        if self._stream_thread is not None:
            self._stream_thread.join(10)

    def _poll(self, known: dict[str, int]) -> Update:
        """Each key's closed bars after its last handed-over one, contiguous: the stream's, REST's for holes."""
        update: Update = {}
        for key in self.keys:
            bars = self._next_bars(key, known[key])
            if bars:
                update[key] = candles_frame(bars)
        self.polls += 1
        return update

    def _next_bars(self, key: str, after: int) -> list[Candle]:
        step = self.timeframe_of(key).millis
        now = now_ms(self.clock)
        self.cache.forget_through(key, after)
        streamed = self.cache.closed_after(key, after)
        out: list[Candle] = []
        while True:
            run = _contiguous(streamed, after + step, step)
            if run:
                out += run
                after = run[-1][0]
                streamed = streamed[len(run):]
                continue
            first = streamed[0][0] if streamed else None
            if first is None and after + 2 * step + self.grace_ms > now:
                return out  # the next bar is not due yet
            # before the stream's next candle, or (the stream is behind) the bars closed grace_s ago
            end = first if first is not None else now - self.grace_ms - step + 1
            rest = self._ask_rest(key, after + step, end)
            if rest is None:  # REST was asked for this series moments ago: the next poll asks again
                return out
            if rest:
                out += rest
                after = rest[-1][0]
                streamed = [c for c in streamed if c[0] > after]
                continue
            if first is not None and first + step + self.grace_ms <= now:  # REST, asked now, has none: a real gap
                log.warning("%s: %s has no bars from %s to %s at REST either; going on from %s", self.venue, key,
                            stamp(after + step), stamp(first), stamp(first))
                out += [streamed[0]]
                after = first
                streamed = streamed[1:]
                continue
            return out

    def _ask_rest(self, key: str, start: int, end: int) -> list[Candle] | None:
        """Closed REST bars of ``key`` with ``start <= open < end``; None when REST answered for ``key`` less than
        ``poll_s`` ago (asked at most that often; a failed request is retried by the worker's retry policy)."""
        mono = self.monotonic()
        if mono - self._asked.get(key, float("-inf")) < self.poll_s:
            return None
        candles = self._fetch_candles(key, start, end)
        self._asked[key] = self.monotonic()
        if candles:
            log.info("%s: %d bars of %s from REST from %s (not delivered by the stream)", self.venue, len(candles),
                     key, stamp(start))
        return candles

    # ------------------------------------------------------------------ the websocket
    async def _run_stream(self) -> None:
        try:
            try:  # the REST exchange's markets: the stream needs no market request of its own
                self.ws.set_markets(self.exchange.markets, getattr(self.exchange, "currencies", None))
            except Exception as exc:
                log.warning("%s: the stream loads its own markets (%s)", self.venue, describe(exc))
            failures = 0
            while not self.stopped:
                try:
                    ended = await self._connection()
                except Exception as exc:  # nothing ends the stream but a stop
                    ended = _Ended(f"failed ({describe(exc)})", failed=True, heard=False, error=exc)
                if self.stopped:
                    break
                failures = (0 if ended.heard else failures) + (1 if ended.failed else 0)
                self.reconnects += 1
                wait = self.retry.delay(failures, ended.error) if failures else 0.0
                self.note(RECONNECT, f"{self.venue}: websocket {ended.reason}; reconnecting"
                           + (f" in {wait:.1f} s" if wait else "") + "; missed bars come from REST")
                await self._backoff(wait)
        finally:
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _connection(self) -> _Ended:
        """Watch every series on one connection until it fails, falls silent or ages."""
        epoch = self.cache.connected()
        for symbol in self.symbols.values():  # ccxt keeps candles across connections: the new one starts afresh
            self.ws.ohlcvs.pop(symbol, None)
        opened = last = self.monotonic()
        heard = False
        tasks: dict[str, asyncio.Task[Any]] = {}
        used: dict[str, Any] = {}  # ccxt's sockets (by URL) this connection runs on
        try:
            while not self.stopped:
                for key in self.keys:
                    if key not in tasks:
                        tasks[key] = asyncio.ensure_future(
                            self.ws.watch_ohlcv(self.symbols[key], self._intervals[key]))
                await asyncio.wait(tasks.values(), timeout=_LOOK_S, return_when=asyncio.FIRST_COMPLETED)
                if self._socket_replaced(used):  # before anything the new socket said is taken as this one's
                    return _Ended("connection lost (closed by the venue)", failed=True, heard=heard)
                news = heard_now = False
                for key, task in list(tasks.items()):
                    if task.done():
                        del tasks[key]
                        news = self.cache.note(key, parse_candles(task.result()), epoch) or news
                        heard_now = True
                    news = self._read_cache(key, epoch) or news
                if news or heard_now:  # a message, even one repeating the last, is not silence
                    last, heard = self.monotonic(), True
                if news:
                    self._wake.set()
                now = self.monotonic()
                if now - opened >= self.recycle_s:
                    return _Ended(f"recycled after {now - opened:.0f} s", failed=False, heard=heard)
                if now - last > self.silence_s:
                    return _Ended(f"silent for {now - last:.0f} s (limit {self.silence_s:.0f} s)", failed=True,
                                  heard=heard)
            return _Ended("stopped", failed=False, heard=heard)
        except Exception as exc:  # a dropped connection, a refused handshake: rebuilt, never fatal
            return _Ended(f"connection lost ({describe(exc)})", failed=True, heard=heard, error=exc)
        finally:
            for task in tasks.values():
                task.cancel()
            for task in tasks.values():
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await self.ws.close_ws_clients()

    def _socket_replaced(self, used: dict[str, Any]) -> bool:
        """Whether a socket this connection ran on is gone or replaced, and records the ones in use. A venue's
        close that comes while no watcher waits is not raised to anyone: ccxt drops the socket and the next
        ``watch_ohlcv`` quietly opens a new one, whose candles must not be trusted as this connection's."""
        sockets = getattr(self.ws, "clients", None) or {}
        if any(sockets.get(url) is not socket for url, socket in used.items()):
            return True
        used.update(sockets)
        return False

    def _read_cache(self, key: str, epoch: int) -> bool:
        """The newest candles ccxt holds for ``key`` into the cache; whether any was news.

        ccxt updates its candle cache on every message but hands an update to a watcher only if one is waiting:
        an update that comes between two ``watch_ohlcv`` calls (the close of a candle followed at once by the
        next one's first update) would otherwise wait for the next message."""
        by_symbol = self.ws.ohlcvs.get(self.symbols[key])
        stored = by_symbol.get(self._intervals[key]) if isinstance(by_symbol, dict) else None
        if not stored:
            return False
        return self.cache.note(key, parse_candles(list(islice(reversed(stored), _TAIL))), epoch)

    async def _backoff(self, seconds: float) -> None:
        """Wait ``seconds`` of real time, cut short by a stop."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self.stopped and loop.time() < end:
            await asyncio.sleep(min(_LOOK_S, end - loop.time()))


class _Ended(NamedTuple):
    """How a connection ended: why, whether that counts as a failure (for the backoff), whether it delivered
    anything (which resets the backoff), and the error, if one ended it."""

    reason: str
    failed: bool
    heard: bool
    error: BaseException | None = None


def _contiguous(candles: list[Candle], start: int, step: int) -> list[Candle]:
    """The leading run of ``candles`` that begins at ``start`` with no bar missing."""
    run: list[Candle] = []
    expected = start
    for candle in candles:
        if candle[0] != expected:
            break
        run.append(candle)
        expected += step
    return run


__all__ = ["RECONNECT", "CcxtWsFeed", "default_silence_s"]
