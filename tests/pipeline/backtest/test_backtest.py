"""Backtests end to end: the CLI contract, stored runs queryable with DuckDB, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.backtest.run import open_backtests, run_backtest, save_backtest
from pipeline.data.resample import resample_bars
from pipeline.domain import Instrument, Timeframe
from pipeline.engine import EngineConfig
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file
from tests.pipeline.engine.test_engine import standard_workload_oracle
from tradeforge_cli.app import app

STANDARD_ARGS = ["--param", "fast=10", "--param", "slow=30", "--fee-bps", "10", "--slippage-bps", "0",
                 "--fill", "next_open", "--cash", "100000", "--max-position", "1.0", "--no-breakers"]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder))
    return folder


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


def test_standard_workload_through_the_cli_matches_the_specification(data_dir: Path, tmp_path: Path) -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[:100_000]
    path = tmp_path / "bars.parquet"
    bars.to_parquet(path)
    code, out, err = _invoke(["backtest", "--strategy", "sma_cross", "--data", str(path), *STANDARD_ARGS, "--json"])
    assert code == 0, err
    document = json.loads(out)
    for key in ("run_id", "bars", "trades", "final_equity", "total_return", "sharpe", "max_drawdown", "seconds",
                "warmup_seconds"):
        assert key in document
    fills, final_equity = standard_workload_oracle(bars)
    assert document["bars"] == len(bars)
    assert document["trades"] == len(fills) // 2
    assert document["final_equity"] == final_equity
    assert document["total_return"] == pytest.approx(final_equity / 100_000 - 1, rel=1e-12)
    assert 0 < document["seconds"] < 5
    stored = Path(document["stored"])
    assert stored.parent == data_dir / "backtests"
    assert json.loads((stored / "summary.json").read_text())["run_id"] == document["run_id"]


def test_backtest_reads_the_lake_and_resamples(data_dir: Path, tmp_path: Path) -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:5000]
    path = tmp_path / "hourly.parquet"
    bars.to_parquet(path)
    code, _, err = _invoke(["ingest", "--source", "files", "--path", str(path), "--symbol", "BTC/USDT",
                            "--timeframe", "1h", "--json"])
    assert code == 0, err
    code, out, err = _invoke(["backtest", "--strategy", "golden_cross", "--symbol", "BTC/USDT", "--timeframe", "4h",
                              "--start", "2018-01-01", "--end", "2018-06-01", "--json"])
    assert code == 0, err
    document = json.loads(out)
    assert document["first"] == "2018-01-01T00:00:00+00:00"
    four_hourly = resample_bars(bars, Timeframe.parse("1h"), Timeframe.parse("4h"))
    first, last = pd.Timestamp("2018-01-01", tz="UTC"), pd.Timestamp("2018-05-31 20:00", tz="UTC")
    in_range = four_hourly["timestamp"].between(first, last)
    assert document["bars"] == int(in_range.sum()) > 300  # complete 4h buckets only
    assert document["config"]["max_position"] == 0.25  # the risk default applies unless overridden


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "nosuch", "--data", "{bars}"], "strategy 'nosuch' is not known"),
        (["--strategy", "sma_cross", "--param", "fast=ten", "--data", "{bars}"], "fast"),
        (["--strategy", "sma_cross", "--param", "fast", "--data", "{bars}"], "--param 'fast'"),
        (["--strategy", "sma_cross", "--param", "slow=5", "--data", "{bars}"], "slow"),
        (["--strategy", "sma_cross", "--fill", "midday", "--data", "{bars}"], "--fill"),
        (["--strategy", "sma_cross", "--fee-bps", "-1", "--data", "{bars}"], "--fee-bps"),
        (["--strategy", "sma_cross", "--max-position", "0", "--data", "{bars}"], "--max-position"),
        (["--strategy", "sma_cross", "--data", "{missing}"], "does not exist"),
        (["--strategy", "sma_cross"], "give --data"),
        (["--strategy", "sma_cross", "--symbol", "SOL/USDT", "--timeframe", "1h"], "not in the lake"),
        (["--strategy", "sma_cross", "--data", "{bars}", "--start", "2030-01-01"], "empty"),
        (["--strategy", "sma_cross", "--data", "{bars}", "--start", "soon"], "--start"),
    ],
)
def test_bad_backtest_input_is_refused_clearly(data_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    bars = tmp_path / "bars.parquet"
    pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:500].to_parquet(bars)
    filled = [a.format(bars=bars, missing=tmp_path / "nope.parquet") for a in args]
    code, out, err = _invoke(["backtest", *filled, "--json"])
    assert code != 0
    assert set(json.loads(out)) == {"error"}  # --json: the error document only
    assert message in err
    assert not (data_dir / "backtests").exists()


def test_stored_runs_are_queryable_with_duckdb(tmp_path: Path) -> None:
    bars = pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet"))
    root = tmp_path / "backtests"
    runs = []
    for name in ("golden_cross", "buy_and_hold"):
        result = run_backtest(bars, REGISTRY.build(name), EngineConfig(max_position=1.0), Timeframe.parse("1d"),
                              Instrument.of("us", "AAPL"))
        save_backtest(result, root)
        runs.append(result)
    con = open_backtests(root)
    rows = con.execute("select strategy, trades, final_equity from runs order by strategy").fetchall()
    assert [r[0] for r in rows] == ["buy_and_hold", "golden_cross"]
    by_name = {r.strategy: r for r in runs}
    assert rows[1][1] == len(by_name["golden_cross"].engine.trades)
    assert rows[0][2] == pytest.approx(by_name["buy_and_hold"].engine.equity["equity"].iloc[-1])
    counts = dict(con.execute("select run_id, count(*) from equity group by 1").fetchall())
    assert counts == {r.run_id: len(bars) for r in runs}
    hold = by_name["buy_and_hold"]
    assert hold.metrics["buy_and_hold_return"] == pytest.approx(bars["close"].iloc[-1] / bars["close"].iloc[0] - 1)
    assert hold.metrics["exposure"] > 0.99


def test_stock_orders_outside_the_session_wait_for_the_open() -> None:
    # 5-minute bars of 2024-03-05 from 13:00 UTC (pre-market, NYSE opens 14:30 UTC) to 15:00 UTC.
    stamps = pd.date_range("2024-03-05 13:00", "2024-03-05 15:00", freq="5min", tz="UTC", inclusive="left")
    prices = np.linspace(100, 101, len(stamps))
    bars = pd.DataFrame({"timestamp": pd.Series(stamps.as_unit("ms")), "open": prices, "high": prices + 0.1,
                         "low": prices - 0.1, "close": prices, "volume": 1.0})
    result = run_backtest(bars, REGISTRY.build("buy_and_hold"), EngineConfig(fee_bps=0),
                          Timeframe.parse("5m"), Instrument.of("alpaca", "AAPL"))
    fill_time = result.engine.fills["timestamp"].iloc[0]
    assert fill_time == pd.Timestamp("2024-03-05 14:30", tz="UTC")  # decided at 13:00, filled at the open
    crypto = run_backtest(bars, REGISTRY.build("buy_and_hold"), EngineConfig(fee_bps=0), Timeframe.parse("5m"))
    assert crypto.engine.fills["timestamp"].iloc[0] == pd.Timestamp("2024-03-05 13:05", tz="UTC")
