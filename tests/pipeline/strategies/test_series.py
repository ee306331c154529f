"""A higher timeframe of a strategy's own bars: the resampled bars, each visible from the row that completes it,
the same fed in chunks or restored, and a strategy reading one trades alike in a backtest and a paper replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.data.resample import resample_bars
from pipeline.domain import Timeframe, epoch_ms
from pipeline.strategies import REGISTRY
from pipeline.strategies.checks import check_strategy
from pipeline.strategies.series import COLUMNS, HigherTimeframe
from tests.conftest import REPO, shared_file
from tradeforge_cli.app import app

EXAMPLE = REPO / "examples" / "strategies" / "daily_filtered.py"


def expected(bars: pd.DataFrame, base: str, higher: str) -> pd.DataFrame:
    """Written from the rule: the resampled bars, each one taken by the rows whose close is at or after its end;
    the bucket the rows start inside is never taken."""
    source, target = Timeframe.parse(base), Timeframe.parse(higher)
    buckets = resample_bars(bars, source, target, complete_only=False)
    starts = epoch_ms(buckets["timestamp"])
    first = int(epoch_ms(bars["timestamp"])[0])
    if starts[0] < first:
        buckets, starts = buckets.iloc[1:].reset_index(drop=True), starts[1:]
    closes = epoch_ms(bars["timestamp"]) + source.millis
    index = np.searchsorted(starts + target.millis, closes, side="right") - 1
    taken = buckets.reindex(np.where(index >= 0, index, -1)).reset_index(drop=True)
    return taken


@pytest.mark.parametrize(("name", "rows", "base", "higher"), [
    ("binance_BTC-USDT_1m.parquet", slice(100_017, 160_000), "1m", "1h"),
    ("binance_BTC-USDT_1m.parquet", slice(5_003, 30_000), "1m", "15m"),
    ("binance_BTC-USDT_1h.parquet", slice(-6_000, None), "1h", "1d"),
])
def test_each_row_sees_the_last_bucket_closed_by_its_close(name: str, rows: slice, base: str, higher: str) -> None:
    bars = pd.read_parquet(shared_file(name)).iloc[rows].reset_index(drop=True)
    got = HigherTimeframe(higher).update(bars)
    want = expected(bars, base, higher)
    assert got["timestamp"].isna().sum() > 0 and got["timestamp"].notna().sum() > len(bars) // 2
    assert got["timestamp"].equals(want["timestamp"].astype(got["timestamp"].dtype))
    for column in ("open", "high", "low", "close"):
        assert np.array_equal(got[column].to_numpy(), want[column].to_numpy(), equal_nan=True), column
    assert np.allclose(got["volume"], want["volume"], rtol=1e-12, equal_nan=True)


def test_a_missing_last_row_completes_the_bucket_at_the_next_one() -> None:
    stamps = pd.date_range("2026-01-05", periods=8, freq="15min", tz="UTC")
    bars = pd.DataFrame({"timestamp": stamps.delete(3), "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
                         "volume": 1.0})  # 00:45, the first hour's last quarter, is missing
    got = HigherTimeframe("1h").update(bars)
    assert got["timestamp"].isna().tolist() == [True, True, True, False, False, False, False]
    assert (got["timestamp"].iloc[3:6] == stamps[0]).all()  # seen from 01:00, the first row of the next hour
    assert got["volume"].iloc[3] == 3.0
    assert got["timestamp"].iloc[6] == stamps[4]  # 01:45 completes the second hour, at its close


def test_fed_in_chunks_and_restored_it_reports_the_same() -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[200_011:230_000].reset_index(drop=True)
    whole = HigherTimeframe("1h").update(bars)
    stream, parts, start, n = HigherTimeframe("1h"), [], 0, 0
    while start < len(bars):
        size = (1, 59, 2, 600, 7)[n % 5]
        parts.append(stream.update(bars.iloc[start:start + size]))
        start, n = start + size, n + 1
        if n % 4 == 0:
            saved = json.loads(json.dumps(stream.state()))
            stream = HigherTimeframe("1h")
            stream.restore(saved)
    fed = pd.concat(parts)
    for column in ("timestamp", *COLUMNS):
        assert fed[column].equals(whole[column]), column


def test_a_strategy_reading_a_higher_timeframe_passes_the_check_and_trades_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = f"{EXAMPLE}:DailyFiltered"
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-4000:].reset_index(drop=True)
    report = check_strategy(REGISTRY.build(reference, {"higher": "4h"}), hours)
    assert report.passed and report.decisions > 20, report.text()
    path = tmp_path / "hours.parquet"
    hours.to_parquet(path)
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    common = ["--strategy", reference, "--data", str(path), "--param", "higher=4h", "--fee-bps", "10",
              "--max-position", "1.0", "--no-breakers", "--json"]
    runner = CliRunner()
    backtest = runner.invoke(app, ["backtest", *common])
    replay = runner.invoke(app, ["runtime", "--mode", "paper", "--feed", "replay", "--speed", "max", "--batch", "7",
                                 "--symbol", "BTC/USDT", "--timeframe", "1h", "--fresh", *common])
    assert backtest.exit_code == 0 and replay.exit_code == 0, (backtest.stderr, replay.stderr)
    ran, replayed = json.loads(backtest.stdout), json.loads(replay.stdout)
    assert ran["fills"] > 10
    assert (ran["fills"], ran["trades"], ran["final_equity"]) == (
        replayed["fills"], replayed["trades"], replayed["final_equity"])
