"""Quarantined bad rows: exit 0, counted and stored with their reason, the lake byte-for-byte unchanged."""

# The inputs carry no good new rows, only stored rows or bad ones, so the lake must not change at all.

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.data.catalog import read_bars
from pipeline.domain import bars_equal
from tests.conftest import lake_fingerprint
from tests.tradeforge_cli import bad_input_helpers
from tests.tradeforge_cli.bad_input_helpers import (
    HOURLY_ROWS,
    SYMBOL,
    Stored,
    ingest_args,
    quarantine_counts,
    real_hourly,
    write_csv,
    write_parquet,
)
from tests.tradeforge_cli.cli_helpers import cli

stored = bad_input_helpers.stored  # a lake holding 240 real BTC/USDT 1h bars


# Each builder returns the bad frame (stored rows, some of them spoilt, and/or bad new rows) and the reasons the
# quarantine must hold for it.
Spoilt = Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, int]]]


def nan_prices(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[[10, 11, 12], "close"] = np.nan
    return bars, {"non-finite close": 3}


def nan_in_new_rows(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    new = bars.iloc[-3:].copy()
    new["timestamp"] = new["timestamp"] + 3 * pd.Timedelta(hours=1)
    new[["open", "high", "low", "close", "volume"]] = np.nan
    return pd.concat([bars, new], ignore_index=True), {"non-finite open": 3}


def negative_prices(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[5, "low"] = -1.0
    bars.loc[6, "open"] = -bars.loc[6, "open"]
    bars.loc[7, "close"] = 0.0
    return bars, {"non-positive low": 1, "non-positive open": 1, "non-positive close": 1}


def negative_volume(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[50, "volume"] = -bars.loc[50, "volume"]
    return bars, {"negative volume": 1}


def high_below_low(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[[20, 21], ["high", "low"]] = bars.loc[[20, 21], ["low", "high"]].to_numpy()
    return bars, {"OHLC inconsistent": 2}


def identical_duplicate(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    frame = pd.concat([bars.iloc[:31], bars.iloc[[30]], bars.iloc[31:]], ignore_index=True)
    return frame, {"duplicate timestamp": 1}


def conflicting_duplicate(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    other = bars.iloc[[30]].copy()
    other["close"] = (other["high"] + other["low"]) / 2 + 0.01
    assert (other["close"] != bars.loc[30, "close"]).all()
    frame = pd.concat([bars.iloc[:31], other, bars.iloc[31:]], ignore_index=True)
    return frame, {"conflicting duplicate": 2}


def out_of_order(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    order = list(range(len(bars)))
    order[40], order[41] = order[41], order[40]
    order[100], order[130] = order[130], order[100]
    # bar 40 comes after bar 41; bars 101..129 and bar 100 come after bar 130
    return bars.iloc[order].reset_index(drop=True), {"out of order": 1 + 29 + 1}


def not_closed_yet(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    now = pd.Timestamp.now(tz="UTC")
    future = bars.iloc[-2:].copy()
    future["timestamp"] = [now.floor("1h") + pd.Timedelta(hours=1), pd.Timestamp("2099-01-01", tz="UTC")]
    return pd.concat([bars, future], ignore_index=True), {"not closed yet": 2}


def off_grid(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    odd = bars.iloc[[-1]].copy()
    odd["timestamp"] = odd["timestamp"] + pd.Timedelta(minutes=30)
    return pd.concat([bars, odd], ignore_index=True), {"not aligned to 1h grid": 1}


QUARANTINED: list[object] = [
    pytest.param(nan_prices, "parquet", id="nan-close-parquet"),
    pytest.param(nan_prices, "csv", id="nan-close-csv"),
    pytest.param(nan_in_new_rows, "parquet", id="nan-new-rows"),
    pytest.param(negative_prices, "parquet", id="negative-and-zero-prices"),
    pytest.param(negative_volume, "csv", id="negative-volume"),
    pytest.param(high_below_low, "parquet", id="high-below-low"),
    pytest.param(identical_duplicate, "parquet", id="duplicate-identical"),
    pytest.param(conflicting_duplicate, "parquet", id="duplicate-conflicting"),
    pytest.param(out_of_order, "parquet", id="out-of-order"),
    pytest.param(not_closed_yet, "parquet", id="bar-not-closed-yet"),
    pytest.param(off_grid, "csv", id="timestamp-off-grid"),
]


@pytest.mark.parametrize(("spoil", "kind"), QUARANTINED)
def test_bad_rows_are_quarantined_with_their_reason_and_the_lake_is_unchanged(
    stored: Stored, spoil: Spoilt, kind: str
) -> None:
    frame, reasons = spoil(real_hourly())
    writer = write_csv if kind == "csv" else write_parquet
    path = writer(frame, stored.inputs / f"spoilt.{kind}")
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows_fetched"] == len(frame)
    assert report["rows_written"] == 0
    assert report["rows_quarantined"] == sum(reasons.values())
    assert report["quarantine_reasons"] == reasons
    assert quarantine_counts() == reasons
    assert lake_fingerprint(stored.lake) == before
    assert bars_equal(read_bars(stored.settings(), SYMBOL, "1h"), stored.bars)


def test_reimport_with_different_prices_is_quarantined_and_stored_bars_are_kept(stored: Stored) -> None:
    """Same timestamps as stored, other prices: every row conflicts, the stored values stay as they were."""
    changed = real_hourly()
    changed[["open", "high", "low", "close"]] = changed[["open", "high", "low", "close"]] * 1.01
    path = write_parquet(changed, stored.inputs / "restated.parquet")
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows_written"] == 0
    assert report["rows_quarantined"] == HOURLY_ROWS
    assert report["quarantine_reasons"] == {"conflicts with stored bar": HOURLY_ROWS}
    assert quarantine_counts() == {"conflicts with stored bar": HOURLY_ROWS}
    assert lake_fingerprint(stored.lake) == before
    kept = read_bars(stored.settings(), SYMBOL, "1h")
    assert bars_equal(kept, stored.bars)
    assert not np.array_equal(kept["close"].to_numpy(), changed["close"].to_numpy())


def test_reimport_of_the_same_bars_as_csv_writes_and_quarantines_nothing(stored: Stored) -> None:
    """The stored bars exported to CSV and imported again are recognised as identical (no conflicts)."""
    path = write_csv(stored.bars, stored.inputs / "same.csv")
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows_written"], report["rows_quarantined"]) == (0, 0), report["quarantine_reasons"]
    assert lake_fingerprint(stored.lake) == before
