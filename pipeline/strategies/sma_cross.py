"""Moving-average crossover: go long when the fast simple mean of closes crosses above the slow one, go flat when
it crosses below.

With ``sma_n[i]`` the mean of the ``n`` closes ending at (and including) bar ``i`` and ``d = sma_fast - sma_slow``:

* ``d[i-1] < 0 < d[i]`` (up-cross) → decision ``1.0`` at bar ``i``, reason ``"<name> up (fast/slow)"``;
* ``d[i-1] > 0 > d[i]`` (down-cross) → decision ``0.0`` at bar ``i``, reason ``"<name> down (fast/slow)"``;
* otherwise no decision (NaN). Touching zero without crossing it is not a cross.

``sma_slow`` first exists at bar ``slow - 1``, so the first possible decision is at bar ``slow`` (``warmup``).

The means are ``pandas.Series.rolling(n).mean()`` of the float64 closes, so a trader who computes
``close.rolling(fast).mean() - close.rolling(slow).mean()`` with pandas gets bit-identical ``d`` and therefore
the same decisions. That computation runs forward from the first bar of the frame, so a bar's decision never
changes when later bars are appended (the truncation test checks it); a frame that starts at a different bar can
differ in the last bits of the means, which only matters when ``d`` is within rounding of zero.

Decisions are long-only (1/0); short exposure is a matter of engine configuration, not of this strategy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.domain import DataError
from pipeline.strategies.base import Targets, check_features


def _window(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataError(f"sma_cross parameter {name!r} must be an integer, got {value!r}")
    return int(value)


class SmaCross:
    """Long when the ``fast``-bar mean of closes crosses above the ``slow``-bar mean; flat when it crosses below."""

    def __init__(self, fast: int, slow: int, name: str = "sma_cross") -> None:
        fast_bars = _window("fast", fast)
        slow_bars = _window("slow", slow)
        if fast_bars < 1:
            raise DataError(f"sma_cross parameter 'fast' must be at least 1, got {fast_bars}")
        if slow_bars <= fast_bars:
            raise DataError(f"sma_cross parameter 'slow' must be greater than 'fast' ({fast_bars}), got {slow_bars}")
        self.fast = fast_bars
        self.slow = slow_bars
        self.name = name
        self.requires: tuple[str, ...] = ()
        self.warmup = slow_bars
        self.reasons: tuple[str, ...] = (
            f"{name} up ({fast_bars}/{slow_bars})",
            f"{name} down ({fast_bars}/{slow_bars})",
        )

    def __repr__(self) -> str:
        return f"SmaCross(fast={self.fast}, slow={self.slow}, name={self.name!r})"

    def spread(self, features: pd.DataFrame) -> np.ndarray:
        """``d = sma_fast - sma_slow`` per bar (NaN until ``slow`` closes exist)."""
        close = pd.Series(features["close"].to_numpy(dtype=np.float64, copy=False))
        fast = close.rolling(self.fast).mean().to_numpy()
        slow = close.rolling(self.slow).mean().to_numpy()
        spread: np.ndarray = fast - slow
        return spread

    def targets(self, features: pd.DataFrame) -> Targets:
        check_features(self, features)
        d = self.spread(features)
        n = len(d)
        up = np.zeros(n, dtype=bool)
        down = np.zeros(n, dtype=bool)
        if n > 1:
            previous, current = d[:-1], d[1:]
            up[1:] = (previous < 0.0) & (current > 0.0)
            down[1:] = (previous > 0.0) & (current < 0.0)
        return Targets.from_signals(up, down, self.reasons)


def golden_cross() -> SmaCross:
    """The classic 50/200 crossover."""
    return SmaCross(50, 200, name="golden_cross")
