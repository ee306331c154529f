"""RSI mean reversion: buy when Wilder's RSI drops below ``lower``, go flat when it rises above ``upper``.

Wilder's RSI over ``n = period`` bars, with ``change[i] = close[i] - close[i-1]``,
``gain = max(change, 0)`` and ``loss = max(-change, 0)``:

* the averages are seeded at bar ``n`` with the simple mean of the first ``n`` changes (bars ``1..n``):
  ``avg_gain[n] = mean(gain[1..n])``, likewise ``avg_loss[n]``;
* afterwards they follow Wilder's smoothing (an exponential mean with ``alpha = 1/n``):
  ``avg[i] = (1 - 1/n) * avg[i-1] + (1/n) * x[i]``, i.e. ``(avg[i-1] * (n-1) + x[i]) / n``;
* ``rsi[i] = 100 * avg_gain[i] / (avg_gain[i] + avg_loss[i])`` (the same as ``100 - 100 / (1 + RS)``),
  ``100`` when there were no losses and ``50`` when the price did not move at all.

The smoothing is ``pandas.Series.ewm(alpha=1/n, adjust=False).mean()`` started at the seed, which runs forward
from the first bar of the frame: a bar's RSI never changes when later bars are appended. The RSI at a bar does
depend (with exponentially fading weight) on where the frame starts, as Wilder's RSI always does.

Decisions, the first possible one at bar ``n + 1`` (``warmup``):

* ``rsi[i-1] >= lower > rsi[i]`` (crosses below ``lower``) → ``1.0``, reason ``"<name> oversold (<lower)"``;
* ``rsi[i-1] <= upper < rsi[i]`` (crosses above ``upper``) → ``0.0``, reason ``"<name> overbought (>upper)"``;
* otherwise no decision (NaN).

Closes must be finite numbers (as canonical bars are); a NaN close is refused with ``DataError``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.domain import DataError
from pipeline.strategies.base import Targets, check_features


def _level(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"rsi_reversion parameter {name!r} must be a number, got {value!r}")
    level = float(value)
    if not 0.0 < level < 100.0:
        raise DataError(f"rsi_reversion parameter {name!r} must be between 0 and 100 (exclusive), got {value!r}")
    return level


def wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI of ``close`` (float64); NaN on bars ``0..period-1``."""
    n = len(close)
    if n <= period:
        return np.full(n, np.nan)
    change = np.diff(close)
    gain = np.maximum(change, 0.0)
    loss = np.maximum(-change, 0.0)
    averages = []
    for moves in (gain, loss):
        series = np.full(n, np.nan)
        series[period] = moves[:period].mean()
        series[period + 1 :] = moves[period:]
        averages.append(pd.Series(series).ewm(alpha=1.0 / period, adjust=False).mean().to_numpy())
    avg_gain, avg_loss = averages
    total = avg_gain + avg_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi: np.ndarray = np.where(total > 0.0, 100.0 * avg_gain / total, 50.0)
    rsi[:period] = np.nan
    return rsi


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
        """Wilder's RSI per bar (NaN until ``period`` changes exist)."""
        close = features["close"].to_numpy(dtype=np.float64, copy=False)
        finite = np.isfinite(close)
        if not finite.all():
            row = int(np.argmin(finite))
            raise DataError(
                f"strategy {self.name!r} needs finite closes; column 'close' holds {close[row]} at row {row}"
            )
        return wilder_rsi(close, self.period)

    def targets(self, features: pd.DataFrame) -> Targets:
        check_features(self, features)
        rsi = self.rsi(features)
        n = len(rsi)
        enter = np.zeros(n, dtype=bool)
        leave = np.zeros(n, dtype=bool)
        if n > 1:
            previous, current = rsi[:-1], rsi[1:]
            enter[1:] = (previous >= self.lower) & (current < self.lower)
            leave[1:] = (previous <= self.upper) & (current > self.upper)
        return Targets.from_signals(enter, leave, self.reasons)
