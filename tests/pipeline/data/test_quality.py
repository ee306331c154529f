"""The quality gate on real data: what it lets through, what it holds back, and the health figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data.quality import check_bars, series_health
from pipeline.domain import Instrument, Timeframe
from tests.conftest import NOW, shared_file

BTC = Instrument.of("binance", "BTC/USDT")
AAPL = Instrument.of("us", "AAPL")
M1, H1, D1 = Timeframe.parse("1m"), Timeframe.parse("1h"), Timeframe.parse("1d")
SPIKE_Z = 30.0


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[:20_000].reset_index(drop=True)


@pytest.mark.parametrize(
    ("name", "instrument", "timeframe"),
    [
        ("binance_BTC-USDT_1m.parquet", BTC, M1),
        ("binance_BTC-USDT_5m.parquet", BTC, Timeframe.parse("5m")),
        ("binance_ETH-USDT_1h.parquet", Instrument.of("binance", "ETH/USDT"), H1),
        ("binance_XRP-ETH_1m.parquet", Instrument.of("binance", "XRP/ETH"), M1),
        ("quandlwiki_AAPL_1d.parquet", AAPL, D1),
        ("index_GSPC_1d.parquet", Instrument.of("index", "GSPC"), D1),
    ],
)
def test_real_market_data_passes_the_gate_untouched(name: str, instrument: Instrument, timeframe: Timeframe) -> None:
    bars = pd.read_parquet(shared_file(name))
    checked = check_bars(bars, instrument, timeframe, NOW, SPIKE_Z)
    assert checked.quarantined.empty, checked.quarantined["reason"].value_counts().to_dict()
    assert len(checked.clean) == len(bars)


def _reason_of(frame: pd.DataFrame, row: int, instrument: Instrument = BTC, timeframe: Timeframe = M1) -> list[str]:
    checked = check_bars(frame, instrument, timeframe, NOW, SPIKE_Z)
    target = frame["timestamp"].iloc[row]
    return checked.quarantined.loc[checked.quarantined["timestamp"] == target, "reason"].tolist()


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("close", np.nan, "non-finite close"),
        ("high", np.inf, "non-finite high"),
        ("open", -5.0, "non-positive open"),
        ("low", 0.0, "non-positive low"),
        ("volume", -1.0, "negative volume"),
    ],
)
def test_bad_values_are_quarantined_with_their_reason(
    minutes: pd.DataFrame, column: str, value: float, reason: str
) -> None:
    frame = minutes.copy()
    frame.loc[500, column] = value
    assert _reason_of(frame, 500) == [reason]


def test_high_below_low_is_inconsistent(minutes: pd.DataFrame) -> None:
    frame = minutes.copy()
    frame.loc[700, "high"] = frame.loc[700, "low"] * 0.99
    assert _reason_of(frame, 700) == ["OHLC inconsistent"]


def test_planted_bad_prints_are_spikes_but_real_moves_are_not(minutes: pd.DataFrame) -> None:
    frame = minutes.copy()
    frame.loc[1200, ["open", "high", "low", "close"]] *= 10  # a whole bar misprinted
    frame.loc[3000, "close"] *= 0.7  # a close misprinted
    frame.loc[3000, "low"] = frame.loc[3000, "close"]
    checked = check_bars(frame, BTC, M1, NOW, SPIKE_Z)
    assert sorted(checked.quarantined["timestamp"]) == [frame["timestamp"].iloc[1200], frame["timestamp"].iloc[3000]]
    assert set(checked.quarantined["reason"]) == {"price spike"}


def test_duplicates_and_out_of_order_rows(minutes: pd.DataFrame) -> None:
    frame = minutes.iloc[:100].copy()
    identical = frame.iloc[[10]]
    conflicting = frame.iloc[[20]].assign(close=frame["close"].iloc[20] + 1, high=frame["high"].iloc[20] + 1)
    late = frame.iloc[[5]].assign(timestamp=frame["timestamp"].iloc[5] - pd.Timedelta(days=1))
    dirty = pd.concat([frame, identical, conflicting, late], ignore_index=True)
    checked = check_bars(dirty, BTC, M1, NOW, SPIKE_Z)
    reasons = checked.quarantined["reason"].value_counts().to_dict()
    assert reasons == {"duplicate timestamp": 1, "conflicting duplicate": 2, "out of order": 1}
    assert checked.duplicates == 3
    assert checked.out_of_order == 1
    assert len(checked.clean) == 99  # the conflicting timestamp is held back entirely


def test_open_bars_and_misaligned_stamps_are_held_back(minutes: pd.DataFrame) -> None:
    frame = minutes.iloc[:50].copy()
    frame.loc[10, "timestamp"] += pd.Timedelta(seconds=30)
    now = frame["timestamp"].iloc[40] + pd.Timedelta(seconds=30)  # bar 40 is still open, later ones future
    checked = check_bars(frame, BTC, M1, now, SPIKE_Z)
    reasons = checked.quarantined.set_index("timestamp")["reason"]
    assert reasons[frame["timestamp"].iloc[10]] == "not aligned to 1m grid"
    assert (reasons == "not closed yet").sum() == 10


def test_stock_bars_on_days_the_exchange_was_closed_are_quarantined() -> None:
    bars = pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet")).iloc[:30].copy()
    bars.loc[3, "timestamp"] = pd.Timestamp("2000-03-04", tz="UTC")  # a Saturday
    checked = check_bars(bars.sort_values("timestamp"), AAPL, D1, NOW, SPIKE_Z)
    assert checked.quarantined["reason"].tolist() == ["not a XNYS session"]


def test_health_counts_gaps_against_the_right_calendar() -> None:
    hourly = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"))
    health = series_health(hourly, BTC, H1, NOW, stale_after_bars=3)
    assert (health.rows, health.gaps, health.missing_bars) == (len(hourly), 28, 127)  # shared/data README
    assert health.stale

    daily = pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet"))
    assert series_health(daily, AAPL, D1, NOW, 3).gaps == 0  # every NYSE session is there
    holed = daily.drop(index=[100, 101, 500])
    stock_health = series_health(holed, AAPL, D1, NOW, 3)
    assert (stock_health.gaps, stock_health.missing_bars) == (2, 3)


def test_staleness_follows_the_calendar() -> None:
    daily = pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet"))
    last = daily["timestamp"].iloc[-1]  # Friday 2013-03-01
    monday_evening = pd.Timestamp("2013-03-04 22:00", tz="UTC")
    assert not series_health(daily, AAPL, D1, monday_evening, stale_after_bars=2).stale
    assert series_health(daily, AAPL, D1, last + pd.Timedelta(days=6), stale_after_bars=2).stale
    hourly = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"))
    end = hourly["timestamp"].iloc[-1] + H1.delta
    assert not series_health(hourly, BTC, H1, end + 2 * H1.delta, stale_after_bars=3).stale
    assert series_health(hourly, BTC, H1, end + 4 * H1.delta, stale_after_bars=3).stale
