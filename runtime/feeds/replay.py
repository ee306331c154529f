"""Replay of known bars (from the lake or a Parquet file) through the same interface as the live feeds.

``ReplayFeed`` replays as fast as possible (``speed=None``: large batches) or paced at ``speed`` times real
time (one bar per batch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from pipeline.domain import Timeframe, epoch_ms
from runtime.feeds.base import Batch


class ReplayFeed:
    """Replays bar frames, keyed by feed (``venue:SYMBOL:tf``), merged in time order."""

    live = False

    def __init__(
        self,
        frames: dict[str, pd.DataFrame],
        timeframe: Timeframe,
        speed: float | None = None,
        batch_size: int = 8192,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.frames = {key: frame.reset_index(drop=True) for key, frame in frames.items()}
        self.timeframe = timeframe
        self.speed = speed
        self.batch_size = batch_size if speed is None else 1
        self.sleep = sleep
        self._ms = {key: epoch_ms(frame["timestamp"]) for key, frame in self.frames.items()}
        self.clock = _union(list(self._ms.values()))
        self._stopping = threading.Event()

    def stop(self) -> None:
        """End ``batches`` before its next batch (safe from any thread)."""
        self._stopping.set()

    def expects_bar(self, key: str, now_ms: int) -> bool:
        """A replay always has a next bar until it ends."""
        return True

    def history(self, key: str, through_row: int) -> pd.DataFrame:
        """Every bar of ``key`` up to and including ``through_row`` (a view, not a copy)."""
        return self.frames[key].iloc[: through_row + 1]

    def batches(self, after: dict[str, int | None]) -> Iterator[Batch]:
        """Batches of bar times later than each feed's cursor (``after``: last processed open time, ms)."""
        floor = min((v for v in after.values() if v is not None), default=None)
        start = 0 if floor is None else int(np.searchsorted(self.clock, floor, side="right"))
        for first in range(start, len(self.clock), self.batch_size):
            if self._stopping.is_set():
                return
            times = self.clock[first: first + self.batch_size]
            rows = {}
            for key, ms in self._ms.items():
                cursor = after.get(key)
                index = np.searchsorted(ms, times)
                found = (index < len(ms)) & (ms[np.minimum(index, len(ms) - 1)] == times)
                if cursor is not None:
                    found &= times > cursor
                rows[key] = np.where(found, index, -1)
            if self.speed is not None:  # a bar's length, or less up to a finer other series' next bar
                elapsed = self.timeframe.millis if first == start else int(times[0] - self.clock[first - 1])
                self.sleep(min(elapsed, self.timeframe.millis) / 1000 / self.speed)
                if self._stopping.is_set():
                    return
            yield Batch(times, rows)


def _union(times: list[np.ndarray]) -> np.ndarray:
    """Every feed's bar times, sorted and distinct (one feed whose times are already so is its own clock)."""
    if not times:
        return np.empty(0, np.int64)
    if len(times) == 1 and bool((np.diff(times[0]) > 0).all()):
        return times[0]
    return np.unique(np.concatenate(times))

