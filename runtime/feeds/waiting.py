"""A live feed whose bars wait for the other series their strategies read (``pipeline.strategies.other_series``).

A sleeve's decision at a bar must see the other series' last bar closed by that bar's close, as a backtest over
the same bars does. A live venue may hand that bar over a little after the sleeve's own bar (the 10:00 hour of
BTC/USDT polled a second after the 10:55 five minutes of ETH/USDT, both closing at 11:00). ``WaitingFeed`` wraps
a live feed and holds a bar time back until every other series read at it has delivered every bar that can close
by then: the other series' next possible bar after the last one it delivered (on its market's calendar:
``expects_bar``) closes later. Bar times are released in order, so the node never steps a later time first.

The wait is bounded by the feed's own staleness rule: once a held bar has been closed for more than
``stale_after_bars`` bars of its own timeframe (the node would then judge its feed stale, had the bar been
decided), it is released and decided with what the other series has delivered, and ``on_late`` is told (the
node records it as a runtime event ``late_series``; a warning is logged). Until that series delivers a later bar
it is not waited for again (one event per episode; the node's staleness rule watches it meanwhile). A replay
needs no wrapper: its frames hold every bar from the start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from pipeline.clock import Clock
from pipeline.domain import Timeframe, epoch_ms
from runtime.feeds.base import Batch, Feed
from runtime.feeds.frames import key_timeframe, now_ms, rows_of, stamp

log = logging.getLogger(__name__)

LATE = "late_series"
"""The kind of the runtime event recorded when a bar is decided without an other series' bar it waited for."""
_MAX_LOOK = 100_000
"""At most this many possible bars of an other series are looked at for one bar time (a long market closure)."""


class WaitingFeed:
    """``inner`` (a live feed), its bar times held back until the other series read at them have caught up.

    ``needs`` maps a feed key to the feed keys of the other series read with its bars (the node's sleeves' own
    keys and their ``series_keys``).
    """

    def __init__(self, inner: Feed, needs: Mapping[str, tuple[str, ...]], clock: Clock, stale_after_bars: int,
                 on_late: Callable[[str], object] | None = None) -> None:
        self.inner = inner
        self.needs = {key: tuple(others) for key, others in needs.items() if others}
        self.clock = clock
        self.stale_after_bars = stale_after_bars
        self.on_late = on_late
        self.timeframe = inner.timeframe
        self.live = inner.live
        self.frames: dict[str, pd.DataFrame] = inner.frames  # the inner feed's, changed by it between batches
        self._held: dict[str, np.ndarray] = {}
        """The bar times (epoch ms) held back, per feed key."""
        self._given_up: dict[str, int | None] = {}
        """Other series waited for in vain, with their last bar then: not waited for again until a later one comes."""

    # ------------------------------------------------------------------ the Feed interface, passed through
    def history(self, key: str, through_row: int) -> pd.DataFrame:
        return self.inner.history(key, through_row)

    def stop(self) -> None:
        self.inner.stop()

    def expects_bar(self, key: str, now_ms: int) -> bool:
        return self.inner.expects_bar(key, now_ms)

    # ------------------------------------------------------------------ held batches
    @property
    def held(self) -> dict[str, np.ndarray]:
        """The bar times (epoch ms) held back now, per feed key."""
        return {key: times.copy() for key, times in self._held.items()}

    def batches(self, after: dict[str, int | None]) -> Iterator[Batch]:
        """The inner feed's batches, each bar time yielded once every other series read at it has caught up
        (or once it has waited as long as the staleness rule allows); ticks pass through."""
        for batch in self.inner.batches(after):
            if len(batch.times) == 0 and not self._held:
                yield batch
                continue
            released = self._release(batch)
            if released is not None:
                yield released
            if len(batch.times) == 0:
                yield batch  # the tick itself: the node applies commands and judges staleness

    def _release(self, batch: Batch) -> Batch | None:
        """What of the held bars and ``batch`` may go now (None: nothing); the rest stays held."""
        if self._held:
            times, rows = self._merged(batch)
        else:
            times, rows = batch.times, batch.rows
        ready = len(times)
        now = now_ms(self.clock)
        for i, at in enumerate(times):
            waiting = [(key, other) for key, others in self.needs.items() if key in rows and rows[key][i] >= 0
                       for other in others if not self._delivered(other, int(at) + self._step(key))]
            if not waiting:
                continue
            close = int(at) + self._step(waiting[0][0])
            if now - close <= self.stale_after_bars * self._step(waiting[0][0]):
                ready = i
                break
            self._late(int(at), close, waiting)
        self._held = {key: times[ready:][row[ready:] >= 0] for key, row in rows.items() if (row[ready:] >= 0).any()}
        if ready == 0:
            return None
        if ready == len(times) and times is batch.times:
            return batch
        return Batch(times[:ready], {key: row[:ready] for key, row in rows.items()})

    def _merged(self, batch: Batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The held bars and ``batch``'s as one batch, rows found again by time (a live frame may have been
        trimmed since a bar was held)."""
        none = batch.times[:0]
        mine = {key: np.union1d(self._held.get(key, none), batch.times[batch.rows[key] >= 0] if key in batch.rows
                                else none) for key in set(batch.rows) | set(self._held)}
        times = np.unique(np.concatenate([*mine.values(), none])).astype(np.int64)
        rows = {}
        for key, frame in self.frames.items():
            found = rows_of(epoch_ms(frame["timestamp"]), times)
            rows[key] = np.where(np.isin(times, mine.get(key, times[:0])), found, -1)
        return times, rows

    def _step(self, key: str) -> int:
        return key_timeframe(key, self.timeframe).millis

    def _delivered(self, other: str, close: int) -> bool:
        """Whether ``other`` has delivered every bar that can close by ``close``: the next bar it can make after
        its last one closes later (bars its market cannot make, ``expects_bar`` False, are not waited for)."""
        last = self._last(other)
        if other in self._given_up and self._given_up[other] == last:
            return True  # late already: rows go on with what it has until it delivers again
        if last is None:
            return False
        step = self._step(other)
        candidate = last + step
        for _ in range(_MAX_LOOK):
            if candidate + step > close:
                return True
            if self.inner.expects_bar(other, candidate):
                return False
            candidate += step
        return False

    def _last(self, key: str) -> int | None:
        frame = self.frames.get(key)
        return None if frame is None or frame.empty else int(epoch_ms(frame["timestamp"].iloc[-1:])[0])

    def _late(self, at: int, close: int, waiting: list[tuple[str, str]]) -> None:
        for key, other in waiting:
            last = self._given_up[other] = self._last(other)
            text = (f"{key} bar {stamp(at)}: {other} has not delivered its bars closing by {stamp(close)} within "
                    f"{self.stale_after_bars} bar(s) of {Timeframe(self._step(key) // 1000)}; decided with its last "
                    f"delivered bar ({stamp(last)}), which a backtest over the same bars may not see")
            log.warning(text)
            if self.on_late is not None:
                self.on_late(text)
