"""Alpaca's bar stream kept alive: one connection after another, a silent one replaced, refusals backed off.

``StreamWatchdog`` runs alpaca-py ``StockDataStream`` connections in a daemon thread (``alpaca-stream``), one at a
time, each in an asyncio loop of its own: connect, authenticate, subscribe to the bars of the feed's tickers,
then consume until the connection ends. Every connection after the first is a fresh stream from the feed's
factory. alpaca-py's own reconnect loop (``run``) is not used (it hides refusals and waits on wall time): the
watchdog drives ``DataStream``'s connection coroutines itself (``_start_ws``, ``_send_subscribe_msg``,
``_consume``, ``close``; alpaca-py 0.44) on a ``ScreenedStream`` copy of each stream, which shows it Alpaca's
answers, and the wait before each reconnect comes from the feed's retry policy
(``pipeline.retry.RetryPolicy.delay``: exponential from ``backoff_base_s`` up to ``backoff_cap_s``, with
jitter, a ``Retry-After`` honoured) and is spent through the feed's ``sleep``.

* **Silence.** A stream can stay connected and subscribed while delivering nothing. While the NYSE is in
  session, a connection that has delivered no bar (of any subscribed ticker) for longer than ``silent_after_ms``,
  counted from its last bar, from when it began or from the session's open (whichever is latest), is judged
  silent: it is closed and replaced. The feed's worker asks (``check``) at each poll, on the feed's clock.
  Outside sessions (nights, weekends, holidays) silence is normal and no connection is judged.
* **Backoff.** Consecutive failures (a connection refused or failed, one lost before it delivered a bar, a
  silent one) back off exponentially; a connection that delivered a bar resets the count, so the first
  reconnect after a healthy stream waits about ``backoff_base_s``. A refusal, HTTP 429 (or any other status)
  on the handshake or an error frame of Alpaca's that a later connection may not get (406 "connection limit
  exceeded" after the login...), is raised as ``StreamRefused`` with its status and headers, so that a
  ``Retry-After`` is honoured; every refusal counts as a failure.
* **Given up.** An error frame a reconnect cannot fix, at the login or in answer to the subscription (402 "auth
  failed", 405 "symbol limit exceeded", 409 "insufficient subscription", 410 "invalid subscribe action for this
  feed": ``runtime.feeds.alpaca_errors``), ends the stream for good, told once as ``STREAM_REJECTED`` with the
  stream, the subscription, the code and what to do; ``rejected`` holds it, and the feed polls its bars through
  REST from then on. A connection counts as subscribed once Alpaca has confirmed the subscription.
* Each teardown and reconnect is logged: the first of an outage and each reconnect through ``report(kind,
  text)`` (the feed's ``LiveFeed.note``, which logs it and hands it to the runtime as an event), the others
  (refusals while the stream is already down) to the log only. The kinds are ``STREAM_SILENT`` (a silent
  connection closed), ``STREAM_DOWN`` (the stream lost or refused), ``STREAM_RECONNECTED`` and
  ``STREAM_REJECTED``.

Bars the stream missed meanwhile come through REST (``AlpacaFeed._poll`` fills every hole).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from alpaca.data.live.stock import StockDataStream

from pipeline.clock import Clock
from pipeline.retry import RetryPolicy, describe
from runtime.feeds.alpaca_errors import (
    LIMIT_STATUS,
    StreamRefused,
    StreamRejected,
    error_of,
    handshake_error,
    login_error,
)
from runtime.feeds.frames import now_ms
from runtime.feeds.protocol import Sleep

log = logging.getLogger(__name__)

STREAM_SILENT = "stream_silent"
"""Runtime event: a connected stream delivered no bar for too long while the market was open; it was replaced."""
STREAM_DOWN = "stream_down"
"""Runtime event: the stream was lost or refused (once per outage); it is being reconnected."""
STREAM_RECONNECTED = "stream_reconnected"
"""Runtime event: a new stream connection is subscribed again after a teardown or a loss."""
STREAM_REJECTED = "stream_rejected"
"""Runtime event: Alpaca refused the stream for a reason a reconnect cannot fix; it is given up, bars come through
REST."""
DEFAULT_SILENT_AFTER_BARS = 3.0
"""How many bar lengths of silence, in session, make a connected stream silent (3 minutes for minute bars)."""
_JOIN_S = 2.0
"""How long a stop waits for the stream thread (a daemon) to close its connection."""

BarHandler = Callable[[Any], Awaitable[None]]
StreamFactory = Callable[[], StockDataStream]
Report = Callable[[str, str], None]
"""Logs ``(kind, text)`` and hands it on as a runtime event (``LiveFeed.note``)."""


class Sessions(Protocol):
    """When the market is open (``runtime.feeds.alpaca_feed.SessionCalendar``)."""

    def in_session(self, ms: int) -> bool: ...

    def opened_at(self, ms: int) -> int: ...


@dataclass(frozen=True)
class _Ended:
    """How a connection ended."""

    subscribed: bool
    heard: bool
    silent_ms: int | None
    error: BaseException | None


class ScreenedStream(StockDataStream):
    """A stream like ``like`` (its endpoint, keys, ``raw_data`` and websocket parameters) that shows Alpaca's
    answers, the confirmed subscription and error frames, to ``on_answer`` before its own dispatch (which only
    logs them); ``on_answer`` raises to end the connection."""

    def __init__(self, like: StockDataStream, on_answer: Callable[[Mapping[str, Any]], None]) -> None:
        super().__init__(like._api_key, like._secret_key, raw_data=like._raw_data,
                         websocket_params=like._websocket_params, url_override=like._endpoint,
                         data_timeout=like._data_timeout)
        self._on_answer = on_answer

    async def _dispatch(self, msg: dict[Any, Any]) -> None:
        if msg.get("T") in ("subscription", "error"):
            self._on_answer(msg)
        await super()._dispatch(msg)


def copy_of(stream: StockDataStream) -> StreamFactory:
    """A factory of streams like ``stream``: its endpoint, keys, ``raw_data`` and websocket parameters."""

    def build() -> StockDataStream:
        return StockDataStream(stream._api_key, stream._secret_key, raw_data=stream._raw_data,
                               websocket_params=stream._websocket_params, url_override=stream._endpoint,
                               data_timeout=stream._data_timeout)

    return build


async def _open(stream: StockDataStream) -> None:
    """Connect and log in; a refused handshake or an error frame in answer to the login as ``StreamRefused`` (a
    later connection may be served) or ``StreamRejected`` (no connection will be)."""
    try:
        await stream._start_ws()
    except ValueError as exc:  # alpaca-py's words for an error frame in answer to the login
        error: Exception | None = login_error(exc)
        if error is None:
            raise
        raise error from exc
    except Exception as exc:
        error = handshake_error(exc)
        if error is None:
            raise
        raise error from exc


def stream_name(stream: StockDataStream) -> str:
    """The stream as the operator knows it: ``Alpaca's iex bar stream`` (the feed is its URL's last part)."""
    feed = urlsplit(str(stream._endpoint)).path.rstrip("/").rsplit("/", 1)[-1]
    return f"Alpaca's {feed} bar stream" if feed else "Alpaca's bar stream"


class StreamWatchdog:
    """Runs the bar stream of ``tickers`` (bars to ``on_bar``), replaces a silent connection, reconnects with backoff.

    ``stream`` is the first connection's stream, ``factory`` builds every later one. ``silent_after_ms`` is the
    longest silence allowed in session (None: silence is never judged). ``stopping`` says when the feed stops.
    """

    def __init__(self, stream: StockDataStream, factory: StreamFactory, tickers: Sequence[str], on_bar: BarHandler,
                 *, clock: Clock, sessions: Sessions, silent_after_ms: int | None, retry: RetryPolicy, sleep: Sleep,
                 stopping: Callable[[], bool], report: Report) -> None:
        self.stream = stream
        """The stream of the connection under way (or of the last one)."""
        self.connections = 0
        """Connections whose subscription Alpaca confirmed."""
        self.rejected: StreamRejected | None = None
        """Why Alpaca will serve no stream (the stream was given up; its bars come through REST), or None."""
        self._first: StockDataStream | None = stream
        self._factory = factory
        self._tickers = sorted(tickers)
        self._handler = on_bar
        self._clock = clock
        self._sessions = sessions
        self._silent_after_ms = silent_after_ms
        self._retry = retry
        self._sleep = sleep
        self._stopping = stopping
        self._report = report
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._began_ms = 0
        self._heard_ms = 0
        self._subscribed = False
        self._heard = False
        self._silent_ms: int | None = None
        self._outage_told = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the feed's side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alpaca-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the connection under way and wait (briefly) for the thread; ``stopping`` must already say so."""
        with self._lock:
            self._cancel()
        if self._thread is not None:
            self._thread.join(_JOIN_S)

    def check(self) -> None:
        """Judge the connection under way: silent for longer than allowed while the market is open, it is closed
        (and replaced by the stream thread)."""
        if self._silent_after_ms is None:
            return
        now = now_ms(self._clock)
        if not self._sessions.in_session(now):
            return
        with self._lock:
            if self._task is None or self._silent_ms is not None:
                return
            quiet = now - max(self._began_ms, self._heard_ms, self._sessions.opened_at(now))
            if quiet <= self._silent_after_ms:
                return
            self._silent_ms = quiet
            self._cancel()

    async def _on_bar(self, bar: Any) -> None:
        now = now_ms(self._clock)
        with self._lock:
            self._heard_ms = now
            self._heard = True
        await self._handler(bar)

    # ------------------------------------------------------------------ the stream thread
    def _run(self) -> None:
        failures = 0
        while not self._stopping():
            try:
                stream = self._first if self._first is not None else self._factory()
            except Exception as exc:  # a factory that fails is retried like a refused connection
                failures += 1
                self._back_off(failures, exc, f"could not build a new bar stream ({describe(exc)})")
                continue
            self._first = None
            self.stream = ScreenedStream(stream, self._answered)
            ended = self._connect(self.stream)
            if self._stopping():
                return
            if isinstance(ended.error, StreamRejected):  # a reconnect would be answered the same
                self.rejected = ended.error
                self._tell(STREAM_REJECTED, self._given_up(stream, ended.error))
                return
            failures = 1 if ended.heard else failures + 1
            self._back_off(failures, ended.error, _why(ended), silent=ended.silent_ms is not None)

    def _back_off(self, failures: int, error: BaseException | None, why: str, *, silent: bool = False) -> None:
        wait = self._retry.delay(failures, error)
        text = f"alpaca: {why}; reconnecting in {wait:.2f} s (failure {failures} in a row)"
        if silent or not self._outage_told:
            self._tell(STREAM_SILENT if silent else STREAM_DOWN, text)
        else:  # the stream is known to be down already
            log.warning(text)
        self._outage_told = True
        self._sleep(wait)

    def _given_up(self, stream: StockDataStream, error: StreamRejected) -> str:
        tickers = ", ".join(self._tickers)
        what = "the login" if error.stage == "login" else f"the subscription to the bars of {tickers}"
        return (f"alpaca: {stream_name(stream)} refused {what}: {error.code} {error.text}. A reconnect cannot change "
                f"that: the stream is given up and the bars of {tickers} are polled through REST instead; to stream "
                f"them again, {error.advice}")

    def _connect(self, stream: StockDataStream) -> _Ended:
        """One connection, from the handshake until it ends (lost, refused, rejected, silent or stopped)."""
        stream.subscribe_bars(self._on_bar, *self._tickers)
        error: BaseException | None = None
        try:
            asyncio.run(self._session(stream))
        except asyncio.CancelledError:  # closed from outside: silent, or the feed stopped
            pass
        except Exception as exc:
            error = exc
        with self._lock:
            return _Ended(self._subscribed, self._heard, self._silent_ms, error)

    async def _session(self, stream: StockDataStream) -> None:
        with self._lock:
            if self._stopping():
                return
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._began_ms = now_ms(self._clock)
            self._subscribed = self._heard = False
            self._silent_ms = None
        try:
            await _open(stream)
            await stream._send_subscribe_msg()
            stream._running = True
            await stream._consume()  # until the connection closes or Alpaca refuses (raised), or it is cancelled
        finally:
            with self._lock:  # no cancel lands after this: the close below runs to its end
                self._loop = self._task = None
            with contextlib.suppress(Exception):
                await stream.close()

    def _answered(self, message: Mapping[str, Any]) -> None:
        """Alpaca's answer on the connection under way: the confirmed subscription marks it subscribed, an error
        frame ends it (raised out of ``_consume``; the login's answer is read by ``_start_ws``, so this one answers
        the subscription)."""
        if message.get("T") == "error":
            raise error_of(message, "subscription")
        with self._lock:
            first, self._subscribed = not self._subscribed, True
        if first:
            self._connected()

    def _connected(self) -> None:
        self.connections += 1
        tickers = ", ".join(self._tickers)
        if not self._outage_told:
            log.info("alpaca: bar stream subscribed to %s", tickers)
            return
        self._tell(STREAM_RECONNECTED, f"alpaca: the bar stream is back (connection {self.connections}), "
                                       f"subscribed to {tickers}")
        self._outage_told = False

    def _cancel(self) -> None:
        """Cancel the connection under way, from any thread (the caller holds the lock)."""
        loop, task = self._loop, self._task
        if loop is None or task is None:
            return

        def cancel() -> None:  # in the stream's loop: only if that connection is still the one under way
            with self._lock:
                if self._task is task:
                    task.cancel()

        with contextlib.suppress(RuntimeError):  # the loop closed in between: the connection has ended
            loop.call_soon_threadsafe(cancel)

    def _tell(self, kind: str, text: str) -> None:
        try:
            self._report(kind, text)
        except Exception as exc:  # a hook that fails never stops the stream
            log.warning("%s (not reported: %s)", text, describe(exc))


def _why(ended: _Ended) -> str:
    if ended.silent_ms is not None:
        return (f"the bar stream delivered no bar for {ended.silent_ms / 1000:.0f} s while the market was open; "
                "closed it")
    what = describe(ended.error) if ended.error is not None else "closed"
    if isinstance(ended.error, StreamRefused) and ended.error.status_code in (429, LIMIT_STATUS):
        return f"the bar stream was refused ({what}): Alpaca's connection limit"
    if ended.subscribed:
        return f"the bar stream was lost ({what})"
    return f"the bar stream could not connect ({what})"
