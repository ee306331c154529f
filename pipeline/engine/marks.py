"""An engine's bar marks: open time, equity, cash, units, close and paused, one row per bar stepped.

The marks live in preallocated arrays grown by doubling, so a compiled driver's whole batch is appended with
one copy per column and a runtime that drains after every batch hands over slices, not Python lists.
"""

from __future__ import annotations

import numpy as np

COLUMNS = ("equity", "cash", "units", "closes")


class Marks:
    """Bar marks appended one bar (``append``) or many (``extend``) at a time; ``clear`` forgets them all."""

    def __init__(self, capacity: int = 1024) -> None:
        self._times = np.empty(capacity, dtype=np.int64)
        self._values = np.empty((len(COLUMNS), capacity))
        self._paused = np.empty(capacity, dtype=np.bool_)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _room(self, more: int) -> None:
        needed = self._n + more
        if needed <= len(self._times):
            return
        capacity = max(needed, 2 * len(self._times))
        times, values, paused = np.empty(capacity, np.int64), np.empty((len(COLUMNS), capacity)), np.empty(
            capacity, np.bool_)
        times[: self._n], values[:, : self._n], paused[: self._n] = (
            self._times[: self._n], self._values[:, : self._n], self._paused[: self._n])
        self._times, self._values, self._paused = times, values, paused

    def append(self, ms: int, equity: float, cash: float, units: float, close: float, paused: bool) -> None:
        self._room(1)
        n = self._n
        self._times[n] = ms
        self._values[:, n] = (equity, cash, units, close)
        self._paused[n] = paused
        self._n = n + 1

    def extend(self, times: np.ndarray, equity: np.ndarray, cash: np.ndarray, units: np.ndarray,
               closes: np.ndarray, paused: np.ndarray) -> None:
        count = len(times)
        self._room(count)
        end = self._n + count
        self._times[self._n:end] = times
        for row, column in enumerate((equity, cash, units, closes)):
            self._values[row, self._n:end] = column
        self._paused[self._n:end] = paused
        self._n = end

    def time_at(self, position: int) -> int:
        """The open time (ms) of the bar at ``position`` (0 = the first kept)."""
        if not 0 <= position < self._n:
            raise IndexError(f"no bar mark at position {position} of {self._n}")
        return int(self._times[position])

    def since(self, first: int) -> dict[str, np.ndarray]:
        """Copies of the marks from ``first`` on: ``times``, ``equity``, ``cash``, ``units``, ``closes``,
        ``paused``."""
        out = {"times": self._times[first:self._n].copy(), "paused": self._paused[first:self._n].copy()}
        for row, name in enumerate(COLUMNS):
            out[name] = self._values[row, first:self._n].copy()
        return out

    def clear(self) -> None:
        self._n = 0
