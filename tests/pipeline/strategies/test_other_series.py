"""Another symbol as a series: each row sees the other series' last bar closed by its own close (equal closes
visible), the same over a whole history as fed row by row, restored mid-way or a few rows at a time; a strategy
reading one passes its check, and a frame without its columns is refused naming the series."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.backtest.run import run_backtest
from pipeline.domain import DataError, Timeframe
from pipeline.engine import EngineConfig
from pipeline.strategies import REGISTRY
from pipeline.strategies.checks import check_strategy
from pipeline.strategies.other_series import (
    COLUMNS,
    OtherSeries,
    SeriesCursor,
    align,
    check_series,
    empty_columns,
    series_of,
    with_series,
)
from tests.conftest import REPO, shared_file

M5, H1, D1 = Timeframe.parse("5m"), Timeframe.parse("1h"), Timeframe.parse("1d")
EXAMPLE = f"{REPO / 'examples' / 'strategies' / 'regime_filtered.py'}:RegimeFiltered"
BTC = OtherSeries(symbol="btc/usdt", timeframe="60m", prefix="btc_")


@pytest.fixture(scope="module")
def eth_btc() -> pd.DataFrame:
    """20 days of real ETH/BTC 5m bars (January 2018)."""
    return pd.read_parquet(shared_file("binance_ETH-BTC_5m.parquet"))


@pytest.fixture(scope="module")
def btc_hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"))


def _at(frame: pd.DataFrame, when: str) -> pd.Series:
    found = frame.loc[frame["timestamp"] == pd.Timestamp(when, tz="UTC")]
    assert len(found) == 1, when
    return found.iloc[0]


def test_the_declaration_is_canonical_and_bad_ones_are_refused() -> None:
    assert (BTC.symbol, BTC.timeframe, BTC.venue) == ("BTC/USDT", "1h", None)
    assert BTC.columns == ("btc_timestamp", "btc_open", "btc_high", "btc_low", "btc_close", "btc_volume")
    assert BTC.text("binance") == "BTC/USDT 1h on venue 'binance'"
    for bad in ({"prefix": "BTC-"}, {"timeframe": "7m"}, {"symbol": "not a symbol"}, {"venue": " "}):
        with pytest.raises((ValidationError, DataError)):
            OtherSeries.model_validate({"symbol": "BTC/USDT", "timeframe": "1h", "prefix": "btc_", **bad})

    class Twice:
        name = "twice"
        series = (BTC, OtherSeries(symbol="ETH/USDT", timeframe="1h", prefix="btc_"))

    with pytest.raises(DataError, match="share a column prefix"):
        series_of(Twice())
    assert series_of(object()) == ()


def test_a_row_sees_the_other_bar_only_once_it_has_closed(eth_btc: pd.DataFrame, btc_hours: pd.DataFrame) -> None:
    day = eth_btc.loc[(eth_btc["timestamp"] >= "2018-01-15 09:50") & (eth_btc["timestamp"] < "2018-01-15 11:10")]
    got = align(day, M5, btc_hours, H1).set_axis(day["timestamp"].dt.strftime("%H:%M"))
    nine, ten = _at(btc_hours, "2018-01-15 09:00"), _at(btc_hours, "2018-01-15 10:00")
    # the 5m row of 10:50 closes at 10:55: the hour of 10:00 is still open, the last closed is 09:00
    assert got.loc["10:50", "timestamp"] == nine["timestamp"] and got.loc["10:50", "close"] == nine["close"]
    # the row of 10:55 closes at 11:00, with the hour of 10:00: equal closes are visible
    assert got.loc["10:55", "timestamp"] == ten["timestamp"]
    assert [got.loc["10:55", c] for c in COLUMNS] == [ten[c] for c in COLUMNS]
    assert (got.loc["09:55":"10:50", "timestamp"] == nine["timestamp"]).all()
    assert (got.loc["10:55":"11:05", "timestamp"] == ten["timestamp"]).all()
    # before the first closed bar of the other series: nothing
    later = btc_hours.loc[btc_hours["timestamp"] >= "2018-01-15 10:00"]
    early = align(day, M5, later, H1)
    assert early["timestamp"].isna().sum() == int((day["timestamp"] < "2018-01-15 10:55").sum())
    assert early["close"].isna().sum() == early["timestamp"].isna().sum()


def test_a_finer_other_series_is_seen_up_to_the_rows_close(btc_hours: pd.DataFrame) -> None:
    start, end = pd.Timestamp("2025-06-01", tz="UTC"), pd.Timestamp("2025-06-03", tz="UTC")
    eth_hours = pd.read_parquet(shared_file("binance_ETH-USDT_1h.parquet"),
                                filters=[("timestamp", ">=", start), ("timestamp", "<", end)])
    btc_five = pd.read_parquet(shared_file("binance_BTC-USDT_5m.parquet"),
                               filters=[("timestamp", ">=", start), ("timestamp", "<", end)])
    got = align(eth_hours, H1, btc_five, M5).set_axis(eth_hours["timestamp"])
    row = got.loc[pd.Timestamp("2025-06-02 10:00", tz="UTC")]  # the hour closing at 11:00
    last_five = _at(btc_five, "2025-06-02 10:55")  # closes at 11:00 too: seen
    assert row["timestamp"] == last_five["timestamp"] and row["close"] == last_five["close"]
    assert got["timestamp"].notna().all()


@pytest.mark.parametrize(("rows_name", "rows_tf", "other_name", "other_tf"), [
    ("binance_ETH-BTC_5m.parquet", M5, "binance_BTC-USDT_1h.parquet", H1),
    ("binance_ETH-USDT_1h.parquet", H1, "binance_BTC-USDT_1d.parquet", D1),
    ("binance_ETH-USDT_1h.parquet", H1, "binance_BTC-USDT-PERP_1h.parquet", H1),
])
def test_whole_history_row_by_row_and_in_chunks_agree(rows_name: str, rows_tf: Timeframe, other_name: str,
                                                      other_tf: Timeframe) -> None:
    rows = pd.read_parquet(shared_file(rows_name)).iloc[-4000:].reset_index(drop=True)
    other = pd.read_parquet(shared_file(other_name))  # real gaps included (exchange downtime)
    spec = OtherSeries(symbol="BTC/USDT", timeframe=str(other_tf), prefix="o_")
    whole = with_series(rows, rows_tf, {spec: other})
    assert whole["o_timestamp"].notna().sum() > 3000
    one_by_one = pd.concat([with_series(rows.iloc[i:i + 1], rows_tf, {spec: other}) for i in range(0, 4000, 13)])
    assert one_by_one[list(spec.columns)].equals(whole.iloc[::13][list(spec.columns)])
    # the runtime's form: a few rows at a time, each with only the bars closed since, saved and restored
    cursor, parts, start, n = SeriesCursor(spec, rows_tf), [], 0, 0
    stamps = other["timestamp"]
    while start < len(rows):
        chunk = rows.iloc[start:start + (1, 7, 2, 61, 3)[n % 5]]
        after, through = cursor.wanted(int(chunk["timestamp"].iloc[-1].value // 1_000_000) + rows_tf.millis)
        lo = 0 if after is None else int(stamps.searchsorted(pd.Timestamp(after, unit="ms", tz="UTC"), "right"))
        hi = int(stamps.searchsorted(pd.Timestamp(through, unit="ms", tz="UTC"), "right"))
        parts.append(cursor.update(chunk, other.iloc[lo:max(lo, hi) + 5]))  # more than it needs: ignored
        start, n = start + len(chunk), n + 1
        if n % 4 == 0:
            saved = json.loads(json.dumps(cursor.state()))
            cursor = SeriesCursor(spec, rows_tf)
            cursor.restore(saved)
    fed = pd.concat(parts)
    for column in spec.columns:
        assert fed[column].equals(whole[column]), column


def test_a_frame_without_the_columns_is_refused_naming_the_series(eth_btc: pd.DataFrame) -> None:
    strategy = REGISTRY.build(EXAMPLE, {"regime_symbol": "BTC/USDT", "regime_timeframe": "1h"})
    with pytest.raises(DataError, match=r"reads BTC/USDT 1h as columns regime_timestamp.*lacks regime_timestamp"):
        check_series(strategy, eth_btc)
    with pytest.raises(DataError, match="regime_close"):
        run_backtest(eth_btc, strategy, EngineConfig(), M5)
    partial = empty_columns(strategy, eth_btc).drop(columns=["regime_volume"])
    with pytest.raises(DataError, match=r"lacks regime_volume$|lacks regime_volume:"):
        check_series(strategy, partial)
    assert strategy.targets(empty_columns(strategy, eth_btc.iloc[:0])).reasons[0].startswith("up-cross 12/48")


def test_the_example_passes_its_check_on_real_and_on_sample_series(eth_btc: pd.DataFrame,
                                                                   btc_hours: pd.DataFrame) -> None:
    strategy = REGISTRY.build(EXAMPLE, {"regime_window": "12"})
    spec = series_of(strategy)[0]
    report = check_strategy(strategy, eth_btc.iloc[:3000], 1000, {spec: btc_hours})
    assert report.passed and report.decisions > 20, report.text()
    frame = with_series(eth_btc, M5, {spec: btc_hours})
    targets = strategy.targets(frame)
    entries = np.flatnonzero(targets.exposure == 1.0)
    assert len(entries) > 5
    # every entry happened while the regime's visible hour closed above the mean of its last 12 hours
    hours = btc_hours.set_index("timestamp")["close"]
    means = hours.rolling(12).mean()
    for row in entries:
        seen = frame["regime_timestamp"].iloc[row]
        assert hours[seen] > means[seen]
    vetted = check_strategy(strategy, _sample(), 1000)  # the runtime's check: the sample market's series
    assert vetted.passed, vetted.text()


def _sample() -> pd.DataFrame:
    from pipeline.strategies.checks import sample_bars

    return sample_bars(3000, timeframe="5m")
