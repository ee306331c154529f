"""RSI mean reversion: buy when Wilder's RSI drops below ``lower``, go flat when it rises above ``upper``.

Wilder's RSI over ``n = period`` bars, with ``change[i] = close[i] - close[i-1]``,
``gain = max(change, 0)`` and ``loss = max(-change, 0)``:

* the averages are seeded at bar ``n`` with the simple mean of the first ``n`` changes (bars ``1..n``):
  ``avg_gain[n] = mean(gain[1..n])``, likewise ``avg_loss[n]``;
* afterwards they follow Wilder's smoothing (an exponential mean with ``alpha = 1/n``):
  ``avg[i] = (1 - 1/n) * avg[i-1] + (1/n) * x[i]``, i.e. ``(avg[i-1] * (n-1) + x[i]) / n``;
* ``rsi[i] = 100 * avg_gain[i] / (avg_gain[i] + avg_loss[i])`` (the same as ``100 - 100 / (1 + RS)``),
  ``100`` when there were no losses and ``50`` when the price did not move at all.

The averages are ``pipeline.features.streaming.Wilder`` (pandas' ``ewm(alpha=1/n, adjust=False).mean()`` arithmetic
started at the seed, the seed being ``numpy.mean`` of the first ``n`` moves), the same computation as the
``rsi_<n>`` feature. They run forward from the first bar the strategy is given: a bar's RSI never changes when
later bars are appended, and it does depend (with exponentially fading weight) on where the series starts, as
Wilder's RSI always does. The stream (``stream()``) carries the previous close, the two averages (or the seed
values until bar ``n``) and the previous bar's RSI; ``targets(frame)`` is a fresh stream given the whole frame.

Decisions, the first possible one at bar ``n + 1`` (``warmup``):

* ``rsi[i-1] >= lower > rsi[i]`` (crosses below ``lower``) → ``1.0``, reason ``"<name> oversold (<lower)"``;
* ``rsi[i-1] <= upper < rsi[i]`` (crosses above ``upper``) → ``0.0``, reason ``"<name> overbought (>upper)"``;
* otherwise no decision (NaN).

Closes must be finite numbers (as canonical bars are); a NaN close is refused with ``DataError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import DataError
from pipeline.features.streaming import Rsi, pack, section, unpack
from pipeline.strategies.base import Targets, check_features, check_owner


def _level(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"rsi_reversion parameter {name!r} must be a number, got {value!r}")
    level = float(value)
    if not 0.0 < level < 100.0:
        raise DataError(f"rsi_reversion parameter {name!r} must be between 0 and 100 (exclusive), got {value!r}")
    return level


def wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI of ``close`` (float64); NaN on bars ``0..period-1``."""
    return Rsi(period).update(close)


class RsiReversion:
    """Buy when Wilder's RSI crosses below ``lower``; go flat when it crosses above ``upper``."""

    def __init__(self, period: int = 14, lower: float = 30, upper: float = 70, name: str = "rsi_reversion") -> None:
        if isinstance(period, bool) or not isinstance(period, int | np.integer):
            raise DataError(f"rsi_reversion parameter 'period' must be an integer, got {period!r}")
        if period < 2:
            raise DataError(f"rsi_reversion parameter 'period' must be at least 2, got {period}")
        low = _level("lower", lower)
        high = _level("upper", upper)
        if not low < high:
            raise DataError(f"rsi_reversion parameter 'upper' must be greater than 'lower' ({low:g}), got {high:g}")
        self.period = int(period)
        self.lower = low
        self.upper = high
        self.name = name
        self.requires: tuple[str, ...] = ()
        self.warmup = self.period + 1
        self.reasons: tuple[str, ...] = (f"{name} oversold (<{low:g})", f"{name} overbought (>{high:g})")

    def __repr__(self) -> str:
        return f"RsiReversion(period={self.period}, lower={self.lower:g}, upper={self.upper:g}, name={self.name!r})"

    def rsi(self, features: pd.DataFrame) -> np.ndarray:
        """Wilder's RSI per bar (NaN until ``period`` changes exist), from the frame's first bar."""
        return RsiReversionStream(self).rsi(features)

    def stream(self) -> RsiReversionStream:
        return RsiReversionStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class RsiReversionStream:
    """The reversion rule bar by bar: Wilder's RSI state and the previous bar's RSI."""

    def __init__(self, strategy: RsiReversion) -> None:
        self.strategy = strategy
        self._rsi = Rsi(strategy.period)
        self._previous = np.nan

    def rsi(self, features: pd.DataFrame) -> np.ndarray:
        """Advance the RSI by the rows' closes (refusing a close that is not finite); the RSI of those rows."""
        close = features["close"].to_numpy(dtype=np.float64)
        finite = np.isfinite(close)
        if not finite.all():
            row = int(np.argmin(finite))
            raise DataError(
                f"strategy {self.strategy.name!r} needs finite closes; column 'close' holds {close[row]} at row {row}"
            )
        return self._rsi.update(close)

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        rsi = self.rsi(features)
        previous = np.concatenate(([self._previous], rsi[:-1]))
        lower, upper = self.strategy.lower, self.strategy.upper
        enter = (previous >= lower) & (rsi < lower)
        leave = (previous <= upper) & (rsi > upper)
        if len(rsi):
            self._previous = float(rsi[-1])
        return Targets.from_signals(enter, leave, self.strategy.reasons)

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy), "rsi": self._rsi.state(), "previous": pack(np.array([self._previous]))}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        fresh = RsiReversionStream(self.strategy)
        fresh._rsi.restore(section(state, "rsi", "rsi_reversion state"))
        fresh._previous = float(unpack(state.get("previous"), 1, "rsi_reversion previous RSI")[0])
        self.__dict__.update(fresh.__dict__)
