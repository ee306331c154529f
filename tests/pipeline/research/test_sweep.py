"""The compiled parameter sweep (``pipeline.research.sweep``) against plain backtests on real data: every
parameter set's figures equal, to the last bit, what ``run_backtest`` (or, over a span, the engine driven with
the whole frame's decisions) reports for the same parameters; the per-block return sums add up to the
backtest's per-bar returns; bad spans, empty bars and invalid parameter sets are refused by name."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.backtest.run import run_backtest
from pipeline.domain import DataError, Timeframe
from pipeline.domain.orders import order_table
from pipeline.engine import EngineConfig, run
from pipeline.research import sweep
from pipeline.research.sweep import Evaluation, Market, block_edges, evaluate
from pipeline.strategies import REGISTRY, DecisionStream, NoParams, Strategy, StrategyParams, StrategySpec, Targets
from tests.conftest import REPO, shared_file

HOUR = Timeframe.parse("1h")
KEYS = ("sharpe", "sortino", "calmar", "total_return", "cagr", "volatility", "max_drawdown", "trades", "exposure",
        "final_equity")
PULLBACK = f"{REPO / 'examples' / 'strategies' / 'pullback_entry.py'}:PullbackEntry"
SMA_PAIRS = [{"fast": fast, "slow": slow} for fast, slow in ((2, 3), (3, 12), (5, 20), (10, 30), (12, 26),
                                                               (20, 50), (24, 96))]
COSTLY = EngineConfig(fee_bps=7.5, slippage_bps=3.0, slippage_vol=0.05, fill="close", max_position=1.0)
TIGHT_BREAKERS = EngineConfig(max_drawdown=0.03, daily_loss=0.01, max_consecutive_losses=2, max_trades_per_day=2,
                              breaker_cooldown_bars=24, flatten_on_trip=True)


@cache
def _hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[20_000:23_000].reset_index(drop=True)


def hours() -> pd.DataFrame:
    """3000 real BTC/USDT hourly bars (a fresh copy per call: no test can change another's data)."""
    return _hours().copy()


def backtest_figures(bars: pd.DataFrame, spec: StrategySpec, params: dict[str, Any],
                     config: EngineConfig) -> dict[str, Any]:
    result = run_backtest(bars, spec.build(params), config, HOUR)
    assert result.summary()["final_equity"] == result.metrics["final_equity"]
    return {key: result.metrics[key] for key in KEYS}


def sweep_figures(evaluation: Evaluation) -> dict[str, Any]:
    return {key: evaluation.metrics[key] for key in KEYS}


def assert_exact(evaluations: Sequence[Evaluation], bars: pd.DataFrame, spec: StrategySpec,
                 sets: Sequence[dict[str, Any]], config: EngineConfig) -> None:
    """Each set's sweep figures are the backtest's, compared with == (None only where the backtest has None)."""
    assert len(evaluations) == len(sets)
    for evaluation, params in zip(evaluations, sets, strict=True):
        assert evaluation.params == params
        got, want = sweep_figures(evaluation), backtest_figures(bars, spec, params, config)
        assert got == want, params
        for key in KEYS:  # == alone would let 0 == 0.0 or 1 == True through
            assert type(got[key]) is type(want[key]), (params, key)


@pytest.mark.parametrize("config", [EngineConfig(), EngineConfig().without_breakers(), TIGHT_BREAKERS],
                         ids=["breakers", "no_breakers", "tight_breakers"])
def test_sma_cross_sets_equal_their_backtests(config: EngineConfig) -> None:
    bars = hours()
    spec = REGISTRY.spec("sma_cross")
    evaluations = evaluate(spec, SMA_PAIRS, Market.of(bars, config, HOUR), config)
    assert_exact(evaluations, bars, spec, SMA_PAIRS, config)
    if config.max_consecutive_losses is None:
        # the fastest pair closes far more trades than one recycled output buffer of the compiled sweep holds
        assert evaluations[0].metrics["trades"] > 3 * 64
    else:  # the breakers really trip on these bars
        events = run_backtest(bars, spec.build(SMA_PAIRS[0]), config, HOUR).engine.breaker_events
        assert len(events) > 0


def test_costs_slippage_and_fills_at_the_close_are_the_backtests() -> None:
    bars = hours()
    spec = REGISTRY.spec("sma_cross")
    for config in (COSTLY, COSTLY.without_breakers()):
        assert_exact(evaluate(spec, SMA_PAIRS, Market.of(bars, config, HOUR), config), bars, spec, SMA_PAIRS, config)


def test_rsi_reversion_including_a_set_that_never_trades() -> None:
    bars = hours()
    spec = REGISTRY.spec("rsi_reversion")
    sets = [{"period": 14, "lower": 30.0, "upper": 70.0}, {"period": 6, "lower": 20.0, "upper": 60.0},
            {"period": 30, "lower": 45.0, "upper": 55.0}, {"period": 50, "lower": 1.0, "upper": 99.0}]
    config = EngineConfig(fee_bps=5.0)
    evaluations = evaluate(spec, sets, Market.of(bars, config, HOUR), config)
    assert_exact(evaluations, bars, spec, sets, config)
    idle = evaluations[-1].metrics
    assert idle["trades"] == 0
    assert idle["sortino"] is None and idle["calmar"] is None  # undefined figures stay None, as the backtest's
    assert idle["sharpe"] == 0.0 and idle["max_drawdown"] == 0.0


@pytest.mark.parametrize("config", [EngineConfig(), COSTLY.without_breakers()], ids=["default", "costly_close"])
def test_user_strategy_with_limit_orders_and_protections_equals_its_backtests(config: EngineConfig) -> None:
    bars = hours()
    spec = REGISTRY.spec(PULLBACK)
    sets = [{"fast": 12, "slow": 48}, {"fast": 6, "slow": 24, "offset": 0.001, "stop_loss": 0.005},
            {"fast": 8, "slow": 30, "offset": 0.0, "trailing_stop": 0.0, "higher": "4h"},
            {"fast": 4, "slow": 16, "offset": 0.01, "stop_loss": 0.02, "trailing_stop": 0.005}]
    strategy = spec.build(sets[0])
    orders = strategy.targets(bars).orders
    assert orders is not None and orders.shape[0] == len(bars)  # per-bar order tables reach the sweep
    evaluations = evaluate(spec, sets, Market.of(bars, config, HOUR), config)
    assert_exact(evaluations, bars, spec, sets, config)
    assert all(e.metrics["trades"] > 0 for e in evaluations)


class MixedParams(StrategyParams):
    tables: Literal["none", "one_row", "per_bar"] = Field("none", description="the order table the sets give")
    fast: int = Field(5, ge=1)
    slow: int = Field(20, ge=2)


class OneRowStream:
    """A strategy's decisions with one order table row for every bar (a stop-loss and a take-profit)."""

    TABLE = order_table(1, stop_loss=0.01, take_profit=0.02)

    def __init__(self, base: DecisionStream) -> None:
        self.base = base

    def update(self, features: pd.DataFrame) -> Targets:
        targets = self.base.update(features)
        return Targets(targets.exposure, targets.reason, targets.reasons, self.TABLE)

    def state(self) -> dict[str, Any]:
        return self.base.state()

    def restore(self, state: dict[str, Any]) -> None:
        self.base.restore(state)


class OneRow:
    """``sma_cross`` whose decisions carry a one-row order table."""

    name = "one_row_sma_cross"
    requires: tuple[str, ...] = ()

    def __init__(self, base: Strategy) -> None:
        self.base = base
        self.warmup = base.warmup

    def stream(self) -> OneRowStream:
        return OneRowStream(self.base.stream())

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


def _mixed(params: MixedParams) -> Strategy:
    pair = {"fast": params.fast, "slow": params.slow}
    if params.tables == "per_bar":
        return REGISTRY.spec(PULLBACK).build(pair)
    base = REGISTRY.build("sma_cross", pair)
    return OneRow(base) if params.tables == "one_row" else base


MIXED = StrategySpec("mixed_tables", MixedParams, _mixed, "no table, one row or one row per bar, by parameter")


def test_sets_with_no_one_row_and_per_bar_order_tables_in_one_batch() -> None:
    bars = hours()
    spec = MIXED
    sets = [{"tables": tables, "fast": fast, "slow": slow}
            for tables in ("none", "one_row", "per_bar") for fast, slow in ((3, 12), (10, 40))]
    assert spec.build(sets[0]).targets(bars).orders is None
    assert spec.build(sets[2]).targets(bars).orders.shape[0] == 1
    assert spec.build(sets[4]).targets(bars).orders.shape[0] == len(bars)
    for config in (EngineConfig(), EngineConfig(trailing_stop=0.03).without_breakers()):
        market = Market.of(bars, config, HOUR)
        assert_exact(evaluate(spec, sets, market, config), bars, spec, sets, config)  # mixed in one batch
        assert_exact(evaluate(spec, sets[:4], market, config), bars, spec, sets[:4], config)  # one-row tables only
        twin = evaluate(spec, sets[2:4], market, config)  # alone, a one-row table is not widened to every bar
        assert_exact(twin, bars, spec, sets[2:4], config)


def test_a_set_count_that_is_not_a_multiple_of_the_batch() -> None:
    bars = hours().iloc[:1500].reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig(fee_bps=2.0)
    sets = [{"fast": fast, "slow": slow} for fast, slow in itertools.product(range(2, 16), (20, 35, 50, 80, 120))]
    assert len(sets) == 70 and len(sets) % sweep.BATCH != 0 and len(sets) > sweep.BATCH
    told: list[int] = []
    evaluations = evaluate(spec, sets, Market.of(bars, config, HOUR), config, progress=told.append)
    assert_exact(evaluations, bars, spec, sets, config)
    assert told == [sweep.BATCH, len(sets) - sweep.BATCH]


def test_progress_totals_the_number_of_sets() -> None:
    bars = hours().iloc[:600].reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig()
    market = Market.of(bars, config, HOUR)
    for count in (1, 3, sweep.BATCH, sweep.BATCH + 1, 2 * sweep.BATCH + 5):
        sets = [{"fast": 1 + k % 9, "slow": 10 + k} for k in range(count)]
        told: list[int] = []
        assert len(evaluate(spec, sets, market, config, progress=told.append)) == count
        assert sum(told) == count
        assert all(0 < step <= sweep.BATCH for step in told)
    told = []
    assert evaluate(spec, [], market, config, progress=told.append) == []
    assert sum(told) == 0


def test_one_job_and_every_core_give_identical_results() -> None:
    bars = hours()
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig()
    market = Market.of(bars, config, HOUR)
    sets = [{"fast": fast, "slow": slow} for fast in (2, 4, 8, 16) for slow in (20, 40, 60, 90)] * 5  # 80 sets
    alone = evaluate(spec, sets, market, config, jobs=1)
    every = evaluate(spec, sets, market, config)
    assert len(alone) == len(every) == len(sets)
    for one, other in zip(alone, every, strict=True):
        assert one.params == other.params
        assert one.metrics == other.metrics
        assert np.array_equal(one.sums, other.sums) and np.array_equal(one.squares, other.squares)


def test_results_follow_the_order_of_the_sets() -> None:
    bars = hours().iloc[:2000].reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig().without_breakers()
    market = Market.of(bars, config, HOUR)
    sets = [{"fast": fast, "slow": slow} for fast in (2, 3, 5, 8, 13) for slow in (21, 34, 55, 89)]
    shuffled = [sets[k] for k in np.random.default_rng(7).permutation(len(sets))]
    forward = evaluate(spec, sets, market, config)
    backward = evaluate(spec, sets[::-1], market, config)
    mixed = evaluate(spec, shuffled, market, config)
    assert [e.params for e in forward] == sets
    assert [e.params for e in backward] == sets[::-1]
    assert [e.params for e in mixed] == shuffled
    by_params = {(e.params["fast"], e.params["slow"]): e for e in forward}
    for evaluation in [*backward, *mixed]:
        twin = by_params[(evaluation.params["fast"], evaluation.params["slow"])]
        assert evaluation.metrics == twin.metrics
        assert np.array_equal(evaluation.sums, twin.sums)
    assert len({e.metrics["final_equity"] for e in forward}) > 1  # the sets really differ


def engine_over_span(bars: pd.DataFrame, spec: StrategySpec, params: dict[str, Any], config: EngineConfig,
                     first: int, end: int) -> tuple[dict[str, Any], np.ndarray]:
    """A fresh account over bars ``first..end-1`` driven by decisions taken on the whole frame: the figures and
    the equity curve, as ``run_backtest`` computes them."""
    targets = spec.build(params).targets(bars)
    orders = targets.orders
    if orders is not None and orders.shape[0] > 1:
        orders = orders[first:end]
    part = bars.iloc[first:end]
    result = run(part, targets.exposure[first:end], targets.reason[first:end], targets.reasons, config,
                 orders=orders)
    metrics = compute_metrics(result.equity, result.trades, result.fills, part["close"],
                              bars_per_year(HOUR.seconds, "crypto"))
    return {key: metrics[key] for key in KEYS}, result.equity["equity"].to_numpy()


@pytest.mark.parametrize(("reference", "sets"), [
    ("sma_cross", [{"fast": 5, "slow": 20}, {"fast": 24, "slow": 96}, {"fast": 2, "slow": 3}]),
    (PULLBACK, [{"fast": 12, "slow": 48}, {"fast": 6, "slow": 24, "offset": 0.001}]),
], ids=["sma_cross", "pullback_entry"])
def test_a_span_is_a_fresh_account_on_the_whole_frames_decisions(reference: str,
                                                                 sets: list[dict[str, Any]]) -> None:
    bars = hours()
    spec = REGISTRY.spec(reference)
    config = EngineConfig(fee_bps=4.0)
    market = Market.of(bars, config, HOUR)
    for first, end in ((1000, 2200), (0, 1300), (1700, 3000), (2500, 2502)):
        evaluations = evaluate(spec, sets, market, config, span=(first, end), blocks=6)
        assert [e.params for e in evaluations] == sets
        for evaluation, params in zip(evaluations, sets, strict=True):
            want, equity = engine_over_span(bars, spec, params, config, first, end)
            assert sweep_figures(evaluation) == want, (params, first, end)
            returns = equity[1:] / equity[:-1] - 1.0
            assert evaluation.sums.shape == (6,)
            assert evaluation.sums.sum() == pytest.approx(returns.sum(), rel=1e-9, abs=1e-15)


def test_the_whole_span_is_the_default() -> None:
    bars = hours().iloc[:1200].reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig()
    market = Market.of(bars, config, HOUR)
    whole = evaluate(spec, SMA_PAIRS, market, config, span=(0, len(bars)))
    default = evaluate(spec, SMA_PAIRS, market, config)
    for one, other in zip(whole, default, strict=True):
        assert one.metrics == other.metrics and np.array_equal(one.sums, other.sums)


@pytest.mark.parametrize("span", [(5, 6), (10, 10), (20, 10), (-1, 50), (0, 501), (499, 501), (500, 502)])
def test_a_span_outside_the_bars_or_shorter_than_two_bars_is_refused(span: tuple[int, int]) -> None:
    bars = hours().iloc[:500].reset_index(drop=True)
    config = EngineConfig()
    with pytest.raises(DataError, match=rf"span {span[0]}\.\.{span[1]}"):
        evaluate(REGISTRY.spec("sma_cross"), [{"fast": 5, "slow": 20}], Market.of(bars, config, HOUR), config,
                 span=span)


def test_empty_bars_are_refused() -> None:
    with pytest.raises(DataError, match="no bars"):
        Market.of(hours().iloc[:0], EngineConfig(), HOUR)


def test_an_invalid_parameter_set_is_refused_naming_the_parameter() -> None:
    bars = hours().iloc[:500].reset_index(drop=True)
    config = EngineConfig()
    market = Market.of(bars, config, HOUR)
    spec = REGISTRY.spec("sma_cross")
    with pytest.raises(DataError, match="'slow'"):
        evaluate(spec, [{"fast": 5, "slow": 20}, {"fast": 30, "slow": 30}], market, config)
    with pytest.raises(DataError, match="'slow'"):
        evaluate(spec, [{"fast": 40, "slow": 10}], market, config)
    with pytest.raises(DataError, match="fast"):
        evaluate(spec, [{"fast": 0, "slow": 10}], market, config)
    many = [{"fast": 2, "slow": 10 + k} for k in range(sweep.BATCH + 3)] + [{"fast": 9, "slow": 3}]
    with pytest.raises(DataError, match="'slow'"):  # in a later batch too
        evaluate(spec, many, market, config)


@pytest.mark.parametrize("blocks", [1, 5, 16])
def test_block_sums_are_the_backtests_per_bar_returns(blocks: int) -> None:
    bars = hours()
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig().without_breakers()
    sets = [{"fast": 3, "slow": 12}, {"fast": 10, "slow": 30}]
    evaluations = evaluate(spec, sets, Market.of(bars, config, HOUR), config, blocks=blocks)
    edges = block_edges(len(bars), blocks)
    assert edges[0] == 0 and edges[-1] == len(bars) and len(edges) == blocks + 1
    for evaluation, params in zip(evaluations, sets, strict=True):
        equity = run_backtest(bars, spec.build(params), config, HOUR).engine.equity["equity"].to_numpy()
        returns = equity[1:] / equity[:-1] - 1.0  # returns[i - 1] is bar i's return; bar 0 has none
        assert evaluation.sums.shape == evaluation.squares.shape == (blocks,)
        assert evaluation.sums.sum() == pytest.approx(returns.sum(), rel=1e-9)
        for s in range(blocks):
            inside = returns[max(edges[s], 1) - 1:edges[s + 1] - 1]
            assert evaluation.sums[s] == pytest.approx(inside.sum(), rel=1e-9, abs=1e-15), (params, s)
            assert evaluation.squares[s] == pytest.approx(np.square(inside).sum(), rel=1e-9, abs=1e-18), (params, s)
        assert np.count_nonzero(evaluation.sums) > blocks // 2  # the sets trade across the history


def test_block_sums_of_a_span_cut_the_span_itself() -> None:
    bars = hours()
    spec = REGISTRY.spec("sma_cross")
    config = EngineConfig().without_breakers()
    params = {"fast": 5, "slow": 20}
    first, end = 700, 2100
    (evaluation,) = evaluate(spec, [params], Market.of(bars, config, HOUR), config, span=(first, end), blocks=7)
    _, equity = engine_over_span(bars, spec, params, config, first, end)
    returns = equity[1:] / equity[:-1] - 1.0
    edges = block_edges(end - first, 7)
    for s in range(7):
        inside = returns[max(edges[s], 1) - 1:edges[s + 1] - 1]
        assert evaluation.sums[s] == pytest.approx(inside.sum(), rel=1e-9, abs=1e-15)


def test_block_edges_cut_near_equal_contiguous_blocks() -> None:
    assert block_edges(10, 3).tolist() == [0, 3, 7, 10]
    assert block_edges(3000, 16)[[0, -1]].tolist() == [0, 3000]
    assert set(np.diff(block_edges(3000, 16)).tolist()) <= {187, 188}
    assert block_edges(10, 0).tolist() == [0, 10]


def test_a_decision_on_the_first_bar_filled_at_its_close_is_the_backtests() -> None:
    bars = hours()
    spec = REGISTRY.spec("buy_and_hold")
    config = EngineConfig(fill="close", fee_bps=25.0, slippage_bps=10.0, max_position=1.0)
    evaluations = evaluate(spec, [{}], Market.of(bars, config, HOUR), config)
    assert_exact(evaluations, bars, spec, [{}], config)
    assert evaluations[0].metrics["total_return"] != evaluations[0].metrics["final_equity"] / config.cash - 1.0


class _WritesInPlace:
    """A strategy that writes into its window's output in place (allowed outside a sweep)."""

    name = "writes_in_place"
    requires: tuple[str, ...] = ()
    warmup = 3
    reasons = ("up", "down")

    def targets(self, features: pd.DataFrame) -> Targets:
        from pipeline.features.streaming import Window

        mean, _ = Window(3).update(features["close"].to_numpy(dtype=np.float64))
        mean[:3] = 0.0
        up = features["close"].to_numpy() > mean
        return Targets.from_signals(up, ~up, self.reasons)


def test_a_strategy_writing_into_a_shared_window_output_is_told_to_work_on_a_copy() -> None:
    bars = hours()
    spec = StrategySpec("writes_in_place", NoParams, lambda _: cast(Strategy, _WritesInPlace()))
    config = EngineConfig()
    run_backtest(bars, spec.build({}), config, HOUR)  # outside a sweep the output is its own
    with pytest.raises(DataError, match=r"writes_in_place.*read-only: work on a copy"):
        evaluate(spec, [{}, {}], Market.of(bars, config, HOUR), config)
