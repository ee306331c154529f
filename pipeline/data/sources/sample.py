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
from pipeline.domain import SAMPLE_VENUE, TIMESTAMP_DTYPE, AssetClass, Instrument, Timeframe, empty_bars
from pipeline.data.quality import exchange_calendar
from pipeline.data.resample import resample_bars
from pipeline.data.sources.base import ProgressCallback, closed_only

ANCHOR = pd.Timestamp("2024-01-01", tz="UTC")
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


def _draws(symbol_seed: list[int], minutes: int) -> dict[str, np.ndarray]:
    """Random draws for the first ``minutes`` minutes after ``ANCHOR``, one independent stream per day.

    Each day's numbers come from their own generator, so a minute's draws never depend on how much history is
    generated: the same bar has the same values whatever ``now`` is.
    """
    names = ("regime", "vol", "shock", "gap", "high", "low", "volume")
    days = -(-minutes // 1440)
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for day in range(days):
        rng = np.random.default_rng([*symbol_seed, day])
        blocks["regime"].append(rng.random(1440))
        blocks["vol"].append(rng.standard_normal(1440))
        blocks["shock"].append(rng.standard_t(STUDENT_DOF, 1440))
        blocks["gap"].append(rng.standard_normal(1440))
        blocks["high"].append(np.abs(rng.standard_normal(1440)))
        blocks["low"].append(np.abs(rng.standard_normal(1440)))
        blocks["volume"].append(rng.normal(1.0, 0.5, 1440))
    return {name: np.concatenate(parts)[:minutes] if parts else np.empty(0) for name, parts in blocks.items()}


def minute_path(symbol: str, asset_class: AssetClass, seed: int, until: pd.Timestamp) -> pd.DataFrame:
    """The one-minute sample bars of ``symbol`` from ``ANCHOR`` up to (not including) ``until``."""
    total = max(int((until - ANCHOR) / pd.Timedelta(minutes=1)), 0)
    symbol_seed = [seed, zlib.crc32(symbol.encode())]
    draws = _draws(symbol_seed, total)
    if asset_class is AssetClass.STOCK:
        calendar = exchange_calendar("XNYS")
        stamps = pd.DatetimeIndex(calendar.minutes_in_range(ANCHOR, until - pd.Timedelta(minutes=1))).as_unit("ms")
        chosen = ((stamps - ANCHOR) // pd.Timedelta(minutes=1)).to_numpy()
        draws = {name: values[chosen] for name, values in draws.items()}
        annual_vol = 0.25
    else:
        stamps = pd.date_range(ANCHOR, periods=total, freq="1min", unit="ms")
        annual_vol = 0.60
    n = len(stamps)
    if n == 0:
        return empty_bars()
    top = 2.7 if asset_class is AssetClass.STOCK else 4.6
    start_price = float(10 ** np.random.default_rng(symbol_seed).uniform(1.3, top))
    regime = _regimes(draws["regime"], 1.0 / MEAN_REGIME_MINUTES)
    phi = 0.5 ** (1.0 / VOL_HALF_LIFE_MINUTES)
    log_vol = _ar1(draws["vol"] * LOG_VOL_STD * np.sqrt(1 - phi**2), phi)
    sigma = annual_vol / np.sqrt(MINUTES_PER_YEAR) * np.exp(log_vol - LOG_VOL_STD**2 / 2)
    shocks = draws["shock"] / np.sqrt(STUDENT_DOF / (STUDENT_DOF - 2))
    returns = REGIME_DRIFTS[regime] + sigma * shocks
    if asset_class is AssetClass.STOCK:
        session_start = np.r_[True, np.diff(stamps.asi8) > 60_000]
        returns = returns + session_start * draws["gap"] * sigma * 8
    log_close = np.log(start_price) + np.cumsum(returns)
    close = np.exp(log_close)
    open_ = np.exp(np.r_[np.log(start_price), log_close[:-1]])
    wick = sigma * 0.5
    high = np.maximum(open_, close) * np.exp(draws["high"] * wick)
    low = np.minimum(open_, close) * np.exp(-draws["low"] * wick)
    volume = np.exp(draws["volume"]) * (1 + np.abs(returns) / sigma)
    return pd.DataFrame(
        {
            "timestamp": pd.Series(stamps.tz_convert("UTC")).astype(TIMESTAMP_DTYPE),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": np.round(volume, 6),
        }
    )


class SampleSource:
    """Synthetic bars for any valid symbol, stored under the venue ``sample``."""

    name = "sample"
    resumable = True

    def __init__(self, clock: Clock, seed: int) -> None:
        self.clock = clock
        self.seed = seed

    def instrument(self, symbol: str) -> Instrument:
        return Instrument.of(SAMPLE_VENUE, symbol)

    def fetch(self, instrument: Instrument, timeframe: Timeframe, since: pd.Timestamp | None,
              progress: ProgressCallback | None = None) -> pd.DataFrame:
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
