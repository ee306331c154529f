"""Other series a strategy may read: a higher timeframe of its own bars, aligned causally.

``HigherTimeframe("1d")`` is a stream a strategy's own stream carries: ``update(rows)`` takes the next rows of
the strategy's bar frame and returns, for each row, the last *closed* bar of the higher timeframe as it was
known when that row closed (``timestamp`` — its open time — and ``open, high, low, close, volume``; NaN before
the first one). A higher-timeframe bar is visible from the row that completes it, never earlier:

* buckets are aligned to the UTC epoch, as ``pipeline.data.resample`` aligns them (1h bars at :00, 1d at 00:00
  UTC), and a bucket takes the first open, the highest high, the lowest low, the last close and the summed
  volume of its rows;
* a bucket is complete at the row that ends it (its open time plus the row's timeframe reaches the bucket's
  end), or, when that row is missing (a gap, a market that closes before the bucket ends), at the first row of
  a later bucket;
* the bucket the stream starts in is not reported unless the stream starts at its first row, since a bar built
  from part of its interval is not the venue's bar.

The row timeframe is the smallest gap between the rows seen. Because a strategy's stream is the same in a
backtest, a paper replay and live trading, so is what it reads of the higher timeframe; ``state()`` and
``restore()`` carry it across restarts. Everything is compiled: the cost per row is constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe, epoch_ms
from pipeline.features.streaming import pack, unpack

COLUMNS = ("open", "high", "low", "close", "volume")
# state slots: the bucket in progress, the last visible bucket, the rows seen
_KEY, _O, _H, _L, _C, _V, _OPEN, _WHOLE, _DONE = range(9)
_SEEN_KEY, _SEEN = 9, 10  # the visible bucket's open time (ms, NaN before one), then its five values at 10..14
_LAST_MS, _BASE_MS = 15, 16
SLOTS = 17


@njit(cache=True)
def _advance(ms: np.ndarray, values: np.ndarray, every: float, state: np.ndarray, out: np.ndarray) -> None:
    for i in range(ms.shape[0]):
        t = float(ms[i])
        first_row = np.isnan(state[_LAST_MS])
        if not first_row:
            gap = t - state[_LAST_MS]
            if np.isnan(state[_BASE_MS]) or gap < state[_BASE_MS]:
                state[_BASE_MS] = gap
        state[_LAST_MS] = t
        key = np.floor(t / every) * every
        if state[_OPEN] == 1.0 and key != state[_KEY]:  # a later bucket: the one in progress has ended
            if state[_DONE] == 0.0 and state[_WHOLE] == 1.0:
                state[_SEEN_KEY] = state[_KEY]
                for j in range(5):
                    state[_SEEN + j] = state[_O + j]
            state[_OPEN] = 0.0
        if state[_OPEN] == 0.0:
            state[_KEY] = key
            for j in range(5):
                state[_O + j] = values[i, j]
            state[_OPEN] = 1.0
            state[_DONE] = 0.0
            state[_WHOLE] = 1.0 if (t == key or not first_row) else 0.0
        else:
            state[_H] = max(state[_H], values[i, 1])
            state[_L] = min(state[_L], values[i, 2])
            state[_C] = values[i, 3]
            state[_V] += values[i, 4]
        base = state[_BASE_MS]
        if not np.isnan(base) and state[_DONE] == 0.0 and t + base >= state[_KEY] + every and state[_WHOLE] == 1.0:
            state[_SEEN_KEY] = state[_KEY]
            for j in range(5):
                state[_SEEN + j] = state[_O + j]
            state[_DONE] = 1.0
        out[i, 0] = state[_SEEN_KEY]
        for j in range(5):
            out[i, 1 + j] = state[_SEEN + j]


def _fresh_state() -> np.ndarray:
    state = np.zeros(SLOTS)
    state[_SEEN_KEY:_SEEN + 5] = np.nan
    state[_LAST_MS] = state[_BASE_MS] = np.nan
    return state


class HigherTimeframe:
    """The closed bars of a higher timeframe of the strategy's own series (see the module documentation)."""

    def __init__(self, timeframe: str | Timeframe) -> None:
        self.timeframe = timeframe if isinstance(timeframe, Timeframe) else Timeframe.parse(timeframe)
        self._state = _fresh_state()

    def update(self, rows: pd.DataFrame) -> pd.DataFrame:
        """For each of ``rows`` (the next rows of a bar frame), the higher-timeframe bar visible at its close."""
        missing = [c for c in ("timestamp", *COLUMNS) if c not in rows.columns]
        if missing:
            raise DataError(f"a higher timeframe needs the bar columns; these rows lack {', '.join(missing)}")
        ms = epoch_ms(rows["timestamp"]) if len(rows) else np.empty(0, dtype=np.int64)
        values = np.ascontiguousarray(rows[list(COLUMNS)].to_numpy(dtype=np.float64))
        out = np.empty((len(rows), 6))
        _advance(ms, values, float(self.timeframe.millis), self._state, out)
        opened = pd.Series(pd.to_datetime(out[:, 0], unit="ms", utc=True), index=rows.index).astype(TIMESTAMP_DTYPE)
        return pd.DataFrame({"timestamp": opened, **{name: out[:, 1 + j] for j, name in enumerate(COLUMNS)}},
                            index=rows.index)

    def state(self) -> dict[str, Any]:
        return {"timeframe": str(self.timeframe), "state": pack(self._state)}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("timeframe") != str(self.timeframe):
            raise DataError(f"saved higher timeframe {state.get('timeframe')!r} is not {self.timeframe}")
        self._state = unpack(state.get("state"), SLOTS, "higher timeframe state")
