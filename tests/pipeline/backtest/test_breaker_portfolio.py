"""The portfolio's drawdown breaker: latched until an operator's reset or its cool-down, either rebasing its peak."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.backtest.portfolio import Bar, PortfolioConfig, PortfolioStepper, run_portfolio
from pipeline.backtest.run import save_portfolio
from pipeline.domain import epoch_ms
from pipeline.strategies import REGISTRY, Targets
from tests.conftest import shared_file
from tests.pipeline.backtest.breaker_helpers import NO_BREAKERS


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
