"""Every flow end to end under Prefect's test harness on real 1h bars, and every deployment with its schedule."""

# On real BTC/USDT and ETH/USDT 1h bars: ingest → features → train (registered, gated) → nightly and ad hoc
# backtests (stored, logged to MLflow, equal to pipeline.backtest.run) → the runtime deployment (a real paper
# runtime process) → backups and the restore drill → the daily summary (stored, sent to a fake Telegram) → parity;
# then every deployment with its schedule, applied to the server and read back through the Prefect client.
#
# The prerequisites (the shared workspace, the lake, a trained model, a runtime's state database) and the
# environment each test sees are fixtures of ``tests.flows.flow_helpers``, made once per session.

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from pipeline.backtest.run import run_backtest
from pipeline.data.catalog import read_bars
from pipeline.domain import Timeframe
from pipeline.engine import EngineConfig
from pipeline.models.registry import ModelRegistry
from pipeline.settings import Settings, load_settings
from pipeline.state import StateStore
from pipeline.strategies import REGISTRY
from tests.flows import flow_helpers
from tests.flows.flow_helpers import BTC_BARS, ETH_BARS
from tests.pipeline.reports.test_summary import TOKEN, PhotoTelegram

pytestmark = [
    pytest.mark.slow,  # every flow runs under Prefect's test harness (a temporary server)
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]


harness = flow_helpers.harness  # the prerequisites, each made once per session, and the environment of each test
workspace = flow_helpers.workspace
ingested = flow_helpers.ingested
trained = flow_helpers.trained
with_state = flow_helpers.with_state
env = flow_helpers.env
empty_env = flow_helpers.empty_env
env_without_models = flow_helpers.env_without_models
env_with_model = flow_helpers.env_with_model
env_without_state = flow_helpers.env_without_state
env_own_state = flow_helpers.env_own_state
env_own_backups = flow_helpers.env_own_backups
env_with_a_backup = flow_helpers.env_with_a_backup


def _flow_logs(flow_run_id: Any) -> list[str]:
    APILogHandler().flush()

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return [log.message for log in logs]

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:  # leaves the thread's own loop alone
        return runner.run(read())


def test_ingest_flow_fills_the_lake_and_is_incremental(empty_env: Settings) -> None:
    from flows.ingest import ingest_flow

    first = ingest_flow()
    assert [(r["symbol"], r["rows_written"]) for r in first] == [("BTC/USDT", BTC_BARS), ("ETH/USDT", ETH_BARS)]
    assert all(r["venue"] == "binance" and r["rows_quarantined"] == 0 for r in first)
    assert len(read_bars(empty_env, "BTC/USDT", "1h")) == BTC_BARS
    again = ingest_flow()
    assert [r["rows_written"] for r in again] == [0, 0]
    with pytest.raises(ValueError, match="not of the form venue:SYMBOL:timeframe"):
        ingest_flow(universe=["BTC/USDT"])


@pytest.mark.usefixtures("ingested")
def test_features_flow_stores_the_feature_set(env: Settings) -> None:
    from flows.features import features_flow
    from pipeline.features.build import FeatureSpec, load_features

    built = features_flow()
    spec = FeatureSpec()
    assert [b["rows"] for b in built] == [BTC_BARS - spec.warmup, ETH_BARS - spec.warmup]
    stored = load_features(spec, env.data_dir, "binance", "BTC-USDT", "1h")
    assert len(stored) == BTC_BARS - spec.warmup


def test_train_flow_registers_a_version_with_its_gate_decision(env_without_models: Settings) -> None:
    from flows.train import train_flow

    outcome = train_flow(epochs=2, hidden=8, seq_len=12, promote="force")
    registry = ModelRegistry(env_without_models.mlflow_tracking_uri)
    [version] = registry.versions("hybrid-BTC-USDT-1h")
    assert outcome["version"] == str(version.version) and outcome["promoted"] is True
    assert version.tags["promotion_decision"] == "promoted"
    assert version.tags["promotion_reason"] == outcome["reason"]
    production = registry.production("hybrid-BTC-USDT-1h")
    assert production is not None and str(production.version) == outcome["version"]
    gated = train_flow(epochs=1, hidden=8, seq_len=12, promote="auto")
    second = registry.versions("hybrid-BTC-USDT-1h")[-1]
    assert second.tags["promotion_decision"] == ("promoted" if gated["promoted"] else "rejected")
    assert second.tags["promotion_reason"] == gated["reason"]


def test_nightly_backtest_stores_runs_equal_to_the_library_and_logs_them_to_mlflow(env_with_model: Settings) -> None:
    from flows.backtest import nightly_backtest_flow

    state = nightly_backtest_flow(return_state=True)
    report = state.result()
    labels = [r["label"] for r in report["runs"]]
    names = REGISTRY.names()
    assert labels == [f"{n} binance:BTC/USDT:1h" for n in names] + [
        f"{n} binance:ETH/USDT:1h" for n in names if n != "hybrid"]
    assert report["skipped"] == ["hybrid on file:ETH/USDT:1h@" + str(Path(env_with_model.universe[1].split("@")[1]))
                                 + ": no production model"]
    run = next(r for r in report["runs"] if r["label"].startswith("sma_cross binance:BTC"))
    summary = json.loads((Path(run["folder"]) / "summary.json").read_text())
    first, last = pd.Timestamp(summary["first"]), pd.Timestamp(summary["last"])
    assert summary["bars"] >= 24 * 29
    bars = read_bars(env_with_model, "BTC/USDT", "1h", first, last + pd.Timedelta(hours=1))
    expected = run_backtest(bars, REGISTRY.build("sma_cross"), EngineConfig(), Timeframe.parse("1h")).summary()
    for key in ("bars", "trades", "fills", "final_equity", "total_return", "sharpe", "max_drawdown"):
        assert summary[key] == expected[key], key
    logged = ModelRegistry(env_with_model.mlflow_tracking_uri).backtest_runs("nightly-backtests")
    by_id = {r["tags"]["backtest_run_id"]: r for r in logged}
    assert set(by_id) == {r["run_id"] for r in report["runs"]}
    assert by_id[run["run_id"]]["metrics"]["final_equity"] == pytest.approx(expected["final_equity"])
    hybrid = next(r for r in report["runs"] if r["label"].startswith("hybrid binance:BTC"))
    assert by_id[hybrid["run_id"]]["params"]["model"].startswith("hybrid-BTC-USDT-1h v")
    assert summary["config"]["breaker_cooldown_bars"] is None  # TRADEFORGE_NIGHTLY_BREAKER_COOLDOWN_BARS unset
    messages = _flow_logs(state.state_details.flow_run_id)
    for stored in report["runs"]:
        assert stored["line"].startswith(stored["label"] + ": ") and " trips, " in stored["line"]
        assert f"{stored['line']}, stored {stored['folder']}" in messages


def test_nightly_breaker_cooldown_is_a_setting(env_with_model: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.backtest.nightly import nightly_backtests
    from pipeline.clock import SystemClock

    monkeypatch.setenv("TRADEFORGE_UNIVERSE", env_with_model.universe[0])
    monkeypatch.setenv("TRADEFORGE_NIGHTLY_BREAKER_COOLDOWN_BARS", "24")
    settings = load_settings()
    assert settings.nightly_breaker_cooldown_bars == 24
    report = nightly_backtests(settings, SystemClock())
    assert report.runs
    for run in report.runs:
        assert run.summary["config"]["breaker_cooldown_bars"] == 24, run.label
    monkeypatch.setenv("TRADEFORGE_NIGHTLY_BREAKER_COOLDOWN_BARS", "")
    assert load_settings().nightly_breaker_cooldown_bars is None


def test_adhoc_backtest_flow_takes_typed_parameters(env_without_state: Settings) -> None:
    from flows.backtest import adhoc_backtest_flow

    result = adhoc_backtest_flow(strategy="sma_cross", symbol="BTC/USDT", start="2026-03-01", end="2026-05-01",
                                 fee_bps=5.0, max_position=0.5, params={"fast": 12, "slow": 48},
                                 breaker_cooldown_bars=24)
    summary = result["summary"]
    assert summary["params"] == {"fast": "12", "slow": "48"}
    assert summary["config"]["fee_bps"] == 5.0 and summary["config"]["max_position"] == 0.5
    assert summary["config"]["breaker_cooldown_bars"] == 24
    assert summary["first"].startswith("2026-03-01") and summary["last"].startswith("2026-04-30T23")
    assert (Path(result["folder"]) / "trades.parquet").exists()
    with pytest.raises(Exception, match="has no parameter 'speed'"):
        adhoc_backtest_flow(strategy="sma_cross", symbol="BTC/USDT", params={"speed": 3})


def test_runtime_flow_runs_the_paper_runtime_as_a_process(env_without_state: Settings) -> None:
    from flows.runtime import runtime_flow

    summary = runtime_flow(strategy="sma_cross", symbol="BTC/USDT", timeframe="1h", fresh=True,
                           params={"fast": "10", "slow": "30"}, options={"max_position": 1.0, "batch": 6})
    assert summary["bars"] == BTC_BARS and summary["fills"] > 20 and summary["stopped_by"] == "end of data"
    with StateStore.read_only(env_without_state.state_url) as store:
        assert len(store.fills()) == summary["fills"]
        assert store.bot_state() is not None
    with pytest.raises(RuntimeError, match="exited with code"):
        runtime_flow(strategy="sma_cross", symbol="BTC/USDT", timeframe="1h", fresh=True)  # state exists already


def test_backup_flow_backs_up_rotates_drills_and_shows_library_logs(env_own_backups: Settings) -> None:
    from flows.backup import backup_flow, restore_drill_flow

    state = backup_flow(drill=True, return_state=True)
    report = state.result()
    assert report["drill"]["ok"] and report["drill"]["integrity"] == "ok"
    with StateStore.read_only(env_own_backups.state_url) as store:
        assert report["drill"]["rows"]["fills"] == len(store.fills())
    messages = _flow_logs(state.state_details.flow_run_id)
    assert any(m.startswith("state backup state-") for m in messages)  # from pipeline.state.backup's own logger
    assert any(m.startswith("restore drill of state-") for m in messages)
    for _ in range(3):
        backup_flow()
    assert len(list((env_own_backups.data_dir / "backups").glob("state-*.sqlite.gz"))) == 3  # TRADEFORGE_BACKUP_KEEP
    assert restore_drill_flow()["ok"]


def test_restore_drill_flow_fails_on_a_corrupted_backup(env_with_a_backup: Settings) -> None:
    from flows.backup import restore_drill_flow
    from pipeline.state.backup import list_backups

    newest = list_backups(env_with_a_backup.backup_dir)[0].path
    payload = bytearray(newest.read_bytes())
    payload[100] ^= 0x55
    newest.write_bytes(bytes(payload))
    state = restore_drill_flow(return_state=True)
    assert state.is_failed()
    assert "does not match its checksum" in str(state.message)


def _busiest_day(settings: Settings) -> date:
    with StateStore.read_only(settings.state_url) as store:
        days = [t.exit_time.date() for t in store.trades()]
    return max(set(days), key=days.count)


@pytest.mark.usefixtures("with_state")
def test_daily_summary_flow_stores_and_sends_message_and_chart(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.summary import daily_summary_flow

    day = _busiest_day(env)
    quiet = daily_summary_flow(day=day.isoformat())
    assert quiet["telegram"] == {"sent": False, "reason": "telegram is not configured (no token or no chat ids): "
                                                          "summary not sent"}
    with PhotoTelegram() as server:
        monkeypatch.setenv("TRADEFORGE_TELEGRAM_TOKEN", TOKEN)
        monkeypatch.setenv("TRADEFORGE_TELEGRAM_CHAT_IDS", "11,22")
        monkeypatch.setenv("TRADEFORGE_TELEGRAM_API_URL", server.url)
        result = daily_summary_flow(day=day.isoformat())
        assert result["telegram"]["sent"] is True
        assert server.texts_to(11) == server.texts_to(22) == [result["text"]]
        assert {m.chat_id for m in server.sent} == {11, 22}
        chart = (env.data_dir / "reports" / day.isoformat() / "equity.png").read_bytes()
        assert [(chat, image) for chat, image, _ in server.photos] == [(11, chart), (22, chart)]
    with StateStore.read_only(env.state_url) as store:
        trades = [t for t in store.trades() if t.exit_time.date() == day]
    stored = json.loads((env.data_dir / "reports" / day.isoformat() / "summary.json").read_text())
    assert stored["portfolio"]["trades"] == len(trades) >= 1
    assert sum(float(t.pnl) for t in trades) == pytest.approx(float(stored["portfolio"]["realised_pnl"]))
    assert str(sum(t.pnl for t in trades)) == stored["sleeves"][0]["realised_pnl"]


@pytest.mark.usefixtures("with_state")
def test_parity_flow_finds_the_runtime_in_agreement_with_its_backtest(env: Settings) -> None:
    from flows.parity import parity_flow

    with StateStore.read_only(env.state_url) as store:
        days = [f.at.date() for f in store.fills()]
    day = max(set(days), key=days.count)
    report = parity_flow(day=day.isoformat(), strategy="sma_cross", symbol="BTC/USDT", timeframe="1h",
                         params={"fast": "10", "slow": "30"}, max_position=1.0)
    assert report["agreement"] == 1.0 and report["missed"] == 0 and report["extra"] == 0
    assert report["sleeves"][0]["matched"] >= 2
    assert json.loads(Path(report["stored"]).read_text())["agreement"] == 1.0
    off = parity_flow(day=day.isoformat(), strategy="sma_cross", symbol="BTC/USDT", timeframe="1h",
                      params={"fast": "5", "slow": "60"}, max_position=1.0)
    assert off["agreement"] < 1.0 and off["missed"] + off["extra"] > 0


def test_serve_builds_every_deployment_with_its_schedule_and_the_server_keeps_them(env: Settings) -> None:
    from flows.serve import deployments

    settings = Settings(_env_file=None, schedule_ingest="7 * * * *", schedule_backup="*/10 * * * *")  # type: ignore[call-arg]
    built = deployments(settings)
    expected = {
        "ingest": "7 * * * *", "build-features": settings.schedule_features, "train": settings.schedule_train,
        "nightly-backtest": settings.schedule_backtest, "backup-state": "*/10 * * * *",
        "restore-drill": settings.schedule_restore_drill, "daily-summary": "5 0 * * *",
        "parity-report": settings.schedule_parity, "adhoc-backtest": None, "runtime": None, "optimize": None,
    }
    assert sorted(d.name for d in built) == sorted(expected)
    for deployment in built:
        deployment.apply()

    async def read() -> dict[str, Any]:
        async with get_client() as client:
            return {name: await client.read_deployment_by_name(f"{name}/{name}") for name in expected}

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:  # leaves the thread's own loop alone
        stored = runner.run(read())
    for name, cron in expected.items():
        schedules = stored[name].schedules
        if cron is None:
            assert schedules == [], name
        else:
            assert [(s.schedule.cron, s.schedule.timezone) for s in schedules] == [(cron, "UTC")], name
    assert stored["parity-report"].paused is True and stored["ingest"].paused is False
    form = stored["adhoc-backtest"].parameter_openapi_schema["properties"]
    assert list(form) == ["strategy", "symbol", "timeframe", "venue", "start", "end", "fee_bps", "slippage_bps",
                          "max_position", "cash", "params", "breaker_cooldown_bars"]
    assert stored["adhoc-backtest"].parameter_openapi_schema["required"] == ["strategy", "symbol"]
    assert "long-running" in stored["runtime"].tags
