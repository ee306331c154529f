"""Runtime benchmark: replay throughput of the paper runtime, and closed bar → order latency with an LSTM.

1. Replay: the node replays the real BTC/USDT 1m file (653,623 bars) through a two-sleeve portfolio with the
   paper broker and a SQLite state store, as fast as possible (batches of 8,192 bars, one transaction each).
   Prints bars/s (target >= 20,000).
2. Latency: the live path, one closed bar at a time (one transaction per bar). The strategy is the hybrid
   (golden cross confirmed by a model) whose score comes from an LSTM (hidden 64, sequence 64) run on the
   features of the latest bars at every bar. Measured from the bar's arrival to its order being committed to
   the store: p50/p99 over 2,000 bars (target p99 <= 20 ms).

    python bench/runtime.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.domain import AssetClass, Timeframe  # noqa: E402
from pipeline.features import FeatureSpec, build_features  # noqa: E402
from pipeline.models import ModelConfig, build_net, predict_window  # noqa: E402
from pipeline.portfolio import PortfolioConfig  # noqa: E402
from pipeline.state import StateStore  # noqa: E402
from pipeline.strategies import REGISTRY, Targets  # noqa: E402
from pipeline.strategies.model_gate import ModelGated  # noqa: E402
from runtime.brokers import PaperBroker  # noqa: E402
from runtime.feeds import ReplayFeed  # noqa: E402
from runtime.node import Node  # noqa: E402

M1 = Timeframe.parse("1m")


def real_minutes() -> pd.DataFrame:
    for parent in REPO.parents:
        path = parent / "shared" / "data" / "binance_BTC-USDT_1m.parquet"
        if path.exists():
            return pd.read_parquet(path)
    raise SystemExit("real BTC/USDT 1m data not found next to the repository")


def portfolio(strategies: list[dict[str, object]]) -> PortfolioConfig:
    return PortfolioConfig.model_validate({"cash": 100_000, "strategies": strategies})


def replay(bars: pd.DataFrame) -> None:
    config = portfolio([
        {"id": "trend", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 0.6,
         "params": {"fast": 10, "slow": 30}, "engine": {"max_position": 1.0, "max_consecutive_losses": None}},
        {"id": "reversion", "strategy": "rsi_reversion", "symbols": ["BTC/USDT"], "timeframe": "1m",
         "allocation": 0.4, "engine": {"max_position": 0.5}},
    ])
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(f"sqlite:///{folder}/state.db")
        key = "file:BTC/USDT:1m"
        node = Node(store, config, ReplayFeed({key: bars}, M1), {"trend:BTC/USDT": key, "reversion:BTC/USDT": key},
                    PaperBroker())
        node.start(fresh=True)
        started = time.perf_counter()
        summary = node.run()
        seconds = time.perf_counter() - started
        store.close()
    print(f"replay: {summary.bars:,} bars, {summary.fills:,} fills, {summary.trades:,} trades in {seconds:.2f} s "
          f"= {summary.bars / seconds:,.0f} bars/s (paper broker, SQLite, 2 sleeves)")


class LstmHybrid:
    """Golden cross confirmed by an LSTM's probability, scored on the latest window at every bar."""

    name = "lstm_hybrid"
    requires: tuple[str, ...] = ()
    warmup = 200

    def __init__(self, net: torch.nn.Module, spec: FeatureSpec, seq_len: int, tail: int = 600) -> None:
        self.net, self.spec, self.seq_len, self.tail = net, spec, seq_len, tail
        self.gate = ModelGated(REGISTRY.build("golden_cross"), threshold=0.0)

    def targets(self, history: pd.DataFrame) -> Targets:
        window = history.iloc[-self.tail:]
        scores = np.full(len(window), np.nan)
        if len(window) > self.spec.warmup + self.seq_len:
            features = build_features(window.reset_index(drop=True), self.spec, AssetClass.CRYPTO)
            matrix = features.drop(columns="timestamp").to_numpy(dtype=np.float32)
            scores[-1] = predict_window(self.net, matrix[-self.seq_len:])
        decided = self.gate.targets(window.assign(model_score=scores))
        exposure = np.full(len(history), np.nan)
        reason = np.full(len(history), -1, dtype=np.int64)
        exposure[-len(window):] = decided.exposure
        reason[-len(window):] = decided.reason
        return Targets(exposure, reason, decided.reasons)


def latency(bars: pd.DataFrame, n: int = 2000) -> None:
    torch.set_num_threads(1)
    spec = FeatureSpec()
    columns = len(spec.columns(AssetClass.CRYPTO))
    net = build_net(ModelConfig(kind="lstm", hidden=64, seq_len=64), columns)
    net.eval()
    strategy = LstmHybrid(net, spec, 64)
    REGISTRY.register("lstm_hybrid", lambda params: strategy)
    config = portfolio([{"id": "ml", "strategy": "lstm_hybrid", "symbols": ["BTC/USDT"], "timeframe": "1m",
                         "allocation": 1.0, "engine": {"max_position": 1.0}}])
    sample = bars.iloc[: 700 + n].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as folder:
        store = StateStore(f"sqlite:///{folder}/state.db")
        key = "file:BTC/USDT:1m"
        feed = ReplayFeed({key: sample}, M1, speed=1e12, sleep=lambda _s: None)  # one bar per batch: live path
        node = Node(store, config, feed, {"ml:BTC/USDT": key}, PaperBroker())
        node.start(fresh=True)
        timings = []
        for batch in feed.batches(node.cursors):
            started = time.perf_counter()
            node._process(batch)
            timings.append(time.perf_counter() - started)
        store.close()
    measured = np.array(timings[700:]) * 1000
    p50, p99 = np.percentile(measured, [50, 99])
    print(f"latency: closed bar -> decision (features + LSTM h64/seq64 + engine) -> committed to the store, "
          f"{len(measured):,} bars: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {measured.max():.2f} ms "
          f"({'meets' if p99 <= 20 else 'misses'} the p99 <= 20 ms target)")


def main() -> None:
    bars = real_minutes()
    replay(bars)
    latency(bars.iloc[300_000:].reset_index(drop=True))


if __name__ == "__main__":
    main()
