"""Breaker trips, releases and paused bars of backtests on real data: summary, reports, dashboard and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import reports
from pipeline.backtest.nightly import run_line
from pipeline.backtest.run import run_backtest, save_backtest
from pipeline.domain import Timeframe
from pipeline.engine import EngineConfig
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def month_of_minutes() -> pd.DataFrame:
    """30 days of real BTC/USDT 1m bars."""
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"))
    return bars.iloc[300_000:343_200].reset_index(drop=True)


def test_the_backtest_summary_and_reports_show_trips_releases_and_paused_bars(tmp_path: Path,
                                                                             month_of_minutes: pd.DataFrame) -> None:
    bars = month_of_minutes
    strategy = REGISTRY.build("sma_cross")
    latched = run_backtest(bars, strategy, EngineConfig(), Timeframe.parse("1m"))
    summary = latched.summary()
    # a loss streak early in the month pauses the rest of it, and the summary says so
    assert summary["breaker_trips"] >= 1 and summary["breaker_releases"] == 0
    assert "consecutive_losses" in summary["breaker_rules"].split(",")
    assert summary["paused_bars"] == latched.engine.paused_bars > 0.9 * len(bars)
    first_trip = latched.engine.breaker_events["timestamp"].iloc[0]
    assert summary["paused_bars"] == int((latched.engine.equity["timestamp"] >= first_trip).sum())

    modelled = run_backtest(bars, strategy, EngineConfig(breaker_cooldown_bars=240), Timeframe.parse("1m"))
    cooled = modelled.summary()
    assert cooled["breaker_releases"] >= 1 and cooled["breaker_trips"] >= cooled["breaker_releases"]
    assert cooled["paused_bars"] < summary["paused_bars"]
    assert cooled["trades"] > summary["trades"]
    releases = modelled.engine.breaker_events.query("action == 'release'")
    assert set(releases["released_by"]) <= {"cooldown", "new_day"}
    assert (releases.query("released_by == 'cooldown'")["bars_tripped"] == 240).all()

    root = tmp_path / "backtests"
    save_backtest(latched, root)
    save_backtest(modelled, root)
    listed = reports.runs(root).set_index("run_id")
    assert listed.loc[latched.run_id, "paused_bars"] == summary["paused_bars"]
    assert listed.loc[modelled.run_id, "breaker_releases"] == cooled["breaker_releases"]
    stored = reports.breaker_events(root, [latched.run_id, modelled.run_id])
    assert len(stored) == len(latched.engine.breaker_events) + len(modelled.engine.breaker_events)
    assert set(stored["action"]) == {"trip", "release"}
    line = run_line("sma_cross BTC/USDT 1m", summary)
    assert f"{summary['breaker_trips']} trips, 0 releases" in line
    assert f"{summary['paused_bars']} of {len(bars)} bars paused" in line


def test_the_backtests_page_shows_breaker_counts_and_events(tmp_path: Path, month_of_minutes: pd.DataFrame,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    root = tmp_path / "data" / "backtests"
    strategy = REGISTRY.build("sma_cross")
    latched = run_backtest(month_of_minutes, strategy, EngineConfig(), Timeframe.parse("1m"))
    cooled = run_backtest(month_of_minutes, strategy, EngineConfig(breaker_cooldown_bars=240), Timeframe.parse("1m"))
    save_backtest(latched, root)
    save_backtest(cooled, root)
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    app = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=90)
    app.run()
    app.switch_page("views/backtests.py").run()
    assert not app.exception, [e.value for e in app.exception]
    listed = app.dataframe[0].value.set_index("run_id")
    assert listed.loc[latched.run_id, "paused_bars"] == latched.engine.paused_bars
    assert listed.loc[cooled.run_id, "breaker_releases"] == cooled.summary()["breaker_releases"] > 0
    events = app.dataframe[1].value  # the events of the runs compared (both, by default)
    expected = len(latched.engine.breaker_events) + len(cooled.engine.breaker_events)
    assert len(events) == expected and set(events["action"]) == {"trip", "release"}
    trips = int((events["action"] == "trip").sum())
    assert any(f"{trips} trips, {expected - trips} releases" in c.value for c in app.caption)


def test_the_cooldown_is_an_option_of_the_cli_and_the_adhoc_request(tmp_path: Path, month_of_minutes: pd.DataFrame,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pipeline.backtest.adhoc import AdhocRequest
    from pipeline.domain import DataError
    from tradeforge_cli.app import app

    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "bars.parquet"
    month_of_minutes.to_parquet(path)
    documents = {}
    for extra in ([], ["--breaker-cooldown-bars", "240"]):
        result = CliRunner().invoke(app, ["backtest", "--strategy", "sma_cross", "--data", str(path), "--json",
                                          "--no-save", *extra])
        assert result.exit_code == 0, result.stderr
        documents[len(extra)] = json.loads(result.stdout)
    assert documents[0]["config"]["breaker_cooldown_bars"] is None and documents[0]["breaker_releases"] == 0
    assert documents[2]["config"]["breaker_cooldown_bars"] == 240 and documents[2]["breaker_releases"] > 0
    assert documents[2]["paused_bars"] < documents[0]["paused_bars"]
    refused = CliRunner().invoke(app, ["backtest", "--strategy", "sma_cross", "--data", str(path),
                                       "--breaker-cooldown-bars", "0"])
    assert refused.exit_code != 0

    request = AdhocRequest(strategy="sma_cross", symbol="BTC/USDT", timeframe="1m", breaker_cooldown_bars=240.0)
    assert request.breaker_cooldown_bars == 240 and request.parameters()["breaker_cooldown_bars"] == 240
    assert "breaker_cooldown_bars" not in AdhocRequest(strategy="sma_cross", symbol="BTC/USDT",
                                                       timeframe="1m").parameters()
    for bad in (0, -5, 2.5, True):
        with pytest.raises(DataError, match="breaker_cooldown_bars"):
            AdhocRequest(strategy="sma_cross", symbol="BTC/USDT", timeframe="1m", breaker_cooldown_bars=bad)


def test_runs_stored_before_releases_existed_still_list(tmp_path: Path, month_of_minutes: pd.DataFrame) -> None:
    result = run_backtest(month_of_minutes.iloc[:5000], REGISTRY.build("sma_cross"), EngineConfig(),
                          Timeframe.parse("1m"))
    folder = save_backtest(result, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("breaker_trips", "breaker_releases", "paused_bars", "breaker_rules"):
        del summary[key]
    (folder / "summary.json").write_text(json.dumps(summary))
    events = pd.read_parquet(folder / "breaker_events.parquet")
    assert len(events) > 0
    events[["timestamp", "rule", "value", "threshold"]].to_parquet(folder / "breaker_events.parquet")
    listed = reports.runs(tmp_path)
    assert listed["breaker_trips"].iloc[0] == len(events)
    assert pd.isna(listed["paused_bars"].iloc[0])
    old = reports.breaker_events(tmp_path, [result.run_id])
    assert (old["action"] == "trip").all() and len(old) == len(events)
