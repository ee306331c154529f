"""Walk-forward optimisation: parameters chosen on each in-sample block, scored on the block after it.

The bars are cut into ``K + 1`` near-equal contiguous blocks. Fold ``k`` (``0 … K-1``) searches block ``k``
(in-sample) and runs the chosen parameters on block ``k + 1`` (out-of-sample) with a fresh account; decisions
are taken on the whole history, so each block starts with the strategy warmed up on the bars before it, and
nothing after a bar decides it. The out-of-sample blocks are stitched into one equity curve: each fold's curve
is scaled to start where the previous one ended, so the stitched curve is what one account would have made
following the walk-forward choice. Its metrics are those a backtest reports from an equity curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest import equity_stats
from pipeline.backtest.metrics import curve_metrics
from pipeline.domain.orders import MARKET_ORDERS
from pipeline.engine import EngineConfig, run
from pipeline.research.sweep import Market, block_edges
from pipeline.strategies import StrategySpec

MIN_FOLD_BARS = 20


@dataclass(frozen=True)
class Fold:
    number: int
    in_sample: tuple[int, int]
    out_of_sample: tuple[int, int]


def folds(n_bars: int, count: int) -> list[Fold]:
    """The ``count`` folds over ``n_bars`` bars (a ``ValueError`` when a block would be too short)."""
    edges = block_edges(n_bars, count + 1)
    if int(np.min(np.diff(edges))) < MIN_FOLD_BARS:
        raise ValueError(f"{count} walk-forward folds need at least {MIN_FOLD_BARS * (count + 1)} bars; "
                         f"there are {n_bars}")
    return [Fold(k, (int(edges[k]), int(edges[k + 1])), (int(edges[k + 1]), int(edges[k + 2])))
            for k in range(count)]


def out_of_sample_curve(spec: StrategySpec, params: dict[str, Any], market: Market, config: EngineConfig,
                        span: tuple[int, int]) -> tuple[pd.DataFrame, int]:
    """The equity frame of ``params`` over ``span`` (fresh account, decisions taken on the whole frame) and the
    trades it closed."""
    targets = spec.build(params).targets(market.frame)
    first, end = span
    orders = targets.orders
    table = MARKET_ORDERS if orders is None else (orders if orders.shape[0] == 1 else orders[first:end])
    result = run(market.bars.iloc[first:end], targets.exposure[first:end], targets.reason[first:end],
                 targets.reasons, config, market.sessions[first:end], table)
    return result.equity[["timestamp", "equity"]], len(result.trades)


def stitch(curves: list[pd.DataFrame], cash: float) -> pd.DataFrame:
    """One equity curve from consecutive fresh-account curves, each scaled to start where the last ended."""
    parts, level = [], cash
    for curve in curves:
        scaled = curve.assign(equity=curve["equity"] * (level / cash))
        level = float(scaled["equity"].iloc[-1])
        parts.append(scaled)
    return pd.concat(parts, ignore_index=True)


def stitched_metrics(curve: pd.DataFrame, trades: int, periods_per_year: float) -> dict[str, Any]:
    """The equity-curve metrics of the stitched out-of-sample curve, with its trades."""
    e = np.ascontiguousarray(curve["equity"].to_numpy(dtype=np.float64))
    metrics: dict[str, Any] = curve_metrics(equity_stats.return_moments(e), equity_stats.max_drawdown(e),
                                            float(e[0]), float(e[-1]), len(e), periods_per_year)
    return {**metrics, "trades": trades, "bars": len(e), "first": curve["timestamp"].iloc[0].isoformat(),
            "last": curve["timestamp"].iloc[-1].isoformat()}
