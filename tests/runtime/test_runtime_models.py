"""The runtime trades the production model: loaded by alias, swapped at a bar boundary when the alias moves."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.domain import AssetClass, Timeframe
from pipeline.features.build import FeatureSpec
from pipeline.features.labels import LabelSpec
from pipeline.models import ModelConfig, Scaler, build_net
from pipeline.models.registry import PRODUCTION, ModelRegistry
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.models import ModelScorer
from runtime.node import Node
from tests.conftest import shared_file

NAME = "hybrid-BTC-USDT-1m"
CONFIG = ModelConfig(kind="gru", hidden=4, seq_len=8)


def _log_version(registry: ModelRegistry, seed: int) -> str:
    spec = FeatureSpec()
    columns = spec.columns(AssetClass.CRYPTO)
    torch.manual_seed(seed)
    net = build_net(CONFIG, len(columns), Scaler.identity(len(columns)))
    example = np.zeros((1, CONFIG.seq_len, len(columns)), dtype=np.float32)
    artifacts = {
        "feature_spec.json": spec.model_dump_json().encode(),
        "feature_names.json": json.dumps(columns).encode(),
        "label_spec.json": LabelSpec().model_dump_json().encode(),
    }
    params = {f"model.{k}": v for k, v in CONFIG.model_dump().items()}
    logged = registry.log_training(NAME, net, example, params, [], {"oos_sharpe": 0.1}, artifacts,
                                   {"feature_spec_hash": spec.hash()})
    return logged.version


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def _node(tmp_path: Path, registry: ModelRegistry, bars: pd.DataFrame) -> tuple[Node, StateStore]:
    config = PortfolioConfig.model_validate({"cash": 100_000, "strategies": [
        {"id": "ml", "strategy": "hybrid", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 1.0,
         "params": {"base": "sma_cross", "threshold": 0.0}, "engine": {"max_position": 1.0}}]})
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    key = "file:BTC/USDT:1m"
    scorer = ModelScorer(registry, NAME, AssetClass.CRYPTO, FixedClock("2026-01-01"), poll_seconds=0)
    node = Node(store, config, ReplayFeed({key: bars}, Timeframe.parse("1m"), batch_size=500),
                {"ml:BTC/USDT": key}, PaperBroker(), scorers={"ml:BTC/USDT": scorer})
    return node, store


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[100_000:103_000].reset_index(drop=True)


def test_moving_the_alias_during_a_replay_switches_the_model_at_the_next_bar(
    tmp_path: Path, registry: ModelRegistry, bars: pd.DataFrame
) -> None:
    first, second = _log_version(registry, 1), _log_version(registry, 2)
    registry.promote(NAME, first, "test")
    node, store = _node(tmp_path, registry, bars)
    node.start(fresh=True)
    batches = list(node.feed.batches(node.cursors))
    for batch in batches[:3]:
        node._process(batch)
    assert [d.version for d in store.deployments()] == [first]
    mlflow.MlflowClient(registry.tracking_uri).set_registered_model_alias(NAME, PRODUCTION, second)  # as in the UI
    for batch in batches[3:]:
        node._process(batch)
    deployments = store.deployments()
    assert [d.version for d in deployments] == [first, second]
    assert deployments[1].reason == f"production alias moved from v{first}"
    assert node.scorers["ml:BTC/USDT"].version == second
    fills = store.fills()
    assert fills, "the hybrid strategy traded with a model loaded"
    switch_bar = pd.Timestamp(int(batches[3].times[0]), unit="ms", tz="UTC")
    late_trades = [t for t in store.trades() if pd.Timestamp(t.exit_time) >= switch_bar]
    assert all(t.model_version == second for t in late_trades)


def test_without_a_production_model_the_sleeve_stays_flat_and_says_why(
    tmp_path: Path, registry: ModelRegistry, bars: pd.DataFrame
) -> None:
    _log_version(registry, 1)  # registered, but nobody promoted it
    node, store = _node(tmp_path, registry, bars)
    node.start(fresh=True)
    state = store.bot_state()
    assert state is not None
    assert f"no production model for {NAME}" in state.status_reason
    node.run()
    assert store.fills() == []
