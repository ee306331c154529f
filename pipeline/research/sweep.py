"""Many parameter sets of one strategy over one history, through the compiled sweep (``pipeline.research.kernel``).

``Market.of`` prepares the bars once (trading days, prices, sessions, bars per year). ``evaluate`` builds each
parameter set's strategy, takes its decisions over the whole frame (a thread pool prepares the next batch while
the compiled sweep runs the current one on every core; fresh streams over the same series share their results,
``pipeline.features.shared``), and returns per set the metrics a backtest reports from
its equity curve (``pipeline.backtest.metrics.curve_metrics``) plus ``trades``, ``exposure`` and
``final_equity``: the same numbers, to the last bit, as ``run_backtest`` of those parameters over those bars.

A ``span`` (first bar, end bar) runs a fresh account over part of the bars with decisions taken on the whole
frame, so a strategy starts that span warmed up on the bars before it (walk-forward folds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pandas as pd

from pipeline.backtest.metrics import bars_per_year, curve_metrics
from pipeline.backtest.run import in_session
from pipeline.domain import DataError, Instrument, Timeframe
from pipeline.domain.orders import MARKET_ORDERS
from pipeline.engine import EngineConfig
from pipeline.engine.core import day_ids
from pipeline.engine.ledger import Ledger
from pipeline.features.shared import sharing
from pipeline.research import kernel
from pipeline.strategies import StrategySpec, check_features
from pipeline.strategies.other_series import check_series

Params = Mapping[str, Any]
Progress = Callable[[int], None]
"""Told how many more parameter sets are done."""

BATCH = 64
CORES: int = numba.get_num_threads()
"""The compiled sweep's threads at most: one per core (numba's default)."""


@dataclass(frozen=True)
class Market:
    """One instrument's bars made ready for the sweep, with the strategy's frame (the bars plus what it reads)."""

    bars: pd.DataFrame
    frame: pd.DataFrame
    days: np.ndarray
    opens: np.ndarray
    highs: np.ndarray
    lows: np.ndarray
    closes: np.ndarray
    sessions: np.ndarray
    periods_per_year: float

    @classmethod
    def of(cls, bars: pd.DataFrame, config: EngineConfig, timeframe: Timeframe, instrument: Instrument | None = None,
           frame: pd.DataFrame | None = None) -> Market:
        if bars.empty:
            raise DataError("no bars to optimise on: the selected range is empty")
        n = len(bars)
        if frame is not None and len(frame) != n:
            raise DataError(f"the strategy's frame has {len(frame)} rows but there are {n} bars: give one row per bar")
        o, h, low, c = (np.ascontiguousarray(bars[k].to_numpy(dtype=np.float64))
                        for k in ("open", "high", "low", "close"))
        sessions = in_session(bars, instrument, timeframe)
        asset_class = instrument.asset_class.value if instrument is not None else "crypto"
        return cls(bars, bars if frame is None else frame, day_ids(bars["timestamp"], config.day_boundary_hour),
                   o, h, low, c, np.ones(n, dtype=np.bool_) if sessions is None else sessions,
                   bars_per_year(timeframe.seconds, asset_class))

    def __len__(self) -> int:
        return len(self.bars)


@dataclass(frozen=True)
class Evaluation:
    """One parameter set's figures over a span: the metrics, and its per-block return sums (for the PBO)."""

    params: dict[str, Any]
    metrics: dict[str, float | int | None]
    sums: np.ndarray
    squares: np.ndarray


def block_edges(n_bars: int, blocks: int) -> np.ndarray:
    """``blocks + 1`` bar indices cutting ``n_bars`` bars into near-equal contiguous blocks."""
    return np.linspace(0, n_bars, max(blocks, 1) + 1).round().astype(np.int64)


def evaluate(spec: StrategySpec, param_sets: Sequence[Params], market: Market, config: EngineConfig,
             span: tuple[int, int] | None = None, blocks: int = 16, jobs: int | None = None,
             progress: Progress | None = None) -> list[Evaluation]:
    """Every set of ``param_sets`` of strategy ``spec`` over ``market`` (``span``: bars ``first..end-1``)."""
    first, end = span or (0, len(market))
    if not 0 <= first < end <= len(market) or end - first < 2:
        raise DataError(f"span {first}..{end} is not valid for {len(market)} bars: give at least 2 bars inside them")
    workers = max(1, jobs or CORES)
    threads = numba.get_num_threads()
    numba.set_num_threads(min(workers, CORES))
    ledger = Ledger(config)
    edges = block_edges(end - first, blocks)
    results: list[Evaluation] = []
    try:
        with sharing(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="targets") as pool:
            for batch, decided in _decisions(spec, param_sets, market, pool):
                results += _run_batch(batch, decided, market, ledger, first, end, edges)
                if progress is not None:
                    progress(len(batch))
    finally:
        numba.set_num_threads(threads)
    return results


def _decisions(spec: StrategySpec, param_sets: Sequence[Params], market: Market,
               pool: ThreadPoolExecutor) -> Iterator[tuple[Sequence[Params], list[Future[Decided]]]]:
    """Batches of parameter sets with their decisions, the next batch's already being taken."""
    batches = [param_sets[k:k + BATCH] for k in range(0, len(param_sets), BATCH)]

    def submit(batch: Sequence[Params]) -> list[Future[Decided]]:
        return [pool.submit(copy_context().run, _decide, spec, params, market.frame) for params in batch]

    pending = submit(batches[0]) if batches else []
    for k, batch in enumerate(batches):
        current = pending
        if k + 1 < len(batches):
            pending = submit(batches[k + 1])
        yield batch, current


Decided = tuple[np.ndarray, np.ndarray, np.ndarray]


def _decide(spec: StrategySpec, params: Params, frame: pd.DataFrame) -> Decided:
    strategy = spec.build(params)
    check_features(strategy, frame)
    check_series(strategy, frame)
    try:
        targets = strategy.targets(frame)
    except ValueError as exc:
        if "read-only" not in str(exc):
            raise
        raise DataError(f"strategy {spec.name!r} writes into the output of a streaming primitive in place ({exc}); "
                        "inside a parameter sweep those outputs are shared between parameter sets and read-only: "
                        "work on a copy") from exc
    orders = MARKET_ORDERS if targets.orders is None else targets.orders
    return targets.exposure, targets.reason, orders


def _run_batch(batch: Sequence[Params], decided: list[Future[Decided]], market: Market, ledger: Ledger,
               first: int, end: int, edges: np.ndarray) -> list[Evaluation]:
    size = len(batch)
    n = end - first
    taken = [future.result() for future in decided]
    aims = np.empty((size, n))
    reasons = np.empty((size, n), dtype=np.int64)
    rows = 1 if all(orders.shape[0] == 1 for _, _, orders in taken) else n
    orders = np.empty((size, rows, MARKET_ORDERS.shape[1]))
    for b, (exposure, reason, table) in enumerate(taken):
        aims[b] = exposure[first:end]
        reasons[b] = reason[first:end]
        orders[b] = table if table.shape[0] == 1 else table[first:end]
    figures = np.zeros((size, kernel.FIGURES))
    blocks = len(edges) - 1
    sums = np.zeros((size, blocks))
    squares = np.zeros((size, blocks))
    window = slice(first, end)
    kernel.sweep(market.days[window], market.opens[window], market.highs[window], market.lows[window],
                 market.closes[window], market.sessions[window], aims, reasons, orders, ledger.params,
                 ledger.fstate, ledger.istate, edges, figures, sums, squares)
    evaluations = []
    for b, params in enumerate(batch):
        row = figures[b]
        metrics: dict[str, float | int | None] = {
            **curve_metrics(row[:kernel.DRAWDOWN], float(row[kernel.DRAWDOWN]), float(row[kernel.INITIAL]),
                            float(row[kernel.FINAL]), n, market.periods_per_year),
            "trades": int(row[kernel.TRADES]),
            "exposure": float(row[kernel.IN_MARKET]) / n,
            "final_equity": float(row[kernel.FINAL]),
        }
        evaluations.append(Evaluation(dict(params), metrics, sums[b].copy(), squares[b].copy()))
    return evaluations
