"""A trader's own strategy with richer orders (``examples/strategies/pullback_entry.py``: a day limit entry on a
pullback, a stop-loss, a trailing stop and a higher-timeframe filter) passes the check, and a backtest and a
paper replay through the runtime fill it identically."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.backtest.run import open_backtests
from pipeline.strategies import REGISTRY
from pipeline.strategies.checks import check_strategy
from tests.conftest import REPO, shared_file
from tradeforge_cli.app import app

EXAMPLE = REPO / "examples" / "strategies" / "pullback_entry.py"
PARAMS = {"higher": "4h", "offset": 0.003, "stop_loss": 0.015, "trailing_stop": 0.03}


@pytest.fixture(scope="module")
def hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-6000:].reset_index(drop=True)


def test_the_example_passes_the_check_order_column_included(hours: pd.DataFrame) -> None:
    report = check_strategy(REGISTRY.build(f"{EXAMPLE}:PullbackEntry", PARAMS), hours)
    assert report.passed and report.decisions > 20, report.text()
    assert {f.column for f in report.findings} == {"exposure", "reason", "order"}


def test_a_backtest_and_a_paper_replay_fill_its_orders_identically(
        hours: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hours.parquet"
    hours.to_parquet(path)
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    params = [part for key, value in PARAMS.items() for part in ("--param", f"{key}={value}")]
    common = ["--strategy", f"{EXAMPLE}:PullbackEntry", "--data", str(path), *params, "--fee-bps", "10",
              "--max-position", "1.0", "--no-breakers", "--json"]
    runner = CliRunner()
    backtest = runner.invoke(app, ["backtest", *common])
    replay = runner.invoke(app, ["runtime", "--mode", "paper", "--feed", "replay", "--speed", "max", "--batch", "5",
                                 "--symbol", "BTC/USDT", "--timeframe", "1h", "--fresh", *common])
    assert backtest.exit_code == 0 and replay.exit_code == 0, (backtest.stderr, replay.stderr)
    ran, replayed = json.loads(backtest.stdout), json.loads(replay.stdout)
    assert ran["fills"] > 10
    assert (ran["strategy"], ran["strategy_ref"]) == ("pullback_entry", f"{EXAMPLE}:PullbackEntry")  # re-runnable
    assert (ran["fills"], ran["trades"], ran["final_equity"]) == (
        replayed["fills"], replayed["trades"], replayed["final_equity"])
    trades = open_backtests(tmp_path / "data" / "backtests").execute(
        "SELECT exit_reason FROM trades WHERE run_id = ?", [ran["run_id"]]).fetchdf()
    exits = set(trades["exit_reason"])
    assert {"stop_loss", "trailing_stop"} & exits, exits  # the protections did close positions
    fills = pd.read_parquet(next((tmp_path / "data" / "backtests").rglob("fills.parquet")))
    entries = fills[fills["side"] == "buy"]
    opens = hours.set_index("timestamp")["open"]
    assert (entries["price"] != opens.reindex(entries["timestamp"]).to_numpy()).any()  # limit fills inside bars
