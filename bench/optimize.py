"""Optimisation benchmark: the compiled sweep and the study around it, on the product's own path.

1. The grid of 1,000 ``sma_cross`` pairs (fast 2..51 × slow 60..250 by 10) over the first 100,000 bars of the
   real BTC/USDT 1m file, standard costs (fee 10 bps, all in, breakers off), through
   ``pipeline.research.sweep.evaluate`` (what ``tradeforge optimize --grid`` runs) on 1 core and on every core:
   seconds and bar-steps per second (sets × bars / seconds), median and range over ``--repeat`` runs; then the
   same grid as a whole ``optimise`` study (evaluation, Optuna storage in a fresh SQLite file, the backtest
   re-run of the best trial and the overfitting measures).
2. A 200-trial TPE study with 5-fold walk-forward on the real BTC/USDT 1h file (``optimise``: 200 trials over
   the whole history, then 200 per fold).
3. With ``--vectorbt PYTHON`` (an interpreter that has vectorbt), vectorbt's time for the same 1,000 pairs over
   the same bars (``vbt.MA.run`` + ``Portfolio.from_signals`` and its Sharpe ratios, 250 pairs at a time),
   measured in the same run.

    python bench/optimize.py [--repeat 3] [--vectorbt /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.domain import Timeframe  # noqa: E402
from pipeline.engine import EngineConfig  # noqa: E402
from pipeline.research.objective import Objective  # noqa: E402
from pipeline.research.optimise import Request, optimise  # noqa: E402
from pipeline.research.space import parse_space  # noqa: E402
from pipeline.research.sweep import CORES, Market, evaluate  # noqa: E402
from pipeline.strategies import REGISTRY  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
STANDARD = EngineConfig(fee_bps=10, cash=100_000, max_position=1.0).without_breakers()
GRID = ["fast=2:51", "slow=60:250:10"]
BARS = 100_000

VECTORBT = """
import sys, time, numpy as np, pandas as pd, vectorbt as vbt
close = pd.read_parquet(sys.argv[1])["close"].iloc[:int(sys.argv[2])].reset_index(drop=True)
fast_w, slow_w = np.repeat(np.arange(2, 52), 20), np.tile(np.arange(60, 260, 10), 50)
def once(chunk=250):  # 250 pairs at a time: all 1,000 at once exhaust the memory
    done = 0
    for k in range(0, len(fast_w), chunk):
        fast = vbt.MA.run(close, window=fast_w[k:k + chunk], short_name="fast")
        slow = vbt.MA.run(close, window=slow_w[k:k + chunk], short_name="slow")
        entries = fast.ma_crossed_above(slow.ma.values)
        exits = fast.ma_crossed_below(slow.ma.values)
        pf = vbt.Portfolio.from_signals(close, entries, exits, fees=0.001, freq="1min")
        done += pf.sharpe_ratio().shape[0]
    return done
once(50)
started = time.perf_counter(); n = once(); print(time.perf_counter() - started, n)
"""


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def sweep_figures(repeat: int) -> dict[str, object]:
    bars = pd.read_parquet(SHARED / "binance_BTC-USDT_1m.parquet").iloc[:BARS].reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    points, _ = parse_space(spec, GRID).grid()
    market = Market.of(bars, STANDARD, Timeframe.parse("1m"))
    evaluate(spec, points[:4], market, STANDARD)  # load the compiled kernels once
    found: dict[str, object] = {"sets": len(points), "bars": len(bars)}
    for cores in sorted({1, CORES}):
        seconds = []
        for _ in range(repeat):
            started = time.perf_counter()
            evaluate(spec, points, market, STANDARD, jobs=cores)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        found[f"{cores}_core"] = {"seconds": seconds, "bar_steps_per_s": len(points) * len(bars) / median}
        print(f"sweep {len(points)} pairs x {len(bars):,} bars on {cores} core(s): {spread(seconds)}, "
              f"{len(points) * len(bars) / median / 1e6:.1f} M bar-steps/s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        request = Request("sma_cross", parse_space(spec, GRID), Objective.parse("sharpe"), grid=True)
        started = time.perf_counter()
        report = optimise(request, f"sqlite:///{folder}/optuna.db", market, STANDARD, Timeframe.parse("1m"))
        whole = time.perf_counter() - started
    found["study_seconds"] = whole
    print(f"grid study (evaluation + Optuna storage + re-run + overfitting): {whole:.2f} s, best "
          f"{report['best_params']} sharpe {report['best_value']:.3f}, re-run matches: {report['backtest_matches']}",
          flush=True)
    return found


def walk_forward_figures() -> dict[str, object]:
    bars = pd.read_parquet(SHARED / "binance_BTC-USDT_1h.parquet").reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig(fee_bps=10).without_breakers()
    market = Market.of(bars, config, Timeframe.parse("1h"))
    request = Request("sma_cross", parse_space(spec, ["fast=2:60", "slow=20:300:5"]), Objective.parse("sharpe"),
                      trials=200, walk_forward=5, seed=7)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = optimise(request, f"sqlite:///{folder}/optuna.db", market, config, Timeframe.parse("1h"))
        seconds = time.perf_counter() - started
    folds = report["walk_forward"]["folds"]
    print(f"TPE 200 trials + 5-fold walk-forward on {len(bars):,} 1h bars: {seconds:.1f} s "
          f"(whole-history search {report['search_seconds']:.1f} s)", flush=True)
    for fold in folds:
        outside = fold["out_of_sample_value"]
        print(f"  fold {fold['fold']}: {fold['params']} in-sample {fold['in_sample_value']:.3f}, out-of-sample "
              f"{outside if outside is None else round(outside, 3)}")
    print(f"  stitched out-of-sample sharpe {report['walk_forward']['out_of_sample_value']}; verdict: "
          f"{report['overfitting']['verdict']}", flush=True)
    return {"seconds": seconds, "folds": folds, "out_of_sample": report["walk_forward"]["out_of_sample"]}


def vectorbt_figure(python: str) -> float:
    done = subprocess.run([python, "-c", VECTORBT, str(SHARED / "binance_BTC-USDT_1m.parquet"), str(BARS)],
                          check=True, capture_output=True, text=True)
    seconds = float(done.stdout.split()[0])
    print(f"vectorbt, the same 1,000 pairs x {BARS:,} bars: {seconds:.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vectorbt", help="a Python interpreter with vectorbt installed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, object] = {"sweep": sweep_figures(args.repeat), "walk_forward": walk_forward_figures()}
    if args.vectorbt:
        figures["vectorbt_seconds"] = vectorbt_figure(args.vectorbt)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
