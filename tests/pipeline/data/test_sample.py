"""The sample market: deterministic, consistent across timeframes, plausible, and labelled as sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.clock import FixedClock
from pipeline.data.quality import check_bars
from pipeline.data.resample import resample_bars
from pipeline.data.sources.sample import SAMPLE_VENUE, SampleSource
from pipeline.domain import Timeframe, bars_equal

NOW = pd.Timestamp("2024-06-01 10:17:31", tz="UTC")
M1, M5, H1, D1 = (Timeframe.parse(t) for t in ("1m", "5m", "1h", "1d"))


def test_same_seed_same_bars_and_other_seed_other_bars() -> None:
    clock = FixedClock(NOW)
    first = SampleSource(clock, seed=11)
    bars = first.fetch(first.instrument("BTC/USDT"), H1, None)
    again = SampleSource(clock, seed=11).fetch(first.instrument("BTC/USDT"), H1, None)
    other = SampleSource(clock, seed=12).fetch(first.instrument("BTC/USDT"), H1, None)
    assert bars_equal(bars, again)
    assert not np.allclose(bars["close"], other["close"])


def test_timeframes_are_resamples_of_one_minute_path() -> None:
    source = SampleSource(FixedClock(NOW), seed=5)
    instrument = source.instrument("SOL/USDT")
    minutes = source.fetch(instrument, M1, None)
    five = source.fetch(instrument, M5, None)
    assert bars_equal(five, resample_bars(minutes, M1, M5))


def test_sample_bars_pass_the_quality_gate_and_carry_the_sample_venue() -> None:
    clock = FixedClock(NOW)
    source = SampleSource(clock, seed=7)
    for symbol, timeframe in (("BTC/USDT", M1), ("AAPL", M5), ("MSFT", D1)):
        instrument = source.instrument(symbol)
        assert instrument.venue == SAMPLE_VENUE
        bars = source.fetch(instrument, timeframe, None)
        assert len(bars) > 100
        assert bars["timestamp"].iloc[-1] + timeframe.delta <= NOW  # closed bars only
        checked = check_bars(bars, instrument, timeframe, NOW, spike_z=30.0)
        assert checked.quarantined.empty


def test_stock_sample_bars_follow_nyse_sessions() -> None:
    source = SampleSource(FixedClock(NOW), seed=7)
    daily = source.fetch(source.instrument("AAPL"), D1, None)
    assert pd.Timestamp("2024-01-01", tz="UTC") not in set(daily["timestamp"])  # New Year's Day
    assert set(daily["timestamp"].dt.day_of_week) <= {0, 1, 2, 3, 4}
    assert len(daily) == 105  # NYSE sessions 2024-01-02 .. 2024-05-31


def test_returns_have_fat_tails_and_volatility_clustering() -> None:
    source = SampleSource(FixedClock(NOW), seed=7)
    minutes = source.fetch(source.instrument("BTC/USDT"), M1, None)
    returns = np.diff(np.log(minutes["close"].to_numpy()))
    excess_kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2 - 3
    assert excess_kurtosis > 1.0
    absolute = pd.Series(np.abs(returns))
    assert absolute.autocorr(lag=60) > 0.05
