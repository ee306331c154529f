"""Moving-average crossover: go long when the fast simple mean of closes crosses above the slow one, go flat when
it crosses below.

With ``sma_n[i]`` the mean of the ``n`` closes ending at (and including) bar ``i`` and ``d = sma_fast - sma_slow``:

* ``d[i-1] < 0 < d[i]`` (up-cross) → decision ``1.0`` at bar ``i``, reason ``"<name> up (fast/slow)"``;
* ``d[i-1] > 0 > d[i]`` (down-cross) → decision ``0.0`` at bar ``i``, reason ``"<name> down (fast/slow)"``;
* otherwise no decision (NaN). Touching zero without crossing it is not a cross.

``sma_slow`` first exists at bar ``slow - 1``, so the first possible decision is at bar ``slow`` (``warmup``).

The means are exact window means (``pipeline.features.streaming.Window``): the sum of ``close[i], close[i-1], ...,
close[i-n+1]`` in that order from 0, divided by ``n``, and exactly the close when the ``n`` closes are all equal.
A bar's mean depends on its window's closes only, so ``d`` and the decisions are the same bit for bit whatever
bars precede the window and wherever the frame starts; a flat stretch gives ``d = 0`` exactly (no spurious
cross). A close that is NaN makes every mean whose window holds it NaN, and a NaN ``d`` is never a cross.

The stream (``stream()``) carries the last ``slow - 1`` closes and the previous bar's ``d``; ``targets(frame)``
is a fresh stream given the whole frame. Decisions are long-only (1/0); short exposure is a matter of engine
configuration, not of this strategy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import DataError
from pipeline.features.streaming import Window, pack, section, unpack
from pipeline.strategies.base import Targets, check_features, check_owner


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
        """``d = sma_fast - sma_slow`` per bar (NaN until ``slow`` closes exist), from the frame's first bar."""
        return SmaCrossStream(self).spread(features["close"].to_numpy(dtype=np.float64))

    def stream(self) -> SmaCrossStream:
        return SmaCrossStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class SmaCrossStream:
    """The crossover's decisions bar by bar: the two windows of closes and the previous bar's ``d``."""

    def __init__(self, strategy: SmaCross) -> None:
        self.strategy = strategy
        self._fast = Window(strategy.fast)
        self._slow = Window(strategy.slow)
        self._previous = np.nan

    def spread(self, close: np.ndarray) -> np.ndarray:
        """Advance both means by ``close``; ``d`` for those bars."""
        spread: np.ndarray = self._fast.update(close)[0] - self._slow.update(close)[0]
        return spread

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        d = self.spread(features["close"].to_numpy(dtype=np.float64))
        previous = np.concatenate(([self._previous], d[:-1]))
        up = (previous < 0.0) & (d > 0.0)
        down = (previous > 0.0) & (d < 0.0)
        if len(d):
            self._previous = float(d[-1])
        return Targets.from_signals(up, down, self.strategy.reasons)

    def state(self) -> dict[str, Any]:
        return {
            "strategy": repr(self.strategy),
            "fast": self._fast.state(),
            "slow": self._slow.state(),
            "previous": pack(np.array([self._previous])),
        }

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        fresh = SmaCrossStream(self.strategy)
        fresh._fast.restore(section(state, "fast", "sma_cross state"))
        fresh._slow.restore(section(state, "slow", "sma_cross state"))
        fresh._previous = float(unpack(state.get("previous"), 1, "sma_cross previous spread")[0])
        self.__dict__.update(fresh.__dict__)


def golden_cross() -> SmaCross:
    """The classic 50/200 crossover."""
    return SmaCross(50, 200, name="golden_cross")
