"""Deterministic synthetic minute bars for the benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd

MINUTES_PER_YEAR = 525_600


def gbm_bars(n: int, seed: int = 42) -> pd.DataFrame:
    """GBM closes (80 % annual volatility) on a 1-minute grid from 2024-01-01; opens at the previous close,
    highs and lows a half-normal half-sigma beyond them, log-normal volume."""
    rng = np.random.default_rng(seed)
    sigma = 0.8 / np.sqrt(MINUTES_PER_YEAR)
    close = 30_000 * np.exp(np.cumsum(rng.normal(-0.5 * sigma**2, sigma, n)))
    open_ = np.r_[30_000, close[:-1]]
    wiggle = np.abs(rng.normal(0, sigma / 2, (2, n)))
    return pd.DataFrame(
        {
            "timestamp": pd.Series(pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC").as_unit("ms")),
            "open": open_,
            "high": np.maximum(open_, close) * np.exp(wiggle[0]),
            "low": np.minimum(open_, close) * np.exp(-wiggle[1]),
            "close": close,
            "volume": rng.lognormal(1.0, 1.0, n),
        }
    )
