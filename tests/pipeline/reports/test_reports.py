"""The report queries behind the dashboard, on a state built by really running the paper runtime, real
backtests, a real MLflow registry and a real Prefect server."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from pipeline import reports
from pipeline.backtest.adhoc import AdhocRequest
from pipeline.domain import AssetClass, DataError, Timeframe
from pipeline.features.build import FeatureSpec, build_features
from pipeline.models.registry import ModelRegistry
from pipeline.retry import RetryPolicy
from pipeline.services import prefect_api
from pipeline.state import PORTFOLIO, StateStore
from tests.fakes.populated_state import MODEL, Populated, build
from tests.waiting import wait_until

M1 = Timeframe.parse("1m")
M5 = Timeframe.parse("5m")


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return build(tmp_path_factory.mktemp("installation"))


@pytest.fixture
def store(populated: Populated) -> Iterator[StateStore]:
    opened = StateStore.read_only(populated.settings.state_url)
    yield opened
    opened.close()


# ------------------------------------------------------------------------------------------------ overview


def test_overview_equity_is_the_ledgers_and_the_days_pnl_adds_up(store: StateStore) -> None:
    now = datetime.now(UTC)
    view = reports.overview(store, now)
    ledgers = store.ledgers()
    assert view.mode == "paper"
    assert view.status == "stopped"
    assert view.equity == ledgers[PORTFOLIO].equity
    marks = store.equity(PORTFOLIO)
    assert view.equity == marks[-1].equity
    sleeves = {s.sleeve: s for s in view.sleeves}
    assert set(sleeves) == {"trend:BTC/USDT", "reversion:BTC/USDT", "ml:BTC/USDT"}
    assert float(sum(s.equity for s in view.sleeves)) == pytest.approx(float(view.equity), rel=1e-12)
    for name, sleeve in sleeves.items():
        assert sleeve.equity == ledgers[name].equity
        assert ",".join(sleeve.tripped) == ledgers[name].tripped
    assert sleeves["trend:BTC/USDT"].tripped == ("consecutive_losses",)  # 6 losses in a row latch it
    # the day is the one of the last processed bar; its realized PnL is the sum of the trades closed that day
    assert view.day == marks[-1].at.date()
    closed_that_day = [t for t in store.trades() if t.exit_time.date() == view.day]
    assert len(closed_that_day) == view.day_trades > 0
    assert view.day_realized_pnl == sum((t.pnl for t in closed_that_day), Decimal(0))
    midnight = datetime.combine(view.day, datetime.min.time(), tzinfo=UTC)
    before = [m for m in marks if m.at < midnight][-1]
    assert view.day_pnl == marks[-1].equity - before.equity
    assert view.heartbeat_at is not None and view.heartbeat_age_s is not None
    assert view.heartbeat_age_s == pytest.approx((now - view.heartbeat_at).total_seconds())
    held = [p for p in store.positions() if p.qty != 0]
    assert len(view.positions) == len(held)


def test_equity_curve_drawdown_is_measured_from_the_running_peak(store: StateStore) -> None:
    curve = reports.equity_curve(store)
    marks = [float(m.equity) for m in store.equity(PORTFOLIO)]
    assert curve["equity"].tolist() == marks
    peak = np.maximum.accumulate(np.array(marks))
    assert np.allclose(curve["drawdown"].to_numpy(), np.array(marks) / peak - 1.0)
    assert curve["drawdown"].max() == 0.0
    assert curve["drawdown"].min() < 0.0


def test_commands_show_what_is_pending_and_what_was_acknowledged(store: StateStore, populated: Populated) -> None:
    frame = reports.commands(store)
    assert frame["id"].tolist() == [populated.pending_command_id, populated.pending_command_id - 1]
    pending, done = frame.iloc[0], frame.iloc[1]
    assert (pending["command"], pending["source"], pending["state"]) == ("pause", "telegram", "pending")
    assert (done["command"], done["state"], done["result"]) == ("resume", "acknowledged", "resumed")
    assert done["sleeve"] == "all"
    with pytest.raises(DataError, match="limit 0"):
        reports.commands(store, limit=0)


# ------------------------------------------------------------------------------------------------- trades


def test_trade_filters_split_the_history_exactly(store: StateStore) -> None:
    stored = store.trades()
    everything = reports.trades(store)
    assert everything.count == len(stored) > 50
    assert everything.pnl == sum((t.pnl for t in stored), Decimal(0))
    assert everything.fees == sum((t.fees for t in stored), Decimal(0))
    winners, losers = reports.trades(store, outcome="winners"), reports.trades(store, outcome="losers")
    assert (winners.frame["pnl"] > 0).all() and (losers.frame["pnl"] < 0).all()
    flat = sum(1 for t in stored if t.pnl == 0)
    assert winners.count + losers.count + flat == everything.count
    assert winners.pnl + losers.pnl == everything.pnl
    assert everything.win_rate == pytest.approx(winners.count / everything.count)
    assert set(everything.frame["model_version"]) >= {"2"}  # the ml sleeve traded the production model
    by_sleeve = [reports.trades(store, sleeve=name).count for name in reports.sleeves(store)]
    assert sum(by_sleeve) == everything.count
    exits = everything.frame["exit_time"].sort_values()
    middle = exits.iloc[len(exits) // 2]
    late = reports.trades(store, start=middle)
    early = reports.trades(store, end=middle)
    assert late.count + early.count == everything.count
    assert (late.frame["exit_time"] >= middle).all() and (early.frame["exit_time"] < middle).all()
    assert reports.trades(store, symbol="ETH/USDT").count == 0


def test_trades_csv_holds_every_selected_trade_exactly(store: StateStore) -> None:
    selection = reports.trades(store, outcome="losers")
    frame = pd.read_csv(io.BytesIO(reports.trades_csv(selection)))
    assert len(frame) == selection.count
    exact = sum((Decimal(repr(v)) for v in frame["pnl"]), Decimal(0))
    assert exact == selection.pnl  # float repr round-trips the stored Decimals digit for digit
    assert list(frame.columns) == list(reports.trading.TRADE_COLUMNS)


def test_trade_filters_refuse_bad_input_by_name(store: StateStore) -> None:
    with pytest.raises(DataError, match="outcome 'big'"):
        reports.trades(store, outcome="big")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="start 'yesterday-ish'"):
        reports.trades(store, start="yesterday-ish")
    with pytest.raises(DataError, match="must be after start"):
        reports.trades(store, start="2021-10-02", end="2021-10-01")


# -------------------------------------------------------------------------------------------------- charts


def test_long_ranges_are_downsampled_with_exact_ohlc_and_the_same_sma(populated: Populated, store: StateStore) -> None:
    settings, bars = populated.settings, populated.bars
    start = pd.Timestamp("2021-10-01", tz="UTC")
    end = start + pd.Timedelta(days=3)
    trades = reports.trades(store).frame
    chart = reports.chart_data(settings, "binance", "BTC/USDT", "1m", start, end, trades, max_bars=2000)
    raw = bars.loc[(bars["timestamp"] >= start) & (bars["timestamp"] < end)].reset_index(drop=True)
    assert chart.source_bars == len(raw) > 4000
    assert chart.downsampled and chart.shown_timeframe == M5
    assert len(chart.bars) <= 2000
    first = chart.bars.iloc[0]
    bucket = raw.iloc[:5]
    assert first["timestamp"] == start
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        bucket["open"].iloc[0], bucket["high"].max(), bucket["low"].min(), bucket["close"].iloc[-1],
        pytest.approx(bucket["volume"].sum()))
    # the SMA of a shown 5m bar is the 1m SMA 50 at its last minute, using minutes before the range
    closes = bars.set_index("timestamp")["close"]
    position = closes.index.get_loc(start + pd.Timedelta(minutes=4))
    assert first["sma"] == pytest.approx(closes.iloc[position - 49:position + 1].mean(), rel=1e-12)
    inside = trades.loc[(trades["entry_time"] >= start) & (trades["entry_time"] < end)]
    assert len(chart.entries) == len(inside) > 0
    exits_inside = trades.loc[(trades["exit_time"] >= start) & (trades["exit_time"] < end)]
    assert sorted(chart.exits["pnl"]) == sorted(exits_inside["pnl"])

    full = reports.chart_data(settings, "binance", "BTC/USDT", "1m", start, end, None, max_bars=10_000)
    assert not full.downsampled and len(full.bars) == len(raw)
    assert full.bars["sma"].notna().all()  # the look-back before the range fills the first window
    assert full.entries.empty


def test_display_timeframe_picks_the_finest_that_fits() -> None:
    assert reports.display_timeframe(M1, 1_500, 2_000) == M1
    assert reports.display_timeframe(M1, 4_320, 2_000) == M5
    assert reports.display_timeframe(M1, 43_200, 2_000) == Timeframe.parse("30m")
    assert reports.display_timeframe(Timeframe.parse("1d"), 50_000, 2_000) == Timeframe.parse("1d")
    with pytest.raises(DataError, match="max_bars 5"):
        reports.display_timeframe(M1, 100, 5)


def test_catalog_and_chart_timeframes_come_from_the_lake(populated: Populated) -> None:
    catalog = reports.catalog(populated.settings)
    assert catalog[["venue", "symbol", "timeframe"]].values.tolist() == [
        ["binance", "BTC/USDT", "1m"], ["binance", "BTC/USDT", "1h"]]
    minutes = catalog.iloc[0]
    assert minutes["first"] == populated.bars["timestamp"].iloc[0]
    assert minutes["last"] == populated.bars["timestamp"].iloc[-1]
    offered = reports.chart_timeframes(catalog, "binance", "BTC/USDT")
    assert offered[:3] == ["1m", "5m", "15m"] and "1h" in offered and "1d" in offered
    assert reports.series_span(catalog, "binance", "BTC/USDT", "5m")[1] == minutes["last"]
    with pytest.raises(DataError, match="ETH/USDT on binance is not in the lake"):
        reports.chart_timeframes(catalog, "binance", "ETH/USDT")


def test_the_chart_probability_is_the_production_models(populated: Populated) -> None:
    settings, bars = populated.settings, populated.bars
    model = reports.load_production(settings, "BTC/USDT", M1)
    assert model is not None and model.version == populated.production_version
    start = pd.Timestamp("2021-10-05", tz="UTC")
    shown = bars.loc[(bars["timestamp"] >= start) & (bars["timestamp"] < start + pd.Timedelta(hours=6))]
    values = reports.chart_probability(settings, model, "binance", "BTC/USDT", M1, shown, M1)
    assert len(values) == len(shown) and np.isfinite(values).all()
    assert ((values > 0) & (values < 1)).all()
    spec = FeatureSpec()
    history = bars.loc[bars["timestamp"] < start + pd.Timedelta(hours=6)].iloc[-(spec.warmup + 400):]
    expected = model.predict(build_features(history, spec, AssetClass.CRYPTO), spec.hash())
    assert values[-1] == pytest.approx(expected[-1], abs=1e-6)
    assert reports.load_production(settings, "BTC/USDT", Timeframe.parse("1h")) is None


# ---------------------------------------------------------------------------------------------- backtests


def test_stored_runs_show_their_summary_and_curves_compare(populated: Populated) -> None:
    root = reports.backtest_root(populated.settings.data_dir)
    runs = reports.runs(root)
    assert set(runs["run_id"]) == set(populated.backtest_ids)
    for row in runs.itertuples():
        summary = json.loads((root / str(row.run_id) / "summary.json").read_text())
        assert row.sharpe == summary["sharpe"] and row.final_equity == summary["final_equity"]
        assert row.trades == summary["trades"] and row.strategy == summary["strategy"]
    curves = reports.curves(root, list(populated.backtest_ids))
    for run_id, part in curves.groupby("run_id"):
        summary = json.loads((root / str(run_id) / "summary.json").read_text())
        assert part["growth"].iloc[0] == 1.0
        assert part["equity"].iloc[-1] == pytest.approx(summary["final_equity"])
        assert -part["drawdown"].min() == pytest.approx(summary["max_drawdown"], rel=1e-9)
    with pytest.raises(DataError, match="no stored backtest run nope"):
        reports.curves(root, ["nope"])
    assert reports.runs(populated.settings.data_dir / "elsewhere").empty


# ------------------------------------------------------------------------------------------------- models


def test_model_versions_promote_and_rollback_move_the_alias(populated: Populated) -> None:
    settings = populated.settings
    table = reports.model_versions(settings)
    assert table["version"].tolist() == ["1", "2"]
    assert table["production"].tolist() == [False, True]
    assert table["oos_sharpe"].tolist() == [0.8, 1.2]
    assert table["decision"].tolist() == ["promoted", "promoted"]
    assert "challenger_sharpe=1.2" in table["gate"].iloc[1]
    reports.promote(settings, MODEL, "1")
    assert reports.production_versions(settings) == {MODEL: "1"}
    tags = ModelRegistry(settings.mlflow_tracking_uri).client.get_model_version(MODEL, "1").tags
    assert tags["promotion_reason"] == "promoted by hand (dashboard)"
    assert reports.rollback(settings, MODEL) == "2"
    assert reports.production_versions(settings) == {MODEL: "2"}
    with pytest.raises(DataError, match="has no version '9'"):
        reports.promote(settings, MODEL, "9")


def test_no_registry_store_means_no_models_and_nothing_created(tmp_path: Path, populated: Populated) -> None:
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    settings = populated.settings.model_copy(update={"mlflow_tracking_uri": uri})
    assert reports.model_versions(settings).empty
    assert not (tmp_path / "none").exists()
    with pytest.raises(DataError, match="no model registry"):
        reports.rollback(settings, MODEL)


# ------------------------------------------------------------------------------------------------- health


def test_data_health_and_quarantine_count_what_the_gate_held_back(populated: Populated) -> None:
    health = reports.data_health(populated.settings, pd.Timestamp("2026-11-21 12:00", tz="UTC"))
    minutes = health.loc[health["timeframe"] == "1m"].iloc[0]
    assert minutes["rows"] == len(populated.bars) == 29_998
    assert minutes["quarantined"] == 2 and minutes["missing_bars"] >= 2
    assert minutes["coverage"] == pytest.approx(minutes["rows"] / (minutes["rows"] + minutes["missing_bars"]))
    assert bool(minutes["stale"])
    reasons = reports.quarantine_reasons(populated.settings)
    assert sorted(reasons["reason"]) == ["non-finite close", "non-positive low"]
    rows = reports.quarantine_rows(populated.settings)
    assert len(rows) == 2 and set(rows["timeframe"]) == {"1m"}


# ------------------------------------------------------------------------------------------ prefect launch


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server (``prefect server start``) on a free loopback port, with its own home."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "true", "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_API_URL": ""}
    log = (home / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        log.flush()
        wait_until(lambda: prefect_api.server_answers(api, timeout_s=5.0), "the Prefect server to answer",
                   process=process, log=home / "server.log")
        yield api
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _request() -> AdhocRequest:
    return AdhocRequest(strategy="sma_cross", symbol="btc/usdt", timeframe="1h", start="2024-01-01",
                                       end="2024-03-01", fee_bps=5, params={"fast": "10", "slow": "30"})


@pytest.mark.slow
def test_launch_creates_a_flow_run_of_the_adhoc_deployment(prefect_server: str) -> None:
    missing = prefect_api.launch_backtest(prefect_server, _request())
    assert not missing.ok and "has no deployment adhoc-backtest/adhoc-backtest" in missing.message
    with httpx.Client(base_url=prefect_server, timeout=10) as client:

        def post(path: str, body: dict[str, object]) -> httpx.Response:
            """A setup request, retried by the project's retry policy while Prefect answers 5xx (its SQLite
            store can be briefly busy)."""
            def once() -> httpx.Response:
                return client.post(path, json=body).raise_for_status()

            return RetryPolicy(attempts=6, base_s=0.2, cap_s=2.0).call(once, what=f"POST {path}")

        flow = post("/flows/", {"name": prefect_api.FLOW}).json()
        made = post("/deployments/", {"name": prefect_api.DEPLOYMENT, "flow_id": flow["id"]})
        assert made.status_code < 300, made.text
        launch = prefect_api.launch_backtest(prefect_server, _request())
        assert launch.ok, launch.message
        assert launch.deployment_id == made.json()["id"]
        run = client.get(f"/flow_runs/{launch.flow_run_id}").json()
    assert run["deployment_id"] == launch.deployment_id
    assert run["name"] == launch.flow_run_name
    assert run["parameters"] == {
        "strategy": "sma_cross", "symbol": "BTC/USDT", "timeframe": "1h", "venue": None,
        "start": "2024-01-01T00:00:00+00:00", "end": "2024-03-01T00:00:00+00:00", "fee_bps": 5,
        "slippage_bps": 0.0, "max_position": 0.25, "cash": 100_000.0, "params": {"fast": "10", "slow": "30"},
    }


def test_a_silent_prefect_server_is_reported_not_raised() -> None:
    api = f"http://127.0.0.1:{_free_port()}/api"
    launch = prefect_api.launch_backtest(api, _request(), timeout_s=2)
    assert not launch.ok
    assert f"the Prefect server at {api} does not answer" in launch.message
    assert not prefect_api.server_answers(api)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "moon"}, "strategy 'moon' is not known"),
        ({"symbol": "bitcoin!"}, "bitcoin!"),
        ({"timeframe": "7m"}, "timeframe '7m'"),
        ({"start": "soon"}, "start 'soon' is not a date"),
        ({"start": "2024-02-01", "end": "2024-01-01"}, "must be after start"),
        ({"fee_bps": -1.0}, "fee_bps -1.0"),
        ({"cash": 0.0}, "cash 0.0"),
        ({"params": {"fast": "x"}}, "fast"),
        ({"params": {"speed": "3"}}, "no parameter 'speed'"),
    ],
)
def test_bad_launch_requests_are_refused_before_any_call(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"strategy": "sma_cross", "symbol": "BTC/USDT", "timeframe": "1h", **changes}
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        AdhocRequest(**fields)  # type: ignore[arg-type]


def test_helpers_reject_bad_limits(populated: Populated) -> None:
    with pytest.raises(DataError, match="limit 0"):
        reports.quarantine_rows(populated.settings, limit=0)
