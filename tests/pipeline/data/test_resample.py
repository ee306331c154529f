"""Resampling aggregates OHLCV correctly and agrees with the venue's own higher-timeframe bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.catalog import read_bars
from pipeline.data.ingest import ingest
from pipeline.data.resample import resample_bars
from pipeline.data.sources.files import FileSource
from pipeline.domain import AssetClass, DataError, Timeframe
from pipeline.settings import Settings
from tests.conftest import shared_file

M1, M5, H1, D1 = (Timeframe.parse(t) for t in ("1m", "5m", "1h", "1d"))


def _agreement(mine: pd.DataFrame, venue: pd.DataFrame) -> tuple[int, float]:
    joined = mine.merge(venue, on="timestamp", suffixes=("_mine", "_venue"))
    same = np.ones(len(joined), dtype=bool)
    for name in ("open", "high", "low", "close"):
        same &= joined[f"{name}_mine"].to_numpy() == joined[f"{name}_venue"].to_numpy()
    same &= np.isclose(joined["volume_mine"], joined["volume_venue"], rtol=1e-9, atol=1e-8)
    return len(joined), float(same.mean())


def test_real_1m_resampled_to_5m_agrees_with_the_real_5m_file() -> None:
    one_minute = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"))
    five_minute = pd.read_parquet(shared_file("binance_BTC-USDT_5m.parquet"))
    resampled = resample_bars(one_minute, M1, M5)
    overlapping, agreement = _agreement(resampled, five_minute)
    assert overlapping > 100_000
    assert agreement >= 0.999


def test_real_1h_resampled_to_1d_agrees_with_the_real_daily_file() -> None:
    hourly = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"))
    daily = pd.read_parquet(shared_file("binance_BTC-USDT_1d.parquet"))
    overlapping, agreement = _agreement(resample_bars(hourly, H1, D1), daily)
    assert overlapping > 3000
    assert agreement >= 0.999


def test_aggregation_rules_on_a_small_frame() -> None:
    stamps = pd.date_range("2024-01-01 00:00", periods=10, freq="1min", tz="UTC").as_unit("ms")
    bars = pd.DataFrame(
        {
            "timestamp": stamps,
            "open": np.arange(10, 20, dtype=float),
            "high": np.arange(10, 20, dtype=float) + 5,
            "low": np.arange(10, 20, dtype=float) - 5,
            "close": np.arange(10, 20, dtype=float) + 1,
            "volume": np.ones(10),
        }
    )
    bars.loc[2, "high"] = 100.0
    bars.loc[7, "low"] = 1.0
    out = resample_bars(bars, M1, M5)
    assert out["timestamp"].tolist() == [stamps[0], stamps[5]]
    assert out["open"].tolist() == [10.0, 15.0]
    assert out["high"].tolist() == [100.0, 24.0]
    assert out["low"].tolist() == [5.0, 1.0]
    assert out["close"].tolist() == [15.0, 20.0]
    assert out["volume"].tolist() == [5.0, 5.0]


def test_incomplete_buckets_are_dropped_unless_asked_for() -> None:
    stamps = pd.date_range("2024-01-01 00:00", periods=9, freq="1min", tz="UTC").as_unit("ms")
    bars = pd.DataFrame({"timestamp": stamps, **{c: np.full(9, 10.0) for c in ("open", "high", "low", "close")}})
    bars["volume"] = 1.0
    assert len(resample_bars(bars, M1, M5)) == 1
    partial = resample_bars(bars, M1, M5, complete_only=False)
    assert partial["volume"].tolist() == [5.0, 4.0]


def test_stock_minutes_resample_to_the_new_york_session_date() -> None:
    # 14:30 UTC .. 20:59 UTC on 2024-03-05 is the NYSE session of that date.
    stamps = pd.date_range("2024-03-05 14:30", "2024-03-05 20:59", freq="1min", tz="UTC").as_unit("ms")
    bars = pd.DataFrame({"timestamp": stamps, **{c: np.linspace(1, 2, len(stamps)) for c in ("open", "close")}})
    bars["high"] = bars["close"] + 0.1
    bars["low"] = bars["open"] - 0.1
    bars["volume"] = 2.0
    out = resample_bars(bars, M1, D1, asset_class=AssetClass.STOCK)
    assert out["timestamp"].tolist() == [pd.Timestamp("2024-03-05", tz="UTC")]
    assert out["volume"].iloc[0] == 2.0 * len(stamps)


def test_resampling_refuses_a_timeframe_that_is_not_a_multiple() -> None:
    with pytest.raises(DataError, match="not a multiple"):
        resample_bars(pd.DataFrame(), M5, Timeframe.parse("3m"))


def test_read_bars_resamples_from_the_finest_stored_timeframe(settings: Settings, clock: FixedClock) -> None:
    one_minute = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[:20_000]
    path = settings.data_dir.parent / "slice.parquet"
    one_minute.to_parquet(path)
    ingest(FileSource(path, clock, "binance"), "BTC/USDT", M1, settings, clock)
    start, end = one_minute["timestamp"].iloc[1000], one_minute["timestamp"].iloc[5000]
    hourly = read_bars(settings, "BTC/USDT", "1h", start, end)
    expected = resample_bars(one_minute, M1, H1)
    expected = expected.loc[(expected["timestamp"] >= start) & (expected["timestamp"] + H1.delta <= end)]
    assert len(hourly) == len(expected) > 0
    assert np.array_equal(hourly[["open", "high", "low", "close"]].to_numpy(),
                          expected[["open", "high", "low", "close"]].to_numpy())
