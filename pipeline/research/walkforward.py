"""Walk-forward optimisation: parameters chosen on each in-sample block, scored on the block after it.

The bars are cut into ``K + 1`` near-equal contiguous blocks. Fold ``k`` (``0 … K-1``) searches block ``k``
(in-sample) and runs the chosen parameters on block ``k + 1`` (out-of-sample) with a fresh account; decisions
are taken on the whole history, so each block starts with the strategy warmed up on the bars before it, and
nothing after a bar decides it. The out-of-sample blocks are then run as one account (``one_account``): each
block with its fold's chosen parameters, the position carried from one block into the next with its costs, as
trading the walk-forward choice would have done. Its metrics are those a backtest reports from an equity curve.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def one_account(spec: StrategySpec, choices: Sequence[tuple[Fold, dict[str, Any] | None]], market: Market,
                config: EngineConfig) -> tuple[pd.DataFrame, int]:
    """The equity curve of one account that follows each fold's chosen parameters over its out-of-sample block
    (decisions taken on the whole frame; the position carries from one block into the next, as it would in
    trading), and the trades it closed. A fold without chosen parameters goes flat at its first bar."""
    first, end = choices[0][0].out_of_sample[0], choices[-1][0].out_of_sample[1]
    n = end - first
    aims = np.full(n, np.nan)
    codes = np.full(n, -1, dtype=np.int64)
    orders = np.tile(MARKET_ORDERS, (n, 1))
    reasons: list[str] = []
    for fold, params in choices:
        a, b = fold.out_of_sample[0] - first, fold.out_of_sample[1] - first
        if params is None:
            aims[a], codes[a] = 0.0, len(reasons)
            reasons.append(f"walk-forward fold {fold.number + 1}: no parameters chosen")
            continue
        targets = spec.build(params).targets(market.frame)
        window = slice(fold.out_of_sample[0], fold.out_of_sample[1])
        aims[a:b] = targets.exposure[window]
        codes[a:b] = np.where(targets.reason[window] >= 0, targets.reason[window] + len(reasons), -1)
        reasons.extend(targets.reasons)
        if targets.orders is not None:
            orders[a:b] = targets.orders if targets.orders.shape[0] == 1 else targets.orders[window]
    result = run(market.bars.iloc[first:end], aims, codes, tuple(reasons), config, market.sessions[first:end],
                 orders)
    return result.equity[["timestamp", "equity"]], len(result.trades)


def stitched_metrics(curve: pd.DataFrame, trades: int, periods_per_year: float) -> dict[str, Any]:
    """The equity-curve metrics of the stitched out-of-sample curve, with its trades."""
    e = np.ascontiguousarray(curve["equity"].to_numpy(dtype=np.float64))
    metrics: dict[str, Any] = curve_metrics(equity_stats.return_moments(e), equity_stats.max_drawdown(e),
                                            float(e[0]), float(e[-1]), len(e), periods_per_year)
    return {**metrics, "trades": trades, "bars": len(e), "first": curve["timestamp"].iloc[0].isoformat(),
            "last": curve["timestamp"].iloc[-1].isoformat()}
