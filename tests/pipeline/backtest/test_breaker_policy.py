"""How circuit breakers release: daily ones at the next trading day, drawdown and loss-streak ones by an operator's
reset or a cool-down, an operator's pause never by itself; every trip and release recorded, in the engine, the
backtest summary and reports, the portfolio, the state store (with its schema upgrade) and the runtime."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import reports
from pipeline.backtest.nightly import run_line
from pipeline.backtest.portfolio import Bar, PortfolioConfig, PortfolioStepper, run_portfolio
from pipeline.backtest.run import run_backtest, save_backtest, save_portfolio
from pipeline.domain import Timeframe, epoch_ms
from pipeline.domain.values import UTCDateTime
from pipeline.engine import Engine, EngineConfig, EngineResult, run
from pipeline.engine.layout import LEGACY_ISTATE_SLOTS
from pipeline.reports.summary import daily_summary, markdown
from pipeline.state import BreakerEventRow, BreakerRecord, SchemaVersion, StateStore, StepRecord
from pipeline.strategies import REGISTRY, Targets
from tests.conftest import shared_file
from tests.pipeline.engine import test_engine
from tests.pipeline.state import stores

db_url = stores.db_url  # the store fixtures: a fresh database on SQLite and on PostgreSQL
open_store = stores.open_store

NO_BREAKERS = {"max_drawdown": None, "daily_loss": None, "max_consecutive_losses": None, "max_trades_per_day": None}


_bars = test_engine._bars  # exact synthetic bars and decisions, as the engine tests build them
_decide = test_engine._decide


def _both_drivers(bars: pd.DataFrame, decisions: dict[int, float], config: EngineConfig) -> EngineResult:
    """The fast driver's result, after checking that stepping bar by bar gives the same frames."""
    aims, codes = _decide(len(bars), decisions)
    fast = run(bars, aims, codes, ("rule",), config)
    engine = Engine(config, ("rule",))
    for row, aim, code in zip(bars.itertuples(index=False), aims, codes, strict=True):
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aim, code)
    stepped = engine.result()
    for name in ("fills", "trades", "equity", "rejections", "breaker_events"):
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(stepped, name), check_exact=True)
    return fast


def _bar_of(bars: pd.DataFrame, stamp: pd.Timestamp) -> int:
    return int(np.flatnonzero(bars["timestamp"] == stamp)[0])


def _events(result: EngineResult) -> list[tuple[int, str, str, str, int]]:
    """(bar, rule, action, released_by, bars_tripped) of every breaker event."""
    e = result.breaker_events
    bars = ((e["timestamp"] - pd.Timestamp("2024-01-01", tz="UTC")) // pd.Timedelta(hours=1)).astype(int)
    return list(zip(bars, e["rule"], e["action"], e["released_by"], e["bars_tripped"], strict=True))


# ------------------------------------------------------------------------------------------------ daily breakers


def test_a_daily_loss_trip_releases_at_the_next_trading_day_and_entries_resume() -> None:
    bars = _bars([100.0] * 3 + [97.0, 94.0] + [94.0] * 43)  # hourly: day 1 is bars 0-23, day 2 bars 24-47
    decisions = {1: 1.0, 6: 0.0, 10: 1.0, 12: 0.0, 26: 1.0}
    config = EngineConfig(fee_bps=0, max_position=1.0, **{**NO_BREAKERS, "daily_loss": 0.05})
    result = _both_drivers(bars, decisions, config)
    # 6 % down at bar 4's close trips it; the first bar of day 2 releases it, after 20 bars
    assert _events(result) == [(4, "daily_loss", "trip", "", 0), (24, "daily_loss", "release", "new_day", 20)]
    trip, release = result.breaker_events.iloc[0], result.breaker_events.iloc[1]
    assert trip["value"] == pytest.approx(0.06) and trip["threshold"] == 0.05
    assert release["value"] == pytest.approx(0.06)  # the day's loss just before the release
    assert result.fills["bar"].tolist() == [2, 7, 27]  # entry, exit, and day 2's entry; day 1's re-entry blocked
    assert result.rejections["what"].tolist() == ["blocked: circuit breaker tripped"]
    assert result.rejections["timestamp"].iloc[0] == bars["timestamp"].iloc[11]
    paused = result.equity["paused"].to_numpy()
    assert paused[4:24].all() and not paused[:4].any() and not paused[24:].any()
    assert result.paused_bars == 20

    latched = _both_drivers(bars, decisions, config.model_copy(update={"daily_release": False}))
    assert _events(latched) == [(4, "daily_loss", "trip", "", 0)]
    assert latched.fills["bar"].tolist() == [2, 7]  # without daily release day 2's entry is blocked too
    assert latched.paused_bars == len(bars) - 4


def test_a_trades_per_day_trip_releases_the_next_day() -> None:
    bars = _bars([100.0] * 48)
    decisions = {i: (1.0 if i % 2 == 0 else 0.0) for i in range(47)}  # a flip every hour, day and night
    config = EngineConfig(fee_bps=0, max_position=1.0, **{**NO_BREAKERS, "max_trades_per_day": 4})
    result = _both_drivers(bars, decisions, config)
    fills_per_day = result.fills.groupby(result.fills["timestamp"].dt.day).size().to_dict()
    assert fills_per_day == {1: 4, 2: 4}
    assert _events(result) == [(4, "trades_per_day", "trip", "", 0),
                               (24, "trades_per_day", "release", "new_day", 20),
                               (28, "trades_per_day", "trip", "", 0)]
    assert result.breaker_events["value"].tolist() == [4.0, 4.0, 4.0]  # the day's fills at each event
    assert result.fills["bar"].iloc[4] == 25  # day 2's first entry: decided at bar 24, right after the release


def test_a_released_daily_breaker_can_trip_again_in_the_bar_that_released_it() -> None:
    bars = _bars([100.0, 100.0, 100.0, 94.0] + [94.0] * 20 + [80.0, 80.0])
    config = EngineConfig(fee_bps=0, max_position=1.0, **{**NO_BREAKERS, "daily_loss": 0.05})
    result = _both_drivers(bars, {1: 1.0}, config)
    # bar 3 trips (6 % down), bar 24 (day 2) releases and, 15 % down on the day's open, trips again at its close
    assert _events(result) == [(3, "daily_loss", "trip", "", 0), (24, "daily_loss", "release", "new_day", 21),
                               (24, "daily_loss", "trip", "", 0)]
    assert result.equity["paused"].iloc[24]


# ------------------------------------------------------------------------------- breakers that wait for an operator


def _drawdown_case(cooldown: int | None) -> tuple[pd.DataFrame, EngineResult]:
    # all in at 100 (bar 2), 75 at bar 4 (25 % down: trip), out at bar 6, back in when allowed, then a slide
    closes = [100.0, 100.0, 100.0, 90.0, 75.0] + [75.0] * 6 + [70.0, 65.0, 58.0] + [58.0] * 58
    bars = _bars(closes)
    decisions = {1: 1.0, 5: 0.0, 6: 1.0, 7: 0.0, 9: 1.0}
    config = EngineConfig(fee_bps=0, max_position=1.0, breaker_cooldown_bars=cooldown,
                          **{**NO_BREAKERS, "max_drawdown": 0.2})
    return bars, _both_drivers(bars, decisions, config)


def test_a_drawdown_trip_waits_for_an_operator_across_days() -> None:
    bars, result = _drawdown_case(None)
    assert len(bars) > 48  # three trading days go by
    assert _events(result) == [(4, "max_drawdown", "trip", "", 0)]
    assert result.fills["bar"].tolist() == [2, 6]  # the exit passes; every re-entry is blocked
    assert result.paused_bars == len(bars) - 4


def test_a_drawdown_cooldown_releases_after_n_bars_and_rebases_the_peak() -> None:
    _, result = _drawdown_case(5)
    events = _events(result)
    assert events[:2] == [(4, "max_drawdown", "trip", "", 0), (9, "max_drawdown", "release", "cooldown", 5)]
    assert result.breaker_events["value"].iloc[1] == pytest.approx(0.25)  # measured from the old peak
    assert result.fills["bar"].tolist()[:3] == [2, 6, 10]  # bar 9's entry fills: the release came first
    # the peak is now the 75 000 at the release: 70 and 65 (-6.7 %, -13.3 %) pass, 58 (-22.7 %) trips again.
    # From the old 100 000 peak, 70 would already have been a 30 % drawdown.
    assert events[2] == (13, "max_drawdown", "trip", "", 0)
    assert result.breaker_events["value"].iloc[2] == pytest.approx(1 - 58 / 75)
    paused = result.equity["paused"].to_numpy()
    assert paused[4:9].all() and not paused[9:13].any() and paused[13:18].all()


def _losing_flips(days: int) -> tuple[pd.DataFrame, dict[int, float]]:
    bars = _bars([100.0] * (24 * days))  # flat prices: every round trip loses its fees
    return bars, {i: (1.0 if i % 2 == 0 else 0.0) for i in range(len(bars) - 1)}


def test_a_loss_streak_trip_waits_for_an_operator_or_its_cooldown() -> None:
    bars, decisions = _losing_flips(3)
    config = EngineConfig(fee_bps=10, max_position=1.0, **{**NO_BREAKERS, "max_consecutive_losses": 3})
    latched = _both_drivers(bars, decisions, config)
    assert _events(latched) == [(6, "consecutive_losses", "trip", "", 0)]  # no release on any new day
    assert len(latched.trades) == 3

    cooled = _both_drivers(bars, decisions, config.model_copy(update={"breaker_cooldown_bars": 10}))
    events = _events(cooled)
    assert events[:3] == [(6, "consecutive_losses", "trip", "", 0),
                          (16, "consecutive_losses", "release", "cooldown", 10),
                          (22, "consecutive_losses", "trip", "", 0)]  # the count restarted: 3 more losses
    assert cooled.breaker_events["value"].tolist()[:3] == [3.0, 3.0, 3.0]
    assert cooled.trades["exit_time"].iloc[3] > bars["timestamp"].iloc[16]  # entries resumed after the release
    assert len(cooled.trades) > 3 * len(latched.trades)


def test_an_operators_reset_is_recorded_as_a_release_at_the_next_bar() -> None:
    bars, decisions = _losing_flips(1)
    config = EngineConfig(fee_bps=10, max_position=1.0, **{**NO_BREAKERS, "max_consecutive_losses": 3})
    engine = Engine(config, ("flip",))
    aims, codes = _decide(len(bars), decisions)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 12:
            assert engine.ledger.tripped == ["consecutive_losses"]
            engine.ledger.reset_breakers()
            assert engine.ledger.tripped == []
            assert engine.ledger.consecutive_losses == 3  # restarts at the next bar, when recorded
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        if i == 12:
            assert engine.ledger.consecutive_losses == 0
    events = _events(engine.result())
    assert events[:3] == [(6, "consecutive_losses", "trip", "", 0),
                          (12, "consecutive_losses", "release", "operator", 6),
                          (18, "consecutive_losses", "trip", "", 0)]


def test_a_manual_pause_is_never_released_by_a_day_a_cooldown_or_a_reset() -> None:
    bars, decisions = _losing_flips(3)
    config = EngineConfig(fee_bps=0, max_position=1.0, breaker_cooldown_bars=2)
    engine = Engine(config, ("flip",))
    aims, codes = _decide(len(bars), decisions)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 3:
            engine.ledger.pause()
        if i == 30:
            engine.ledger.reset_breakers()
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
        if i >= 3:
            assert engine.ledger.tripped == ["paused"], i
    result = engine.result()
    assert result.breaker_events.empty  # a pause is an operator's command, not a breaker event
    assert result.fills["bar"].tolist() == [1, 2]  # bar 2's entry, due at bar 3's open, is blocked, and all later
    assert result.paused_bars == len(bars) - 3
    engine.ledger.resume()
    assert engine.ledger.tripped == []


def test_a_snapshot_of_the_earlier_state_layout_restores_with_its_latched_breaker() -> None:
    bars, decisions = _losing_flips(2)
    config = EngineConfig(fee_bps=10, max_position=1.0, breaker_cooldown_bars=5,
                          **{**NO_BREAKERS, "max_consecutive_losses": 3})
    engine = Engine(config, ("flip",))
    aims, codes = _decide(len(bars), decisions)
    for i, row in enumerate(bars.itertuples(index=False)):
        if i == 8:
            break
        engine.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
    assert engine.ledger.tripped == ["consecutive_losses"]
    data = json.loads(engine.snapshot())
    ledger = json.loads(data["ledger"])
    ledger["i"] = ledger["i"][:LEGACY_ISTATE_SLOTS]  # what a runtime saved before releases were tracked
    data["ledger"] = json.dumps(ledger)
    restored = Engine(config, ("flip",))
    restored.restore(json.dumps(data))
    assert restored.ledger.tripped == ["consecutive_losses"]
    for i, row in enumerate(bars.itertuples(index=False)):
        if i >= 8:
            restored.step(row.timestamp, row.open, row.high, row.low, row.close, aims[i], codes[i])
    events = restored.result().breaker_events
    release = events[events["action"] == "release"].iloc[0]
    assert release["timestamp"] == bars["timestamp"].iloc[13]  # its cool-down counted from the restore (bar 8)
    assert release["bars_tripped"] == 5


# ------------------------------------------------------------------------------------ backtests, on real data


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


def _portfolio(cooldown: int | None) -> PortfolioConfig:
    caps: dict[str, object] = {"max_drawdown": 0.03}
    if cooldown is not None:
        caps["breaker_cooldown_bars"] = cooldown
    return PortfolioConfig.model_validate({
        "cash": 100_000, "caps": caps,
        "strategies": [{"id": "trend", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1h",
                        "allocation": 1.0, "engine": {"max_position": 1.0, **NO_BREAKERS}}],
    })


@pytest.fixture(scope="module")
def hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-3000:].reset_index(drop=True)


def test_the_portfolio_breaker_waits_for_an_operator_or_its_cooldown(hours: pd.DataFrame) -> None:
    latched = run_portfolio(_portfolio(None), lambda symbol, tf: hours)
    assert latched.events["action"].tolist() == ["trip"]
    tripped_at = latched.events["timestamp"].iloc[0]
    sleeve = latched.sleeves["trend:BTC/USDT"]
    assert (sleeve.fills[sleeve.fills["timestamp"] > tripped_at]["side"] == "sell").all()  # no entry after it
    assert latched.equity["paused"].sum() == (latched.equity["timestamp"] >= tripped_at).sum()

    cooled = run_portfolio(_portfolio(48), lambda symbol, tf: hours)
    events = cooled.events
    assert events["action"].tolist()[:2] == ["trip", "release"] and len(events) > 2
    first_trip, first_release = events.iloc[0], events.iloc[1]
    assert first_trip["timestamp"] == tripped_at
    assert first_release["released_by"] == "cooldown" and first_release["bars_tripped"] == 48
    steps = cooled.equity["timestamp"].tolist()
    assert steps.index(first_release["timestamp"]) - steps.index(first_trip["timestamp"]) == 48
    after = cooled.sleeves["trend:BTC/USDT"].fills
    assert (after[after["timestamp"] > first_release["timestamp"]]["side"] == "buy").any()  # entries resumed
    summary, _ = save_portfolio(cooled, Path("unused"), save=False)
    assert summary["breaker_trips"] == (events["action"] == "trip").sum()
    assert summary["breaker_releases"] == (events["action"] == "release").sum()
    assert summary["paused_bars"] == int(cooled.equity["paused"].sum()) < int(latched.equity["paused"].sum())


def _step_portfolio(stepper: PortfolioStepper, hours: pd.DataFrame, t: int, targets: Targets) -> None:
    row = hours.iloc[t]
    stepper.step(int(epoch_ms(hours["timestamp"])[t]),
                 {"trend:BTC/USDT": Bar(float(row["open"]), float(row["high"]), float(row["low"]),
                                        float(row["close"]), float(targets.exposure[t]), int(targets.reason[t]))})


@pytest.mark.parametrize("how", ["operator", "cooldown"])
def test_a_portfolio_release_rebases_its_peak_and_clears_every_sleeve(hours: pd.DataFrame, how: str) -> None:
    targets = REGISTRY.build("sma_cross").targets(hours)
    stepper = PortfolioStepper(_portfolio(10 if how == "cooldown" else None), {"trend:BTC/USDT": targets.reasons})
    t = 0
    while not stepper.tripped:
        _step_portfolio(stepper, hours, t, targets)
        t += 1
    tripped_at = t - 1
    for t in range(tripped_at + 1, tripped_at + 10):
        _step_portfolio(stepper, hours, t, targets)
    assert stepper.tripped and stepper.engines["trend:BTC/USDT"].ledger.tripped == ["portfolio_drawdown"]
    old_peak, equity = stepper.peak, stepper.equity
    assert equity < old_peak
    if how == "operator":  # what the runtime's reset command does
        for engine in stepper.engines.values():
            engine.ledger.reset_breakers()
        stepper.tripped = False
        stepper.peak = stepper.equity
    _step_portfolio(stepper, hours, tripped_at + 10, targets)
    assert not stepper.tripped and stepper.engines["trend:BTC/USDT"].ledger.tripped == []
    assert stepper.peak == max(equity, stepper.equity) < old_peak
    release = stepper.events[-1]
    assert (release["action"], release["released_by"], release["bars_tripped"]) == ("release", how, 10)
    assert release["timestamp"] == hours["timestamp"].iloc[tripped_at + 10]
    assert release["value"] == (0.0 if how == "operator" else pytest.approx(1 - equity / old_peak))


# --------------------------------------------------------------------------------------------------- the store

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def test_the_store_records_trips_and_releases_at_the_same_bar(open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    events = [BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="daily_loss", value=0.06, threshold=0.05,
                            action="release"),
              BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="daily_loss", value=0.07, threshold=0.05,
                            action="trip"),
              BreakerRecord(sleeve="portfolio", at=T0 + timedelta(hours=1), rule="portfolio_drawdown", value=0.0,
                            threshold=0.25, action="release")]
    first = store.apply_step(StepRecord(breakers=events))
    again = store.apply_step(StepRecord(breakers=events))
    assert (first.new_breaker_events, again.new_breaker_events) == (3, 0)
    stored = [(e.sleeve, e.rule, e.action, e.value) for e in store.breaker_events()]
    assert sorted(stored) == sorted([("main:BTC/USDT", "daily_loss", "release", 0.06),
                                     ("main:BTC/USDT", "daily_loss", "trip", 0.07),
                                     ("portfolio", "portfolio_drawdown", "release", 0.0)])
    with pytest.raises(ValueError, match=r"(?s)BreakerRecord\naction\n.*'trip' or 'release'.*input_value='latched'"):
        BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="daily_loss", value=0.06, threshold=0.05, action="latched")


def test_a_version_2_database_gets_breaker_actions_and_keeps_its_events(
        open_store: Callable[..., StateStore]) -> None:
    store = open_store()
    version_2 = sa.Table(  # the table as version 2 defined it: no action, one event per (sleeve, time, rule)
        "breaker_events", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sleeve", sa.String, nullable=False), sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("rule", sa.String, nullable=False), sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.UniqueConstraint("sleeve", "at", "rule", name="uq_breaker_events_sleeve_at_rule"))
    with store.engine.begin() as conn:
        BreakerEventRow.__table__.drop(conn)  # type: ignore[attr-defined]
        version_2.create(conn)
        conn.execute(version_2.insert().values(sleeve="main:BTC/USDT", at=T0, rule="max_drawdown", value=0.25,
                                               threshold=0.2))
    with store.transaction() as session:
        row = session.get(SchemaVersion, 1)
        assert row is not None
        row.version = 2
    store.close()
    with pytest.raises(Exception, match="schema version 2"):
        open_store(read_only=True)  # a reader never changes the database
    upgraded = open_store()
    assert upgraded.schema_version() == 3
    assert [(e.rule, e.action, e.value) for e in upgraded.breaker_events()] == [("max_drawdown", "trip", 0.25)]
    release = BreakerRecord(sleeve="main:BTC/USDT", at=T0, rule="max_drawdown", value=0.25, threshold=0.2,
                            action="release")
    assert upgraded.apply_step(StepRecord(breakers=[release])).new_breaker_events == 1
    assert [e.action for e in upgraded.breaker_events()] == ["trip", "release"]
    columns = {c["name"] for c in sa.inspect(upgraded.engine).get_columns("breaker_events")}
    assert "action" in columns


# ------------------------------------------------------------------------------------------------- the runtime


def test_the_runtime_stores_the_backtests_trips_and_releases(tmp_path: Path) -> None:
    from runtime.brokers import PaperBroker
    from runtime.feeds import ReplayFeed
    from runtime.node import Node

    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-2000:].reset_index(drop=True)
    config = PortfolioConfig.model_validate({
        "cash": 100_000,
        "strategies": [{"id": "main", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1h",
                        "allocation": 1.0, "params": {"fast": "3", "slow": "8"},
                        "engine": {"max_position": 1.0, "daily_loss": 0.01, "max_trades_per_day": 4,
                                   "max_consecutive_losses": 3, "max_drawdown": None,
                                   "breaker_cooldown_bars": 12}}],
    })
    reference = run_portfolio(config, lambda symbol, tf: hours).sleeves["main:BTC/USDT"].breaker_events
    assert set(reference["action"]) == {"trip", "release"}
    assert {"new_day", "cooldown"} <= set(reference["released_by"])
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    texts: list[str] = []
    try:
        node = Node(store, config, ReplayFeed({"binance:BTC/USDT:1h": hours}, Timeframe.parse("1h"), batch_size=97),
                    {"main:BTC/USDT": "binance:BTC/USDT:1h"}, PaperBroker(),
                    on_event=lambda kind, text: texts.append(text) if kind == "breaker" else None)
        node.start(fresh=True)
        node.run()
        stored = [(e.at, e.rule, e.action) for e in store.breaker_events() if e.sleeve == "main:BTC/USDT"]
    finally:
        store.close()
    expected = [(t.to_pydatetime(), r, a) for t, r, a in
                zip(reference["timestamp"], reference["rule"], reference["action"], strict=True)]
    assert sorted(stored) == sorted(expected)
    assert any("released at the next trading day after" in t for t in texts)
    assert sum(t.startswith("Circuit breaker tripped: ") for t in texts) == (reference["action"] == "trip").sum()


def test_the_daily_summary_counts_trips_and_releases(tmp_path: Path) -> None:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        day = T0.date()
        store.apply_step(StepRecord(breakers=[
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=3), rule="daily_loss", value=0.06,
                          threshold=0.05, action="trip"),
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=24), rule="daily_loss", value=0.06,
                          threshold=0.05, action="release"),
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=5), rule="consecutive_losses", value=5.0,
                          threshold=5.0, action="trip"),
            BreakerRecord(sleeve="main:BTC/USDT", at=T0 + timedelta(hours=9), rule="consecutive_losses", value=5.0,
                          threshold=5.0, action="release"),
        ]))
        summary = daily_summary(store, day)
    finally:
        store.close()
    assert (summary.portfolio.breaker_trips, summary.portfolio.breaker_releases) == (2, 1)
    assert summary.to_json()["portfolio"]["breaker_trips"] == 2
    text = markdown(summary)
    assert "consecutive_losses released" in text and "daily_loss tripped (0.06 > 0.05)" in text
