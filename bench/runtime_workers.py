"""What runs inside the measured processes of the runtime benchmark (``bench/runtime.py``).

``bench/runtime.py`` starts every measurement as a fresh process of itself (``--worker setup|latency|replay``,
see ``run_worker`` there), and that process runs one of the functions in ``WORKERS``, prints the JSON document
it returns on its last line of output and exits. This module holds those functions, what they measure with
(``TimedFeed``, the resident-memory readers) and what they are shared with the orchestration: the measured
portfolios (``HYBRID``, ``TWO_SLEEVES``) and the fixed measurement settings.

It is imported by ``bench/runtime.py`` from the folder beside it, so the benchmark's code is always that file's
copy, whatever checkout is measured. It imports nothing of the product (``pipeline``, ``runtime``) when
imported, only inside the workers: ``bench/runtime.py`` puts the measured checkout's root (``--checkout DIR``)
first on ``sys.path`` only after parsing its arguments, and the workers' imports must find that checkout's code
(and the ``runtime`` package, not ``bench/runtime.py``). For the same reason this module never imports
``bench/runtime.py``: the name ``runtime`` belongs to the product.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SYMBOL = "BTC/USDT"
WARMUP_BARS = 2
MIN_BARS = 5
TRAIN_BARS = 4_000
MB = 1e6

HYBRID: dict[str, Any] = {
    "cash": 100_000,
    "strategies": [
        {"id": "ml", "strategy": "hybrid", "symbols": [SYMBOL], "timeframe": "1m", "allocation": 1.0,
         "params": {"base": "sma_cross", "fast": 10, "slow": 30, "threshold": 0.5},
         "engine": {"max_position": 1.0}},
    ],
}
TWO_SLEEVES: dict[str, Any] = {
    "cash": 100_000,
    "strategies": [
        {"id": "trend", "strategy": "sma_cross", "symbols": [SYMBOL], "timeframe": "1m", "allocation": 0.6,
         "params": {"fast": 10, "slow": 30}, "engine": {"max_position": 1.0, "max_consecutive_losses": None}},
        {"id": "reversion", "strategy": "rsi_reversion", "symbols": [SYMBOL], "timeframe": "1m",
         "allocation": 0.4, "engine": {"max_position": 0.5}},
    ],
}


# ---------------------------------------------------------------------------------------------- helpers
def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MB


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def percentiles(values_ms: list[float]) -> dict[str, float]:
    import numpy as np

    p50, p99 = np.percentile(values_ms, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(max(values_ms))}


class TimedFeed:
    """A feed as the node sees it, with the clock read around each batch.

    Every attribute is the wrapped feed's. ``batches`` yields the wrapped feed's batches unchanged and notes
    how long the node held each one: from handing it over until the node asks for the next batch. After
    ``warmup`` uncounted batches it ends the replay once ``bars`` batches were measured, or once at least
    ``min_bars`` were and ``budget_s`` seconds of measured time have passed. The process's resident memory is
    read after each measured batch, outside the measured time.
    """

    def __init__(self, inner: Any, warmup: int, bars: int, budget_s: float, min_bars: int) -> None:
        self.inner = inner
        self.warmup, self.bars, self.budget_s, self.min_bars = warmup, bars, budget_s, min_bars
        self.held: list[float] = []
        self.rss: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def batches(self, after: dict[str, int | None]) -> Iterator[Any]:
        first_measured: float | None = None
        for batch in self.inner.batches(after):
            handed = time.perf_counter()
            yield batch
            asked = time.perf_counter()
            self.held.append(asked - handed)
            measured = len(self.held) - self.warmup
            if measured == 1:
                first_measured = handed
            if measured >= 1:
                self.rss.append(rss_mb())
            if measured >= self.bars:
                return
            if first_measured is not None and measured >= self.min_bars and asked - first_measured > self.budget_s:
                return


def wired(portfolio: dict[str, Any], **options: Any) -> Any:
    """The runtime exactly as ``tradeforge runtime --mode paper --data FILE --portfolio FILE --fresh`` builds it
    (``runtime.wiring.wire`` on a ``RuntimeConfig``), with ``portfolio`` written to a YAML file in this
    process's folder."""
    import yaml

    from pipeline.settings import load_settings
    from runtime.config import RuntimeConfig
    from runtime.wiring import wire

    path = Path("portfolio.yaml").resolve()
    path.write_text(yaml.safe_dump(portfolio, sort_keys=False))
    config = RuntimeConfig.of(mode="paper", portfolio=path, fresh=True, **options)
    return wire(config, load_settings())


# ---------------------------------------------------------------------------------------------- workers
def latency_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One history size: the hybrid sleeve with its production LSTM, one bar per transaction (``--batch 1``)."""
    import pandas as pd

    from pipeline.state import CursorRecord, StepRecord

    size, bars = args.size, args.bars
    runtime = wired(HYBRID, data=Path(args.data), start=args.start, batch=1)
    node = runtime.node
    (key, frame), = node.feed.frames.items()
    if len(frame) != size + bars:
        raise SystemExit(f"expected {size + bars} bars from {args.start} on, got {len(frame)}")
    cursor = pd.Timestamp(frame["timestamp"].iloc[size - WARMUP_BARS - 1]).to_pydatetime()
    runtime.store.apply_step(StepRecord(cursors=[CursorRecord(feed=key, last_bar=cursor)]))
    feed = node.feed = TimedFeed(node.feed, WARMUP_BARS, bars, args.budget, MIN_BARS)
    try:
        node.start(fresh=True)
        scorer = next(iter(node.scorers.values()))
        if scorer.version is None:
            raise SystemExit("the hybrid sleeve has no production model loaded")
        summary = node.run()
    finally:
        runtime.close()
    measured = [s * 1000 for s in feed.held[WARMUP_BARS:]]
    return {
        "size": size,
        "bars": len(measured),
        **percentiles(measured),
        "first_bars_ms": [s * 1000 for s in feed.held[:WARMUP_BARS]],
        "bars_ms": measured,
        "rss_mb": feed.rss[-1],
        "rss_trace_mb": feed.rss,
        "peak_rss_mb": peak_rss_mb(),
        "orders": summary.orders,
        "fills": summary.fills,
        "model": f"{scorer.model_name} v{scorer.version}",
    }


def replay_worker(args: argparse.Namespace) -> dict[str, Any]:
    """The whole file through the two-sleeve portfolio at max speed (the CLI's default batch), in this process."""
    runtime = wired(TWO_SLEEVES, data=Path(args.data))
    try:
        runtime.node.start(fresh=True)
        started = time.perf_counter()
        summary = runtime.node.run()
        seconds = time.perf_counter() - started
    finally:
        runtime.close()
    return {"bars": summary.bars, "fills": summary.fills, "trades": summary.trades, "seconds": seconds,
            "bars_per_s": summary.bars / seconds, "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()}


def setup_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train the LSTM on the file's first bars and register it in the configured MLflow store, forced to
    production (as ``tradeforge train --model lstm --hidden 64 --seq-len 64 --epochs 1 --folds 1 --base
    sma_cross --threshold 0.5 --promote force`` does); returns the model, the seconds it took and, for every
    history size, the first bar the latency run loads."""
    from pipeline.data.sources.files import read_bar_series
    from pipeline.domain import Instrument, Timeframe
    from pipeline.models import ModelConfig
    from pipeline.models.lifecycle import TrainRequest, train_and_register
    from pipeline.models.registry import ModelRegistry
    from pipeline.settings import load_settings

    settings = load_settings()
    every, tf = read_bar_series(Path(args.data), Timeframe.parse("1m"))
    first = len(every) - args.bars  # the measured bars are the file's last ones, at every size
    sizes = [int(size) for size in args.sizes.split(",")]
    if max(sizes) > first:
        raise SystemExit(f"the file holds {len(every):,} bars: sizes up to {first:,} fit before the measured bars")
    started = time.perf_counter()
    request = TrainRequest(model=ModelConfig(kind="lstm", hidden=64, seq_len=64, epochs=1), base_strategy="sma_cross",
                           threshold=0.5, folds=1, promote="force")
    outcome = train_and_register(every.iloc[:TRAIN_BARS].reset_index(drop=True), Instrument.of("binance", SYMBOL), tf,
                                 request, ModelRegistry(settings.mlflow_tracking_uri))
    return {"model": f"{outcome.model_name} v{outcome.version}", "train_seconds": time.perf_counter() - started,
            "starts": {str(size): every["timestamp"].iloc[first - size].isoformat() for size in sizes}}


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "setup": setup_worker, "latency": latency_worker, "replay": replay_worker,
}
"""The measurements ``bench/runtime.py --worker KIND`` runs, by kind."""
