"""What every feed gives the node (``Feed``, ``Batch``) and the machinery the live feeds share (``LiveFeed``).

A live feed keeps one bar frame per feed key (``venue:SYMBOL:tf``). At construction it loads ``warmup`` closed
bars before now from the venue; ``batches(after)`` then

1. extends a frame back in time when a cursor lies before its first bar (a restart after a long stop),
2. yields every closed bar later than each cursor (the catch-up: bars missed while the node was down),
3. starts a worker thread that asks the venue for newly closed bars and hands them over through a queue,
4. yields them as they come, several keys merged by open time, and an empty batch (a tick) once ``tick_s``
   seconds have passed since the last batch while nothing closes (the node applies commands and writes its
   heartbeat on it). Elapsed time is read from the feed's ``monotonic`` clock (``time.monotonic`` unless one
   is injected), never from the market ``clock``: a tick measures the feed's waiting, not market time.

Frames are changed by the ``batches`` generator only, between two batches: appended with new bars and trimmed
to keep memory bounded. A bar is delivered at most once per key and in ascending order per key; a bar for a
time already delivered whose values differ (a venue's correction) is ignored with a warning.

Venue errors never leave ``batches``: the worker retries through the one retry policy (``pipeline.retry``:
exponential backoff from ``backoff_base_s`` up to ``backoff_cap_s``, with jitter, a ``Retry-After`` honoured)
from the last bar it handed over, so that nothing is missed or delivered twice. The bar-frame helpers the feeds
share live in ``runtime.feeds.frames``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator

import numpy as np
import pandas as pd

from pipeline.clock import Clock
from pipeline.domain import VALUE_COLUMNS, DataError, Timeframe, empty_bars, epoch_ms
from pipeline.retry import RetriesExhausted, RetryPolicy, any_error, describe
from runtime.feeds.frames import bars_of, check_key, floor_ms, key_timeframe, now_ms, rows_of, stamp
from runtime.feeds.protocol import Batch, Feed, FeedError, LiveOptions, Monotonic, Sleep, Update, empty_batch

__all__ = ["Batch", "Feed", "FeedError", "LiveFeed", "LiveOptions", "Monotonic", "Sleep", "Update", "empty_batch"]

log = logging.getLogger(__name__)

_POLL_SLICE_S = 0.2
"""How often a waiting ``batches`` looks at the stop flag."""


class LiveFeed:
    """The shared part of the live feeds: frames, cursors, the worker thread, catch-up, ticks and stop.

    A venue feed implements ``_fetch(key, start_ms, end_ms)`` (closed bars with ``start_ms <= open < end_ms``,
    paging as needed) and ``_warm_up_start(key, now)`` (where ``warmup`` bars before now begin), and may replace
    ``_poll(known)`` (newly closed bars after each key's last handed-over bar). ``monotonic`` is the feed's clock of
    elapsed seconds (only differences count), read to decide when a tick is due; tests drive ticks with a fake one.

    ``series`` are keys among ``keys`` of other series a strategy reads (``pipeline.strategies.other_series``):
    each is at the timeframe its key names (``timeframe_of``), which may differ from the feed's ``timeframe``.
    """

    live = True
    venue = "venue"

    def __init__(self, keys: list[str], timeframe: Timeframe, clock: Clock, *, poll_s: float = 2.0,
                 warmup: int = 1000, tick_s: float = 1.0, backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0,
                 sleep: Sleep | None = None, max_rows: int | None = None, batch_size: int = 8192,
                 warmup_attempts: int = 5, monotonic: Monotonic = time.monotonic, series: Collection[str] = ()) -> None:
        if not keys:
            raise DataError("a live feed needs at least one series (feed key venue:SYMBOL:tf)")
        for name, value in (("poll_s", poll_s), ("tick_s", tick_s), ("backoff_base_s", backoff_base_s)):
            if value <= 0:
                raise DataError(f"{name} {value} is not valid: it must be a positive number of seconds")
        if warmup < 1:
            raise DataError(f"warmup {warmup} is not valid: a live feed loads at least one bar of history")
        if backoff_cap_s < backoff_base_s:
            raise DataError(f"backoff_cap_s {backoff_cap_s} is not valid: it must be at least backoff_base_s")
        if max_rows is not None and max_rows <= warmup:
            raise DataError(f"max_rows {max_rows} is not valid: it must exceed warmup ({warmup})")
        for key in keys:
            check_key(key, key_timeframe(key, timeframe) if key in series else timeframe)
        self.keys = list(keys)
        self.timeframe = timeframe
        self.timeframes = {key: key_timeframe(key, timeframe) if key in series else timeframe for key in keys}
        self.clock = clock
        self.poll_s = poll_s
        self.warmup = warmup
        self.tick_s = tick_s
        self.max_rows = max_rows if max_rows is not None else 2 * warmup + 100
        self.batch_size = batch_size
        self.warmup_attempts = warmup_attempts
        self.monotonic = monotonic
        self._stopping = threading.Event()
        self._sleep: Sleep = sleep if sleep is not None else self._wait
        self.retry = RetryPolicy(attempts=None, base_s=backoff_base_s, cap_s=backoff_cap_s, sleep=self._sleep,
                                 clock=clock)
        """The retry policy of every venue call (no limit of attempts: the feed retries until it is stopped)."""
        self._updates: queue.Queue[Update] = queue.Queue()
        self._notes: queue.Queue[tuple[str, str]] = queue.Queue()
        self.on_event: Callable[[str, str], object] | None = None
        """Told (kind, text) of what the feed did about its venue connection (a reconnect, a fallback), from the
        thread that consumes ``batches``; the runtime records each as a runtime event."""
        self._worker: threading.Thread | None = None
        self._delivered: dict[str, int | None] = {key: None for key in keys}
        self.frames: dict[str, pd.DataFrame] = {key: empty_bars() for key in keys}

    # ------------------------------------------------------------------ what a venue feed provides
    def _fetch(self, key: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        raise NotImplementedError

    def _warm_up_start(self, key: str, now: int) -> int:
        raise NotImplementedError

    def timeframe_of(self, key: str) -> Timeframe:
        """The timeframe of ``key``'s bars (the feed's, but for an other series' key)."""
        return self.timeframes[key]

    def _poll(self, known: dict[str, int]) -> Update:
        """By default, each key's bars from the one after its last handed-over bar, once that one has closed."""
        now = now_ms(self.clock)
        step = {key: self.timeframes[key].millis for key in self.keys}
        return {key: self._fetch(key, known[key] + step[key], now) for key in self.keys
                if known[key] + 2 * step[key] <= now}

    def _started(self) -> None:
        """Called in the worker thread before the first poll (a stream connects here)."""

    def _pause(self) -> None:
        """Between two polls of the worker: ``poll_s`` seconds (a stream's feed wakes as soon as a message comes)."""
        self._sleep(self.poll_s)

    def note(self, kind: str, text: str) -> None:
        """Log ``text`` and hand it to ``on_event`` from the consuming thread (safe to call from any thread)."""
        log.warning(text)
        self._notes.put((kind, text))

    def _stopped(self) -> None:
        """Called in the worker thread when it ends (a stream disconnects here)."""

    def expects_bar(self, key: str, now_ms: int) -> bool:
        return True

    # ------------------------------------------------------------------ the Feed interface
    def history(self, key: str, through_row: int) -> pd.DataFrame:
        """Every bar of ``key`` up to and including ``through_row`` (a view, not a copy)."""
        return self.frames[key].iloc[: through_row + 1]

    def stop(self) -> None:
        """Make ``batches`` return within a fraction of a second; the worker thread ends with it."""
        self._stopping.set()

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def batches(self, after: dict[str, int | None]) -> Iterator[Batch]:
        """Catch-up batches for bars later than ``after`` (None: none, start from now), then live batches."""
        try:
            yield from self._extend_back(after)
            if self.stopped:
                return
            yield from self._catch_up(after)
            known = {key: self._empty_start(key) if last is None else last for key, last in self._delivered.items()}
            self._worker = threading.Thread(
                target=self._run_worker, args=(known,), name=f"feed-{self.venue}", daemon=True
            )
            self._worker.start()
            yield from self._live()
        finally:
            self._stopping.set()

    # ------------------------------------------------------------------ start: warm-up and catch-up
    def _warm_up(self) -> None:
        """Fill every frame with up to ``warmup`` closed bars before now (retried; ``FeedError`` at the end)."""
        now = now_ms(self.clock)
        for key in self.keys:
            start = self._warm_up_start(key, now)
            bars = self._fetch_retried(key, start, now, self.warmup_attempts)
            self.frames[key] = bars.tail(self.warmup).reset_index(drop=True)
            log.info("%s: warm-up loaded %d bars of %s (last %s)", self.venue, len(self.frames[key]), key,
                     stamp(self._last_ms(key)))

    def _fetch_retried(self, key: str, start_ms: int, end_ms: int, attempts: int) -> pd.DataFrame:
        def failed(exc: BaseException, tries: int) -> BaseException:
            return FeedError(f"{self.venue}: could not load the bars of {key} from {stamp(start_ms)} after {tries} "
                             f"attempts: {describe(exc)}")

        return self.retry.with_options(attempts=attempts).call(
            lambda: self._fetch(key, start_ms, end_ms), what=f"{self.venue}: loading {key}", transient=any_error,
            give_up=failed, until=lambda: self.stopped)

    def _extend_back(self, after: dict[str, int | None]) -> Iterator[Batch]:
        """Load the bars between an old cursor and a frame's first bar, retrying (with ticks) until done."""
        for key in self.keys:
            cursor = after.get(key)
            first = self._first_ms(key)
            if cursor is None or (first is not None and cursor >= first):
                continue
            end = first if first is not None else now_ms(self.clock)
            start = self._warm_up_start(key, cursor + self.timeframes[key].millis)
            older: pd.DataFrame | None = None
            try:
                for attempt in self.retry.attempts_of(what=f"{self.venue}: loading {key} from {stamp(start)}",
                                                      transient=any_error, until=lambda: self.stopped):
                    if attempt.retry_state.attempt_number > 1:
                        yield empty_batch(self.keys)  # the node keeps its heartbeat while the venue fails
                    with attempt:
                        older = self._fetch(key, start, end)
            except RetriesExhausted:  # stopped while the venue failed
                return
            if older is None:
                return
            merged = pd.concat([older, self.frames[key]], ignore_index=True) if len(older) else self.frames[key]
            self.frames[key] = bars_of(merged)
            log.info("%s: loaded %d older bars of %s to catch up from %s", self.venue, len(older), key,
                     stamp(cursor))

    def _catch_up(self, after: dict[str, int | None]) -> Iterator[Batch]:
        """Batches of the bars already in the frames that are later than the cursors."""
        stamps = {key: epoch_ms(frame["timestamp"]) for key, frame in self.frames.items()}
        later: dict[str, np.ndarray] = {}
        for key in self.keys:
            cursor = after.get(key)
            ms = stamps[key]
            later[key] = ms[ms > cursor] if cursor is not None else ms[:0]
            last = self._last_ms(key)
            if cursor is None or last is None:
                self._delivered[key] = last if cursor is None else cursor
            else:
                self._delivered[key] = max(last, cursor)
        times = np.unique(np.concatenate(list(later.values())))
        for first in range(0, len(times), self.batch_size):
            chunk = times[first : first + self.batch_size]
            yield Batch(chunk, {key: _only(rows_of(stamps[key], chunk), chunk, later[key]) for key in self.keys})

    def _empty_start(self, key: str) -> int:
        """Where a key without any bar starts: just before the bar now open (it is delivered once closed)."""
        step = self.timeframes[key].millis
        return floor_ms(now_ms(self.clock), step) - step

    # ------------------------------------------------------------------ the worker thread
    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _run_worker(self, known: dict[str, int]) -> None:
        try:
            self._started()
            while not self.stopped:
                try:  # a venue fault never ends the feed: the retry policy backs off until the venue answers
                    update = self.retry.call(lambda: self._poll(known), what=f"{self.venue}: polling",
                                             transient=any_error, until=lambda: self.stopped)
                except RetriesExhausted:  # stopped while the venue failed: no request after the stop
                    return
                fresh = {key: bars for key, bars in update.items() if len(bars)}
                if fresh:
                    for key, bars in fresh.items():
                        known[key] = max(known[key], int(epoch_ms(bars["timestamp"])[-1]))
                    self._updates.put(fresh)
                self._pause()
        finally:
            self._stopped()

    # ------------------------------------------------------------------ live batches
    def _live(self) -> Iterator[Batch]:
        """Batches of the bars the worker hands over and, while none come, a tick once ``tick_s`` has passed.

        ``monotonic`` is read once per look, after each wait for the worker (at most ``min(tick_s, _POLL_SLICE_S)``
        seconds): a tick is yielded at the first look at which ``tick_s`` has passed since the last batch, and the
        next one is due ``tick_s`` after that look. A stop is seen at the next look at the stop flag (between two
        batches: before any further reading of the clock; during a wait: right after that wait's reading) and ends
        the batches; nothing is yielded once it has been seen.
        """
        last_yield = self.monotonic()
        while not self.stopped:
            self._trim()
            self._report()
            try:
                update = self._updates.get(timeout=min(self.tick_s, _POLL_SLICE_S))
            except queue.Empty:
                now = self.monotonic()
                if now - last_yield >= self.tick_s and not self.stopped:
                    last_yield = now
                    yield empty_batch(self.keys)
                continue
            while True:  # merge whatever else is waiting into the same batch
                try:
                    more = self._updates.get_nowait()
                except queue.Empty:
                    break
                for key, bars in more.items():
                    update[key] = pd.concat([update[key], bars], ignore_index=True) if key in update else bars
            if self.stopped:
                return
            batch = self._accept(update)
            now = self.monotonic()
            if batch.empty and now - last_yield < self.tick_s:
                continue
            last_yield = now
            yield batch

    def _report(self) -> None:
        """Hand the notes the worker and stream threads left to ``on_event``."""
        while True:
            try:
                kind, text = self._notes.get_nowait()
            except queue.Empty:
                return
            if self.on_event is not None:
                try:
                    self.on_event(kind, text)
                except Exception as exc:  # a failed record of a note must not end the bars
                    log.error("%s: the note %r could not be recorded (%s)", self.venue, kind, describe(exc))

    def _accept(self, update: Update) -> Batch:
        """Append the new bars of ``update`` to the frames; the batch of what was appended."""
        appended: dict[str, np.ndarray] = {}
        for key, raw in update.items():
            if key not in self.frames:
                continue
            bars = bars_of(raw)
            ms = epoch_ms(bars["timestamp"])
            delivered = self._delivered[key]
            fresh = ms > delivered if delivered is not None else np.ones(len(ms), dtype=bool)
            if (~fresh).any():
                self._check_known(key, bars.loc[~fresh])
            if fresh.any():
                new = bars.loc[fresh]
                self.frames[key] = pd.concat([self.frames[key], new], ignore_index=True)
                appended[key] = ms[fresh]
                self._delivered[key] = int(ms[fresh][-1])
        if not appended:
            return empty_batch(self.keys)
        times = np.unique(np.concatenate(list(appended.values())))
        rows = {key: _only(rows_of(epoch_ms(self.frames[key]["timestamp"]), times), times, appended[key])
                if key in appended else np.full(len(times), -1, dtype=np.int64) for key in self.keys}
        return Batch(times, rows)

    def _check_known(self, key: str, bars: pd.DataFrame) -> None:
        """Bars for times already delivered: a differing one is a correction, ignored with a warning."""
        frame = self.frames[key]
        known = epoch_ms(frame["timestamp"])
        stored = frame[list(VALUE_COLUMNS)].to_numpy(dtype=np.float64)
        values = bars[list(VALUE_COLUMNS)].to_numpy(dtype=np.float64)
        for ms, row in zip(epoch_ms(bars["timestamp"]), values, strict=True):
            index = int(np.searchsorted(known, ms))
            if index < len(known) and known[index] == ms:
                if not np.array_equal(stored[index], row, equal_nan=True):
                    log.warning("%s: %s bar at %s was corrected by the venue after it was delivered; "
                                "the delivered values are kept", self.venue, key, stamp(int(ms)))
            else:
                log.warning("%s: %s bar at %s arrived after later bars were delivered; ignored",
                            self.venue, key, stamp(int(ms)))

    def _trim(self) -> None:
        """Keep memory bounded: a frame longer than ``max_rows`` keeps its newest ``warmup`` bars."""
        for key, frame in self.frames.items():
            if len(frame) > self.max_rows:
                self.frames[key] = frame.iloc[len(frame) - self.warmup :].reset_index(drop=True)

    def _first_ms(self, key: str) -> int | None:
        frame = self.frames[key]
        return None if frame.empty else int(epoch_ms(frame["timestamp"].iloc[:1])[0])

    def _last_ms(self, key: str) -> int | None:
        frame = self.frames[key]
        return None if frame.empty else int(epoch_ms(frame["timestamp"].iloc[-1:])[0])


def _only(rows: np.ndarray, times: np.ndarray, mine: np.ndarray) -> np.ndarray:
    """``rows`` (a key's row at each of ``times``) kept only at the times in ``mine`` (what that key delivers now):
    a bar another key's later bar shares its time with was delivered before and is not delivered again."""
    return np.where(np.isin(times, mine), rows, -1)
