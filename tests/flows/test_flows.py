"""Every flow end to end under Prefect's test harness, on real BTC/USDT and ETH/USDT 1h bars: ingest → features →
train (registered, gated) → nightly and ad hoc backtests (stored, logged to MLflow, equal to pipeline.backtest.run)
→ the runtime deployment (a real paper runtime process) → backups and the restore drill → the daily summary
(stored, sent to a fake Telegram) → parity; then every deployment with its schedule, applied to the server and
read back through the Prefect client.

Every test stands alone, in any order. The prerequisites are fixtures that make them by running the flows
themselves, once per session, into one shared workspace (like the jobs of one machine): ``ingested`` (the lake),
``trained`` (a production model in a model store of its own) and ``with_state`` (the state database of a paper
runtime run). A test that changes a part of the workspace its assertions count (the lake of the ingest test, the
model store of the train and nightly tests, the state database of the runtime test, the backups folder of the
backup tests) gets that part of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from prefect.testing.utilities import prefect_test_harness

from pipeline.backtest.run import run_backtest
from pipeline.data.catalog import read_bars
from pipeline.domain import Timeframe
from pipeline.engine import EngineConfig
from pipeline.models.registry import ModelRegistry
from pipeline.settings import Settings, load_settings
from pipeline.state import StateStore
from pipeline.strategies import REGISTRY
from tests.conftest import PROXY_VARIABLES, shared_file
from tests.pipeline.reports.test_summary import TOKEN, PhotoTelegram

pytestmark = [
    pytest.mark.slow,  # every flow runs under Prefect's test harness (a temporary server)
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

BTC_BARS = 3000
ETH_BARS = 1500


def _new_workspace(root: Path) -> Path:
    """A workspace at ``root``: the import files of the universe's two series, nothing else yet."""
    imports = root / "imports"
    imports.mkdir(parents=True)
    btc = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-BTC_BARS:]
    eth = pd.read_parquet(shared_file("binance_ETH-USDT_1h.parquet")).iloc[-ETH_BARS:]
    btc.to_parquet(imports / "btc.parquet", index=False)
    eth.to_parquet(imports / "eth.parquet", index=False)
    return root


def _point_at(monkeypatch: pytest.MonkeyPatch, workspace: Path, **overrides: str) -> Settings:
    """Point the environment (and the working directory) at ``workspace``, as a deployment would see it, with
    ``overrides`` (setting name → value) on top; returns the settings. No other TRADEFORGE_* variable stays."""
    for name in list(os.environ):
        if (name.startswith("TRADEFORGE_") and name != "TRADEFORGE_SHARED_DATA") or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    last = min(pd.read_parquet(workspace / "imports" / name)["timestamp"].iloc[-1] for name in ("btc.parquet",
                                                                                                "eth.parquet"))
    days = (pd.Timestamp.now(tz="UTC") - last).days + 30  # the nightly window covers 30 days of both series
    values = {
        "TRADEFORGE_DATA_DIR": str(workspace / "data"),
        "TRADEFORGE_MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlruns' / 'mlflow.db'}",
        "TRADEFORGE_UNIVERSE": f"file:BTC/USDT:1h@{workspace / 'imports' / 'btc.parquet'},"
                               f"file:ETH/USDT:1h@{workspace / 'imports' / 'eth.parquet'}",
        "TRADEFORGE_NIGHTLY_BACKTEST_DAYS": str(days),
        "TRADEFORGE_BACKUP_KEEP": "3",
    } | {f"TRADEFORGE_{name.upper()}": value for name, value in overrides.items()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(workspace)
    return load_settings()


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared workspace; its parts exist only through the prerequisite fixtures below."""
    return _new_workspace(tmp_path_factory.mktemp("flows"))


@pytest.fixture(scope="session")
def ingested(harness: None, workspace: Path) -> list[dict[str, Any]]:
    """The shared lake holds both series: the ingest flow ran over the universe (idempotent: a second run adds
    nothing). Returns the flow's reports."""
    from flows.ingest import ingest_flow

    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, workspace)
        return ingest_flow()


@pytest.fixture(scope="session")
def trained(ingested: list[dict[str, Any]], workspace: Path) -> dict[str, Any]:
    """A production ``hybrid-BTC-USDT-1h`` (the train flow, promotion forced), trained on the shared lake into a
    model store that no test writes to: tests take a copy of it (``env_with_model``). Returns the flow's outcome
    with the store's ``tracking_uri``."""
    from flows.train import train_flow

    uri = f"sqlite:///{workspace / 'trained' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, workspace, mlflow_tracking_uri=uri)
        outcome = train_flow(epochs=2, hidden=8, seq_len=12, promote="force")
    assert outcome["promoted"] is True
    return outcome | {"tracking_uri": uri}


@pytest.fixture(scope="session")
def with_state(ingested: list[dict[str, Any]], workspace: Path) -> dict[str, Any]:
    """The shared state database holds a paper runtime's run over the shared lake's BTC/USDT bars (the runtime
    flow, run as the runtime test runs it; the parity test's backtest repeats it); nothing writes to it
    afterwards. Returns the runtime's summary."""
    from flows.runtime import runtime_flow

    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, workspace)
        summary = runtime_flow(strategy="sma_cross", symbol="BTC/USDT", timeframe="1h", fresh=True,
                               params={"fast": "10", "slow": "30"},
                               options={"max_position": 1.0, "batch": 6})
    assert summary["fills"] > 0 and summary["stopped_by"] == "end of data"
    return summary


@pytest.fixture
def env(harness: None, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared workspace's settings, through the environment as a deployment would see them."""
    return _point_at(monkeypatch, workspace)


@pytest.fixture
def empty_env(harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A workspace of the test's own: an empty lake, no models, no state."""
    return _point_at(monkeypatch, _new_workspace(tmp_path / "workspace"))


@pytest.fixture
def env_without_models(harness: None, ingested: list[dict[str, Any]], workspace: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with an empty model store of the test's own."""
    return _point_at(monkeypatch, workspace, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


@pytest.fixture
def env_with_model(harness: None, trained: dict[str, Any], workspace: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with a model store of the test's own: a copy of ``trained``'s (its artifacts stay where
    they are), so the runs a test logs there are the only runs in it."""
    copy = tmp_path / "mlruns" / "mlflow.db"
    copy.parent.mkdir()
    original = sqlite3.connect(trained["tracking_uri"].removeprefix("sqlite:///"))
    target = sqlite3.connect(copy)
    try:
        original.backup(target)
    finally:
        original.close()
        target.close()
    return _point_at(monkeypatch, workspace, mlflow_tracking_uri=f"sqlite:///{copy}")


@pytest.fixture
def env_without_state(harness: None, ingested: list[dict[str, Any]], workspace: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with a state database of the test's own that does not exist yet."""
    return _point_at(monkeypatch, workspace, database_url=f"sqlite:///{tmp_path / 'state' / 'tradeforge.db'}")


@pytest.fixture
def env_own_backups(harness: None, with_state: dict[str, Any], workspace: Path, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared state database, backed up into a data directory (and so a backups folder) of the test's own."""
    shared = _point_at(monkeypatch, workspace).state_url
    return _point_at(monkeypatch, workspace, data_dir=str(tmp_path / "data"), database_url=shared)


@pytest.fixture
def env_with_a_backup(env_own_backups: Settings) -> Settings:
    """``env_own_backups`` with one backup in its folder (the backup flow)."""
    from flows.backup import backup_flow

    backup_flow()
    return env_own_backups


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


@pytest.mark.usefixtures("ingested")
def test_adhoc_backtest_flow_takes_typed_parameters(env: Settings) -> None:
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
        "parity-report": settings.schedule_parity, "adhoc-backtest": None, "runtime": None,
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
