"""The compiled reductions of an equity curve that the metrics are made of, shared by a backtest's metrics
(``pipeline.backtest.metrics``) and the parameter sweep (``pipeline.research.kernel``), so a sweep reports
exactly the figures a plain backtest of the same parameters reports.

``return_moments(e)`` reads the per-bar simple returns ``r[i] = e[i] / e[i-1] - 1`` (``i = 1 … n-1``) and gives
their count, mean, sample standard deviation (ddof = 1, two passes), downside deviation
``sqrt(mean(min(r, 0) ** 2))``, whether every return is the same, and whether they are defined at all (every
equity before the last one positive). Sums run from the first return to the last, one after another.
``max_drawdown(e)`` is the largest ``(peak - e[i]) / peak`` with the running peak.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

COUNT, MEAN, STDEV, DOWNSIDE, CONSTANT, DEFINED = range(6)
MOMENTS = 6


@njit(cache=True, nogil=True)
def return_moments(e: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``[count, mean, stdev, downside, constant, defined]`` of the per-bar returns of ``e`` (see the module)."""
    out = np.zeros(MOMENTS)
    n = e.shape[0]
    out[DEFINED] = 1.0
    for i in range(n - 1):
        if not e[i] > 0.0:
            out[DEFINED] = 0.0
    count = n - 1
    if count < 1 or out[DEFINED] == 0.0:
        out[MEAN] = np.nan
        out[STDEV] = np.nan
        out[DOWNSIDE] = np.nan
        return out
    out[COUNT] = count
    total = 0.0
    down = 0.0
    low = math.inf
    high = -math.inf
    for i in range(1, n):
        r = e[i] / e[i - 1] - 1.0
        total += r
        if r < 0.0:
            down += r * r
        low = min(low, r)
        high = max(high, r)
    mean = total / count
    out[MEAN] = mean
    out[DOWNSIDE] = math.sqrt(down / count)
    out[CONSTANT] = 1.0 if low == high else 0.0
    if count < 2:
        out[STDEV] = np.nan
        return out
    squares = 0.0
    for i in range(1, n):
        deviation = (e[i] / e[i - 1] - 1.0) - mean
        squares += deviation * deviation
    out[STDEV] = math.sqrt(squares / (count - 1))
    return out


@njit(cache=True, nogil=True)
def max_drawdown(e: np.ndarray) -> float:  # pragma: no cover - compiled
    """The largest fall from the running peak as a fraction of that peak (0 without a fall)."""
    peak = -math.inf
    worst = 0.0
    for i in range(e.shape[0]):
        if e[i] > peak:
            peak = e[i]
        fall = (peak - e[i]) / peak
        if fall > worst:
            worst = fall
    return worst
