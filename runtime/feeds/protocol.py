"""What every feed gives the node (``Feed``, ``Batch``) and the types the live feeds share (``runtime.feeds.base``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Protocol, TypedDict

import numpy as np
import pandas as pd

from pipeline.domain import Timeframe

__all__ = ["Batch", "Feed", "FeedError", "LiveOptions", "Monotonic", "Sleep", "Update", "empty_batch"]

Sleep = Callable[[float], None]
"""Waits the given seconds (a live feed's default returns early when the feed is stopped)."""

Monotonic = Callable[[], float]
"""Seconds on a clock that never goes back (``time.monotonic``); only differences between readings count."""

@dataclass(frozen=True)
class Batch:
    """Bar times (epoch ms, ascending) and, per feed key, the history row of each time (-1: no bar then)."""

    times: np.ndarray
    rows: dict[str, np.ndarray]

    @property
    def empty(self) -> bool:
        return len(self.times) == 0


def empty_batch(keys: list[str]) -> Batch:
    """A batch without bars: a tick that lets the node apply commands and write its heartbeat."""
    return Batch(np.empty(0, np.int64), {key: np.empty(0, np.int64) for key in keys})


class Feed(Protocol):
    """What the node consumes: bar frames per feed key and batches of newly closed bars."""

    timeframe: Timeframe
    live: bool
    frames: dict[str, pd.DataFrame]

    def history(self, key: str, through_row: int) -> pd.DataFrame:
        """``frames[key].iloc[:through_row + 1]``."""
        ...

    def batches(self, after: dict[str, int | None]) -> Iterator[Batch]:
        """Batches of bars later than each key's cursor (last processed open time, epoch ms)."""
        ...

    def stop(self) -> None:
        """Make ``batches`` return promptly; safe to call from any thread."""
        ...

    def expects_bar(self, key: str, now_ms: int) -> bool:
        """Whether a new bar of ``key`` is expected around ``now_ms`` (False while its market is closed)."""
        ...


class FeedError(RuntimeError):
    """A live feed could not get what it needs from its venue; the message names the venue and the series."""


Update = dict[str, pd.DataFrame]
"""Closed bars per feed key handed from a worker to ``batches`` (canonical frames, ascending)."""


class LiveOptions(TypedDict, total=False):
    """The options of ``LiveFeed`` that a venue feed takes as keywords and passes on (defaults: ``LiveFeed``'s)."""

    poll_s: float
    warmup: int
    tick_s: float
    backoff_base_s: float
    backoff_cap_s: float
    sleep: Sleep | None
    max_rows: int | None
    batch_size: int
    warmup_attempts: int
    monotonic: Monotonic
    series: Collection[str]
