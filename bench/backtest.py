"""Backtest benchmark: the standard workload (sma_cross 10/30, all in, fee 10 bps) through the engine core.

Data: 100k and 1M bars of deterministic synthetic 1-minute bars (geometric Brownian motion, seed 42) and the
real BTC/USDT 1m file. For each: bars/s of the engine run with breakers off (the standard workload), and
again with every risk check and breaker switched on at thresholds just beyond what the run reaches (so they
are evaluated on every bar but do not trip); bars/s of a trader's own strategies, their decisions included: one
that reads a higher timeframe (``examples/strategies/daily_filtered.py``) and one that also enters with a limit
order and protects the position with a stop-loss and a trailing stop (``pullback_entry.py``); and the peak
memory of a 1M-bar run.

    python bench/backtest.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))

from synthetic import gbm_bars  # noqa: E402

from pipeline.backtest.run import warm_up  # noqa: E402
from pipeline.engine import EngineConfig, EngineResult, run  # noqa: E402
from pipeline.strategies import REGISTRY  # noqa: E402

STANDARD = EngineConfig(fee_bps=10, cash=100_000, max_position=1.0).without_breakers()


def non_tripping(result: EngineResult, bars: pd.DataFrame) -> EngineConfig:
    """Every breaker and risk check on, with limits just beyond what the breakers-off run reached."""
    equity = result.equity["equity"].to_numpy()
    drawdown = float(np.max(1 - equity / np.maximum.accumulate(equity)))
    day = bars["timestamp"].dt.floor("D").to_numpy()
    previous_close = np.r_[STANDARD.cash, equity[:-1]]  # a day opens at the equity of the bar before it
    opening = pd.Series(previous_close).groupby(day).transform("first").to_numpy()
    daily_loss = float(np.max(1 - equity / opening))
    fills_per_day = int(result.fills.groupby(result.fills["timestamp"].dt.floor("D")).size().max())
    losses = (result.trades["pnl"] < 0).astype(int).to_numpy()
    streak = best = 0
    for loss in losses:
        streak = streak + 1 if loss else 0
        best = max(best, streak)
    return EngineConfig(
        fee_bps=10, cash=100_000, max_position=1.0, leverage=1.0, min_notional=1e-12, stop_loss=0.99,
        take_profit=1e6, max_drawdown=min(drawdown * 1.0001 + 1e-12, 1 - 1e-15),
        daily_loss=min(daily_loss * 1.0001 + 1e-9, 1 - 1e-15),
        max_consecutive_losses=best + 1, max_trades_per_day=fills_per_day + 2, session_orders="wait",
    )


def measure(bars: pd.DataFrame, config: EngineConfig, repeat: int) -> tuple[float, EngineResult]:
    strategy = REGISTRY.build("sma_cross", {"fast": "10", "slow": "30"})
    targets = strategy.targets(bars)
    timings = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run(bars, targets.exposure, targets.reason, targets.reasons, config)
        timings.append(time.perf_counter() - started)
    assert result is not None
    return statistics.median(timings), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"kernel load/compile (one time): {warm_up():.2f} s")
    real = next((p / "shared" / "data" / "binance_BTC-USDT_1m.parquet" for p in REPO.parents
                 if (p / "shared" / "data" / "binance_BTC-USDT_1m.parquet").exists()), None)
    datasets = [("GBM 100k", gbm_bars(100_000)), ("GBM 1M", gbm_bars(1_000_000))]
    if real is not None:
        datasets.append(("BTC/USDT 1m (real)", pd.read_parquet(real)))
    print(f"{'data':<20} {'bars':>10} {'standard bars/s':>16} {'breakers on bars/s':>19} {'cost':>6} "
          f"{'trades':>7} {'trips':>6}")
    for label, bars in datasets:
        seconds, result = measure(bars, STANDARD, args.repeat)
        guarded = non_tripping(result, bars)
        guarded_seconds, guarded_result = measure(bars, guarded, args.repeat)
        same = guarded_result.fills["qty"].equals(result.fills["qty"])
        print(f"{label:<20} {len(bars):>10,} {len(bars) / seconds:>16,.0f} {len(bars) / guarded_seconds:>19,.0f} "
              f"{guarded_seconds / seconds:>5.2f}x {len(result.trades):>7,} {len(guarded_result.breaker_events):>6}"
              f"{'' if same else '  (fills differ!)'}")
    examples = (  # strategies of a trader's own, decisions included
        ("daily_filtered.py:DailyFiltered", {}, "daily_filtered (1h higher timeframe)"),
        ("pullback_entry.py:PullbackEntry", {"offset": 0.0005, "stop_loss": 0.005, "trailing_stop": 0.01},
         "pullback_entry (limit entry, stop-loss, trailing stop, 1h higher timeframe)"),
    )
    for reference, extra, what in examples:
        example = REPO / "examples" / "strategies" / reference.split(":")[0]
        if not example.exists():
            continue
        own = REGISTRY.build(f"{REPO / 'examples' / 'strategies' / reference}",
                             {"fast": 10, "slow": 30, "higher": "1h", **extra})
        for label, bars in datasets:
            timings = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                targets = own.targets(bars)
                result = run(bars, targets.exposure, targets.reason, targets.reasons, STANDARD,
                             orders=getattr(targets, "orders", None))
                timings.append(time.perf_counter() - started)
            print(f"{label:<20} {what}, decisions + engine: "
                  f"{len(bars) / statistics.median(timings):,.0f} bars/s, {len(result.trades):,} trades")
    bars = datasets[1][1]
    strategy = REGISTRY.build("sma_cross", {"fast": "10", "slow": "30"})
    tracemalloc.start()
    targets = strategy.targets(bars)
    run(bars, targets.exposure, targets.reason, targets.reasons, STANDARD)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak memory of a 1M-bar run (strategy + engine + result frames, bars excluded): {peak / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
