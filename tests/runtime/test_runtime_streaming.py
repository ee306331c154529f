"""The runtime decides as a stream: bounded work and memory per bar, restarts that continue an unbroken run.

Every sleeve's strategy and model score advance by the bars of each batch only; their state is committed with
the ledgers, so a restart whose feed holds only a recent window (as a live feed's warm-up does) still makes the
decisions of an unbroken run, recursive indicators (Wilder's RSI, EMAs) included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.backtest.portfolio import Bar, PortfolioConfig, PortfolioStepper, run_portfolio, sleeves_of
from pipeline.clock import FixedClock
from pipeline.domain import AssetClass, Timeframe, epoch_ms
from pipeline.features.build import build_features
from pipeline.models.registry import PRODUCTION, ModelRegistry
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.models import ModelScorer
from runtime.node import Node
from tests.conftest import shared_file
from tests.runtime.test_runtime_models import NAME, _log_version

M1 = Timeframe.parse("1m")
KEY = "file:BTC/USDT:1m"
RULES = {"cash": 100_000, "strategies": [
    {"id": "trend", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 0.5,
     "params": {"fast": 10, "slow": 30}, "engine": {"max_position": 1.0, "max_consecutive_losses": None}},
    {"id": "reversion", "strategy": "rsi_reversion", "symbols": ["BTC/USDT"], "timeframe": "1m",
     "allocation": 0.5, "engine": {"max_position": 0.5}}]}
HYBRID = {"cash": 100_000, "strategies": [
    {"id": "ml", "strategy": "hybrid", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 1.0,
     "params": {"base": "rsi_reversion", "threshold": 0.0}, "engine": {"max_position": 1.0}}]}


@pytest.fixture(scope="module")
def minutes() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[300_000:306_000].reset_index(drop=True)


def _fills(store: StateStore) -> pd.DataFrame:
    rows = [(f.sleeve, pd.Timestamp(f.at), f.side, float(f.qty), float(f.price), f.reason) for f in store.fills()]
    frame = pd.DataFrame(rows, columns=["sleeve", "timestamp", "side", "qty", "price", "reason"])
    return frame.sort_values(["timestamp", "sleeve", "side"]).reset_index(drop=True)


def _node(store: StateStore, config: dict[str, object], bars: pd.DataFrame, batch: int,
          scorer: ModelScorer | None = None) -> Node:
    portfolio = PortfolioConfig.model_validate(config)
    feed_of = {f"{s.id}:BTC/USDT": KEY for s in portfolio.strategies}
    scorers = {} if scorer is None else {"ml:BTC/USDT": scorer}
    return Node(store, portfolio, ReplayFeed({KEY: bars}, M1, batch_size=batch), feed_of, PaperBroker(),
                scorers=scorers)


def _unbroken(tmp_path: Path, config: dict[str, object], bars: pd.DataFrame, batch: int,
              scorer: ModelScorer | None = None) -> pd.DataFrame:
    store = StateStore(f"sqlite:///{tmp_path / f'unbroken-{batch}.db'}")
    node = _node(store, config, bars, batch, scorer)
    node.start(fresh=True)
    node.run()
    return _fills(store)


def _restarted(tmp_path: Path, config: dict[str, object], bars: pd.DataFrame, stop_at: int, window: int,
               scorers: tuple[ModelScorer, ModelScorer] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Run to ``stop_at``, then restart on a feed that holds only the ``window`` bars before it and the rest."""
    url = f"sqlite:///{tmp_path / 'restarted.db'}"
    first = _node(StateStore(url), config, bars.iloc[:stop_at], 700, None if scorers is None else scorers[0])
    first.start(fresh=True)
    first.run()
    store = StateStore(url)
    later = bars.iloc[stop_at - window :].reset_index(drop=True)
    second = _node(store, config, later, 700, None if scorers is None else scorers[1])
    notes = second.start(fresh=False)
    second.run()
    return _fills(store), notes


def test_a_restart_on_a_recent_window_decides_like_an_unbroken_run(tmp_path: Path, minutes: pd.DataFrame) -> None:
    expected = _unbroken(tmp_path, RULES, minutes, 700)
    assert len(expected) > 50
    fills, notes = _restarted(tmp_path, RULES, minutes, stop_at=3_333, window=100)
    assert any("trend:BTC/USDT: decision stream restored" in note for note in notes)
    pd.testing.assert_frame_equal(fills, expected)


@pytest.mark.slow
def test_one_bar_per_batch_decides_like_whole_batches(tmp_path: Path, minutes: pd.DataFrame) -> None:
    bars = minutes.iloc[:2_500]
    whole = _unbroken(tmp_path, RULES, bars, 8_192)
    one = _unbroken(tmp_path, RULES, bars, 1)
    assert len(whole) > 20
    pd.testing.assert_frame_equal(one, whole)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    registry.client.set_registered_model_alias(NAME, PRODUCTION, _log_version(registry, seed=3))
    return registry


def _scorer(registry: ModelRegistry) -> ModelScorer:
    return ModelScorer(registry, NAME, AssetClass.CRYPTO, FixedClock("2026-01-01"), poll_seconds=3600)


def test_the_model_scores_each_bar_once_and_matches_the_batch_score(registry: ModelRegistry,
                                                                      minutes: pd.DataFrame) -> None:
    bars = minutes.iloc[:1_200]
    scorer = _scorer(registry)
    assert scorer.poll() is not None
    model, spec = scorer.model, scorer.spec
    assert model is not None and spec is not None
    features = build_features(bars, spec, AssetClass.CRYPTO)
    expected = np.full(len(bars), np.nan)
    expected[spec.warmup :] = model.predict(features, spec.hash())
    batch = scorer.score(bars)
    streamed = np.concatenate([scorer.advance(bars.iloc[i : i + 1]) for i in range(len(bars))])
    first = spec.warmup + model.seq_len - 1
    assert np.isnan(streamed[:first]).all() and np.isnan(batch[:first]).all()
    assert np.isfinite(streamed[first:]).all()
    # float32 network: the same windows scored in batches of other sizes may differ in the last bits
    np.testing.assert_allclose(batch[first:], expected[first:], rtol=0, atol=1e-6)
    np.testing.assert_allclose(streamed[first:], expected[first:], rtol=0, atol=1e-6)
    state = scorer.state()
    assert state is not None
    for _ in range(3):  # what the scorer keeps does not grow with the bars it has seen
        scorer.advance(minutes.iloc[len(bars) : len(bars) + 500])
        bars = minutes.iloc[: len(bars) + 500]
        later = scorer.state()
        assert later is not None
        assert len(json.dumps(later)) == len(json.dumps(state))


def test_an_ml_sleeve_restarts_with_its_model_features(tmp_path: Path, registry: ModelRegistry,
                                                       minutes: pd.DataFrame) -> None:
    bars = minutes.iloc[:3_000]
    expected = _unbroken(tmp_path, HYBRID, bars, 700, _scorer(registry))
    assert len(expected) > 10
    fills, notes = _restarted(tmp_path, HYBRID, bars, stop_at=1_777, window=300,
                              scorers=(_scorer(registry), _scorer(registry)))
    assert any("decision stream and model features restored" in note for note in notes)
    pd.testing.assert_frame_equal(fills, expected)


def test_the_portfolio_stepped_bar_by_bar_equals_one_compiled_pass(minutes: pd.DataFrame) -> None:
    """The per-bar path (venue brokers) and the batch path (backtest, paper replay) are the same kernel: with
    the gross-exposure cap and the portfolio breaker on, both give the same fills and marks bit for bit."""
    config = PortfolioConfig.model_validate({**RULES, "caps": {"max_gross_exposure": 0.6, "max_drawdown": 0.004,
                                                               "breaker_cooldown_bars": 300}})
    bars = minutes.iloc[:4_000]
    batch = run_portfolio(config, lambda _symbol, _tf: bars)
    assert (batch.events["action"] == "trip").any() and (batch.events["action"] == "release").any()
    targets = {s.key: s.strategy.targets(bars) for s in sleeves_of(config)}
    stepper = PortfolioStepper(config, {key: t.reasons for key, t in targets.items()})
    marks = []
    for i, (ms, o, h, low, c) in enumerate(zip(epoch_ms(bars["timestamp"]), bars["open"], bars["high"], bars["low"],
                                                bars["close"], strict=True)):
        due = {key: Bar(o, h, low, c, float(t.exposure[i]), int(t.reason[i])) for key, t in targets.items()}
        marks.append(stepper.step(int(ms), due)["equity"])
    np.testing.assert_array_equal(np.array(marks), batch.equity["equity"].to_numpy())
    for key, engine in stepper.engines.items():
        pd.testing.assert_frame_equal(engine.result().fills, batch.sleeves[key].fills)
    assert pd.DataFrame(stepper.events)["action"].tolist() == batch.events["action"].tolist()
