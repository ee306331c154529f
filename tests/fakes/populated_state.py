"""A populated tradeforge installation for the report and dashboard tests, built by really running things.

* the lake: real BTC/USDT 1m bars (30,000 from the shared data, with two planted bad rows that the quality gate
  quarantines) and real BTC/USDT 1h bars, ingested through ``pipeline.data.ingest``;
* a model registry (SQLite MLflow store) with two small GRU versions of ``hybrid-BTC-USDT-1m``: v1 promoted,
  then v2 promoted, so the production alias is on v2 and a rollback goes back to v1;
* the state store: a paper runtime (``runtime.node.Node``) replayed over the lake's 1m bars with three sleeves
  (``sma_cross``, ``rsi_reversion`` and ``hybrid`` trading the production model), one command acknowledged
  during the run and one still pending after it;
* two stored backtests (``sma_cross`` and ``golden_cross``) of the same bars.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.backtest.run import run_backtest, save_backtest
from pipeline.clock import FixedClock, SystemClock
from pipeline.data.catalog import read_bars
from pipeline.data.ingest import ingest
from pipeline.data.sources.files import FileSource
from pipeline.domain import AssetClass, Instrument, Timeframe
from pipeline.engine import EngineConfig
from pipeline.features.build import FeatureSpec
from pipeline.features.labels import LabelSpec
from pipeline.models import ModelConfig, Scaler, build_net
from pipeline.models.promotion import Scores, decide
from pipeline.models.registry import ModelRegistry
from pipeline.settings import Settings
from pipeline.state import StateStore
from pipeline.strategies import REGISTRY
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.models import ModelScorer
from runtime.node import Node
from tests.conftest import shared_file

MODEL = "hybrid-BTC-USDT-1m"
M1 = Timeframe.parse("1m")
H1 = Timeframe.parse("1h")
GRU = ModelConfig(kind="gru", hidden=4, seq_len=8)
INGEST_NOW = pd.Timestamp("2026-11-21 12:00", tz="UTC")
FEED = "binance:BTC/USDT:1m"


@dataclass(frozen=True)
class Populated:
    settings: Settings
    env: dict[str, str]
    """The TRADEFORGE_* variables that point the dashboard at this installation."""
    bars: pd.DataFrame
    """The 1m bars in the lake (after the quality gate)."""
    backtest_ids: tuple[str, str]
    pending_command_id: int
    production_version: str


def _log_version(registry: ModelRegistry, seed: int, sharpe: float) -> str:
    spec = FeatureSpec()
    columns = spec.columns(AssetClass.CRYPTO)
    torch.manual_seed(seed)
    net = build_net(GRU, len(columns), Scaler.identity(len(columns)))
    example = np.zeros((1, GRU.seq_len, len(columns)), dtype=np.float32)
    artifacts = {
        "feature_spec.json": spec.model_dump_json().encode(),
        "feature_names.json": json.dumps(columns).encode(),
        "label_spec.json": LabelSpec().model_dump_json().encode(),
    }
    params = {f"model.{k}": v for k, v in GRU.model_dump().items()}
    metrics = {"oos_sharpe": sharpe, "oos_max_drawdown": 0.1, "oos_auc": 0.5 + seed / 100, "oos_trades": 3.0}
    logged = registry.log_training(MODEL, net, example, params, [], metrics, artifacts,
                                   {"feature_spec_hash": spec.hash()})
    decision = decide(Scores(sharpe, 0.1, 3), Scores(0.0, 0.1, 3), None)
    registry.record_decision(MODEL, logged.version, decision)
    return logged.version


def _ingest_lake(settings: Settings, root: Path) -> None:
    minutes = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[200_000:230_000]
    minutes = minutes.reset_index(drop=True)
    planted = minutes.copy()
    planted.loc[1000, "low"] = -1.0  # non-positive price
    planted.loc[2000, "close"] = np.nan  # non-finite value
    path = root / "incoming" / "btc-1m.parquet"
    path.parent.mkdir(parents=True)
    planted.to_parquet(path)
    ingest(FileSource(path, FixedClock(INGEST_NOW), "binance"), "BTC/USDT", M1, settings, FixedClock(INGEST_NOW))
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-3000:].reset_index(drop=True)
    hours_path = root / "incoming" / "btc-1h.parquet"
    hours.to_parquet(hours_path)
    ingest(FileSource(hours_path, FixedClock(INGEST_NOW), "binance"), "BTC/USDT", H1, settings,
           FixedClock(INGEST_NOW))


def _run_runtime(settings: Settings, registry: ModelRegistry, bars: pd.DataFrame) -> int:
    config = PortfolioConfig.model_validate({"cash": 100_000, "strategies": [
        {"id": "trend", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 0.5,
         "params": {"fast": 10, "slow": 30}, "engine": {"max_position": 1.0, "max_consecutive_losses": 6}},
        {"id": "reversion", "strategy": "rsi_reversion", "symbols": ["BTC/USDT"], "timeframe": "1m",
         "allocation": 0.3, "engine": {"max_position": 0.5, "max_consecutive_losses": None}},
        {"id": "ml", "strategy": "hybrid", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 0.2,
         "params": {"base": "sma_cross", "threshold": 0.0},
         "engine": {"max_position": 1.0, "max_consecutive_losses": None}},
    ]})
    store = StateStore(settings.state_url)
    scorer = ModelScorer(registry, MODEL, AssetClass.CRYPTO, SystemClock(), poll_seconds=3600)
    sleeves = {"trend:BTC/USDT": FEED, "reversion:BTC/USDT": FEED, "ml:BTC/USDT": FEED}
    node = Node(store, config, ReplayFeed({FEED: bars}, M1, batch_size=720), sleeves, PaperBroker(),
                scorers={"ml:BTC/USDT": scorer})
    node.start(fresh=True)
    store.add_command("resume", "cli")  # applied and acknowledged by the run
    node.run()
    pending = store.add_command("pause", "telegram")  # nobody runs to acknowledge it
    store.close()
    return pending


def build(root: Path) -> Populated:
    """Build everything under ``root`` (takes about 20 s)."""
    settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                        prefect_api_url="http://127.0.0.1:9/api", _env_file=None)  # type: ignore[call-arg]
    _ingest_lake(settings, root)
    bars = read_bars(settings, "BTC/USDT", M1, venue="binance")
    registry = ModelRegistry(settings.mlflow_tracking_uri)
    first = _log_version(registry, 1, 0.8)
    registry.promote(MODEL, first, "gate")
    second = _log_version(registry, 2, 1.2)
    registry.promote(MODEL, second, "gate")
    pending = _run_runtime(settings, registry, bars)
    instrument = Instrument.of("binance", "BTC/USDT")
    ids = []
    for name, params in (("sma_cross", {"fast": "10", "slow": "30"}), ("golden_cross", {})):
        result = run_backtest(bars, REGISTRY.build(name, params), EngineConfig(max_position=1.0), M1, instrument,
                              params=params)
        save_backtest(result, settings.data_dir / "backtests")
        ids.append(result.run_id)
    env = {
        "TRADEFORGE_DATA_DIR": str(settings.data_dir),
        "TRADEFORGE_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "TRADEFORGE_PREFECT_API_URL": settings.prefect_api_url,
    }
    return Populated(settings=settings, env=env, bars=bars, backtest_ids=(ids[0], ids[1]),
                     pending_command_id=pending, production_version=second)
