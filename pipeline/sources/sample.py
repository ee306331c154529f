"""A deterministic synthetic market: the embedded default, so tradeforge runs with no network and no keys.

Sample bars are stored under the venue ``sample`` and flagged ``sample`` in the lake's metadata, the health
table and every command's output: they are never mistaken for, or mixed with, real market data.

The model, on a one-minute grid starting ``ANCHOR`` (2024-01-01 00:00 UTC); 24/7 for crypto symbols, NYSE
session minutes (exchange_calendars XNYS) for stock symbols:

* **regimes**: a three-state Markov chain (bull, bear, range) with drift +60 %, -50 % and 0 % a year and a
  mean stay of ten days;
* **volatility**: stochastic, log-volatility an AR(1) with a half-life of about a day around an annual
  volatility of 60 % (crypto) or 25 % (stocks);
* **returns**: Student-t shocks (4 degrees of freedom, scaled to unit variance) times the volatility, plus
  the regime drift; for stocks, the first minute of each session carries an overnight gap;
* **bars**: each minute opens at the previous close; high and low extend beyond open and close by
  half-normal amounts of half a minute's volatility; volume is log-normal and grows with |return|.

Every timeframe is the resample of the same minute path, so 1m, 5m, 1h and 1d sample bars agree. The path
depends only on the seed (setting ``sample_seed``) and the symbol: the same bar has the same values whenever
and however often it is generated.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from numba import njit

from pipeline.clock import Clock
from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, Instrument, Timeframe, empty_bars
from pipeline.quality import exchange_calendar
from pipeline.resample import resample_bars
from pipeline.sources.base import ProgressCallback, closed_only

ANCHOR = pd.Timestamp("2024-01-01", tz="UTC")
SAMPLE_VENUE = "sample"
MINUTES_PER_YEAR = 525_600.0
REGIME_DRIFTS = np.array([0.60, -0.50, 0.0]) / MINUTES_PER_YEAR
MEAN_REGIME_MINUTES = 10 * 24 * 60
VOL_HALF_LIFE_MINUTES = 24 * 60
LOG_VOL_STD = 0.35
STUDENT_DOF = 4.0


@njit(cache=True)
def _regimes(uniform: np.ndarray, switch_probability: float) -> np.ndarray:  # pragma: no cover - compiled
    state = np.empty(uniform.shape[0], dtype=np.int64)
    current = 2
    for i in range(uniform.shape[0]):
        u = uniform[i]
        if u < switch_probability:
            current = (current + 1 + int(u / switch_probability * 2.0)) % 3
        state[i] = current
    return state


@njit(cache=True)
def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(shocks.shape[0])
    level = 0.0
    for i in range(shocks.shape[0]):
        level = phi * level + shocks[i]
        out[i] = level
    return out


def minute_path(symbol: str, asset_class: AssetClass, seed: int, until: pd.Timestamp) -> pd.DataFrame:
    """The one-minute sample bars of ``symbol`` from ``ANCHOR`` up to (not including) ``until``."""
    if asset_class is AssetClass.STOCK:
        calendar = exchange_calendar("XNYS")
        minutes = calendar.minutes_in_range(ANCHOR, until - pd.Timedelta(minutes=1))
        stamps = pd.DatetimeIndex(minutes).as_unit("ms")
        annual_vol = 0.25
    else:
        count = max(int((until - ANCHOR) / pd.Timedelta(minutes=1)), 0)
        stamps = pd.date_range(ANCHOR, periods=count, freq="1min", unit="ms")
        annual_vol = 0.60
    n = len(stamps)
    if n == 0:
        return empty_bars()
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode())])
    start_price = float(10 ** rng.uniform(1.3, 2.7 if asset_class is AssetClass.STOCK else 4.6))
    regime = _regimes(rng.random(n), 1.0 / MEAN_REGIME_MINUTES)
    phi = 0.5 ** (1.0 / VOL_HALF_LIFE_MINUTES)
    log_vol = _ar1(rng.standard_normal(n) * LOG_VOL_STD * np.sqrt(1 - phi**2), phi)
    sigma = annual_vol / np.sqrt(MINUTES_PER_YEAR) * np.exp(log_vol - LOG_VOL_STD**2 / 2)
    shocks = rng.standard_t(STUDENT_DOF, n) / np.sqrt(STUDENT_DOF / (STUDENT_DOF - 2))
    returns = REGIME_DRIFTS[regime] + sigma * shocks
    if asset_class is AssetClass.STOCK:
        session_start = np.r_[True, np.diff(stamps.asi8) > 60_000]
        returns = returns + session_start * rng.standard_normal(n) * sigma * 8
    log_close = np.log(start_price) + np.cumsum(returns)
    close = np.exp(log_close)
    open_ = np.exp(np.r_[np.log(start_price), log_close[:-1]])
    wick = sigma * 0.5
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(n)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(n)) * wick)
    volume = np.exp(rng.normal(1.0, 0.5, n)) * (1 + np.abs(returns) / sigma)
    frame = pd.DataFrame(
        {
            "timestamp": pd.Series(stamps.tz_convert("UTC")).astype(TIMESTAMP_DTYPE),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.round(volume, 6),
        }
    )
    return frame


class SampleSource:
    """Synthetic bars for any valid symbol, stored under the venue ``sample``."""

    name = "sample"
    resumable = True

    def __init__(self, clock: Clock, seed: int) -> None:
        self.clock = clock
        self.seed = seed

    def instrument(self, symbol: str) -> Instrument:
        return Instrument.of(SAMPLE_VENUE, symbol)

    def fetch(
        self,
        instrument: Instrument,
        timeframe: Timeframe,
        since: pd.Timestamp | None,
        progress: ProgressCallback | None = None,
    ) -> pd.DataFrame:
        """Closed sample bars with open time ``>= since`` (from 2024-01-01 when ``since`` is None)."""
        now = self.clock.now()
        minutes = minute_path(instrument.symbol, instrument.asset_class, self.seed, now.floor("1min"))
        bars = resample_bars(minutes, Timeframe(60), timeframe, instrument.asset_class)
        if since is not None:
            bars = bars.loc[bars["timestamp"] >= since].reset_index(drop=True)
        bars = closed_only(bars, timeframe, now)
        if progress is not None:
            progress(len(bars))
        return bars
