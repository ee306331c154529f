"""Multi-strategy portfolios: one sub-ledger per strategy and symbol, portfolio caps on top.

The portfolio file (cash, ``[caps]``, ``[[strategies]]``) and its validation live in
``pipeline.backtest.portfolio_config``, whose docstring shows a complete file; its names are re-exported here.

Every (strategy, symbol) pair is a sub-ledger with its own cash, position, trades and breakers, advanced by
the same compiled step as a single backtest (``pipeline.engine``). Bars of all pairs are merged in time
order; at each bar time every pair with a bar steps, then the portfolio is marked and its caps checked, all in
one compiled call per batch of bar times (``pipeline.engine.portfolio_ledger``): the backtest passes the whole
history at once, the runtime each batch of closed bars, or a single bar time when a venue answers between
bars. The same kernel runs in every case, so the results are the same bits however the bars are batched:

* ``max_gross_exposure``: before the next bars, each sub-ledger's max-position fraction is lowered so that
  its position may grow only into the room the others leave (room measured at the latest close);
* ``max_drawdown``: a portfolio drawdown beyond the cap trips the portfolio breaker: every sub-ledger's
  entries are blocked (rule ``portfolio_drawdown``), recorded once with time and values. Like a sleeve's
  drawdown breaker it waits for an operator's reset (``tripped = False``, as the runtime's reset command does),
  or, with ``breaker_cooldown_bars``, releases by itself that many bar times after the trip. A release is
  recorded too, takes effect before the sleeves step (an order decided at the previous close fills at this
  open) and re-bases the portfolio's peak to its equity at that time.

The portfolio's cash, positions and equity are at every bar the sums of the sub-ledgers' (plus the cash no
strategy was allocated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest.portfolio_config import (
    Caps,
    PortfolioConfig,
    Sleeve,
    StrategySpec,
    load_portfolio,
    sleeves_of,
)
from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe, epoch_ms
from pipeline.domain.orders import market_rows
from pipeline.engine import Engine, EngineResult
from pipeline.engine.portfolio_ledger import PortfolioLedger, PortfolioMarks
from pipeline.strategies import Targets, check_features
from pipeline.strategies.other_series import OtherSeries, check_series, series_of, with_series

__all__ = [
    "Bar",
    "Caps",
    "PortfolioConfig",
    "PortfolioResult",
    "PortfolioStepper",
    "Sleeve",
    "StrategySpec",
    "load_portfolio",
    "run_portfolio",
    "sleeves_of",
]


@dataclass(frozen=True)
class PortfolioResult:
    sleeves: dict[str, EngineResult]
    equity: pd.DataFrame
    """Portfolio per bar time: ``timestamp, equity, cash, position_value, gross_exposure, paused, buy_and_hold``
    (``paused``: some sleeve's entries were blocked at that close; ``buy_and_hold``: the value of buying each
    sleeve's symbol with its cash at its first bar and holding)."""
    events: pd.DataFrame
    """Portfolio-level breaker events: ``timestamp, rule, value, threshold, action, released_by, bars_tripped``
    (as a sleeve's ``breaker_events``; ``bars_tripped`` counts bar times)."""
    config: PortfolioConfig


BarLoader = Callable[[str, Timeframe], pd.DataFrame]
SeriesLoader = Callable[[OtherSeries, Sleeve], pd.DataFrame]
"""The bars of an other series a sleeve's strategy reads (the sleeve's own symbol gives the venue)."""
EVENT_COLUMNS = ["timestamp", "rule", "value", "threshold", "action", "released_by", "bars_tripped"]
PORTFOLIO_RULE = "portfolio_drawdown"


@dataclass(frozen=True)
class Bar:
    """One closed bar of one sleeve's symbol, with the strategy's decision at its close."""

    o: float
    h: float
    low: float
    c: float
    aim: float
    reason: int
    order: np.ndarray | None = None
    """How the decision is executed: a row of the strategy's order table (None: a market order)."""


class PortfolioStepper:
    """Every sleeve's engine advanced through bar times, with the portfolio caps in between.

    The backtest drives it over merged history (``run_portfolio``); the runtime drives it with each batch of
    closed bars (``run``), or one bar time at a time (``step``) when a venue answers between bars. Both go
    through the portfolio ledger (``pipeline.engine.portfolio_ledger``) and its one compiled step, the one
    place where sleeves, caps and the portfolio ledger meet.
    """

    def __init__(self, config: PortfolioConfig, reasons: dict[str, tuple[str, ...]], external: bool = False) -> None:
        self.config = config
        self.sleeves = sleeves_of(config)
        self.engines = {s.key: Engine(s.config, reasons[s.key], external, Timeframe.parse(s.spec.timeframe).millis)
                        for s in self.sleeves}
        self.reserve = config.cash * (1.0 - sum(s.allocation for s in config.strategies))
        caps = config.caps
        self.ledger = PortfolioLedger([self.engines[s.key] for s in self.sleeves],
                                      [s.config.day_boundary_hour for s in self.sleeves], config.cash, self.reserve,
                                      caps.max_gross_exposure or 0.0, caps.max_drawdown or 0.0,
                                      caps.breaker_cooldown_bars or 0)
        self.events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ the portfolio ledger
    @property
    def peak(self) -> float:
        return self.ledger.peak

    @peak.setter
    def peak(self, value: float) -> None:
        self.ledger.peak = value

    @property
    def steps(self) -> int:
        """Bar times stepped by this stepper."""
        return self.ledger.steps

    @property
    def tripped(self) -> bool:
        """Whether the portfolio drawdown breaker is tripped.

        Setting it to false is an operator's reset: recorded as a release at the next bar time (set the new
        ``peak`` with it). Setting it to true restores a tripped breaker (its cool-down counts from now).
        """
        return self.ledger.tripped

    @tripped.setter
    def tripped(self, value: bool) -> None:
        self.ledger.tripped = value

    def restore_sleeve(self, key: str) -> None:
        """Take a sleeve's marks from its (restored) ledger."""
        self.ledger.restore_sleeve([s.key for s in self.sleeves].index(key))

    @property
    def equity(self) -> float:
        return self.ledger.equity

    @property
    def cash(self) -> float:
        return self.ledger.cash

    @property
    def position_value(self) -> float:
        return self.ledger.position_value

    # ------------------------------------------------------------------ stepping
    def run(self, times: np.ndarray, present: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray,
            closes: np.ndarray, aims: np.ndarray, reasons: np.ndarray,
            orders: np.ndarray | None = None) -> PortfolioMarks:
        """Step the bar times ``times`` (epoch ms, ascending) in one compiled call per buffer fill.

        The other arrays are (sleeves, times) in ``self.sleeves`` order; ``present[s, t]`` says whether sleeve
        ``s`` has a bar at ``times[t]``; ``orders`` (sleeves, times, order columns) how their decisions are
        executed (None: market orders). Returns the portfolio's marks per time.
        """
        marks, events = self.ledger.run(times, present, opens, highs, lows, closes, aims, reasons, orders)
        threshold = self.config.caps.max_drawdown or 0.0
        for event in events:
            self.events.append({"timestamp": pd.Timestamp(int(times[event.time_index]), unit="ms", tz="UTC"),
                                "rule": PORTFOLIO_RULE, "value": event.value, "threshold": threshold,
                                "action": event.action, "released_by": event.released_by,
                                "bars_tripped": event.bars_tripped})
        return marks

    def step(self, at: int, bars: dict[str, Bar]) -> dict[str, float]:
        """Advance the sleeves that have a bar opening at ``at`` (epoch ms); returns the portfolio's marks
        (``paused`` is 1.0 when any sleeve's entries are blocked at this bar time's close, else 0.0)."""
        n = len(self.sleeves)
        present = np.zeros((n, 1), dtype=np.bool_)
        columns = np.zeros((5, n, 1))
        reasons = np.full((n, 1), -1, dtype=np.int64)
        orders = market_rows(n, 1)
        for s, sleeve in enumerate(self.sleeves):
            bar = bars.get(sleeve.key)
            if bar is not None:
                present[s, 0] = True
                columns[:, s, 0] = (bar.o, bar.h, bar.low, bar.c, bar.aim)
                reasons[s, 0] = bar.reason
                if bar.order is not None:
                    orders[s, 0] = bar.order
        marks = self.run(np.array([at], dtype=np.int64), present, columns[0], columns[1], columns[2], columns[3],
                         columns[4], reasons, orders)
        return marks.at(0)


def order_tables(targets: Sequence[Targets], positions: Sequence[np.ndarray], times: int) -> np.ndarray | None:
    """The sleeves' order tables on a common clock (sleeves, times, order columns): each sleeve's rows at
    ``positions``; None when every sleeve trades market orders only."""
    if all(t.orders is None for t in targets):
        return None
    orders = market_rows(len(targets), times)
    for s, (sleeve_targets, at) in enumerate(zip(targets, positions, strict=True)):
        if sleeve_targets.orders is not None:
            orders[s, at] = sleeve_targets.orders if sleeve_targets.orders.shape[0] > 1 else sleeve_targets.orders[0]
    return orders


def run_portfolio(config: PortfolioConfig, load_bars: BarLoader,
                  load_series: SeriesLoader | None = None) -> PortfolioResult:
    """Run every sleeve through the engine step in time order, applying the portfolio caps (``load_series``
    brings the other series a sleeve's strategy reads, ``pipeline.backtest.series``)."""
    sleeves = sleeves_of(config)
    histories: dict[str, tuple[pd.DataFrame, Targets]] = {}
    for sleeve in sleeves:
        tf = Timeframe.parse(sleeve.spec.timeframe)
        try:
            bars = load_bars(sleeve.symbol, tf)
            if bars.empty:
                raise DataError("no bars in the selected range")
            check_features(sleeve.strategy, bars)
            specs = series_of(sleeve.strategy)
            frame = bars if load_series is None or not specs else with_series(
                bars, tf, {spec: load_series(spec, sleeve) for spec in specs})
            check_series(sleeve.strategy, frame)
        except DataError as exc:
            raise DataError(f"strategy {sleeve.spec.id!r} on {sleeve.symbol} {tf}: {exc}") from exc
        histories[sleeve.key] = (bars, sleeve.strategy.targets(frame))
    stepper = PortfolioStepper(config, {key: targets.reasons for key, (_, targets) in histories.items()})
    clock = np.unique(np.concatenate([epoch_ms(bars["timestamp"]) for bars, _ in histories.values()]))
    n, times = len(stepper.sleeves), len(clock)
    present = np.zeros((n, times), dtype=np.bool_)
    prices = np.full((4, n, times), np.nan)
    aims = np.full((n, times), np.nan)
    reasons = np.full((n, times), -1, dtype=np.int64)
    orders = order_tables([targets for _, targets in (histories[s.key] for s in stepper.sleeves)],
                          [np.searchsorted(clock, epoch_ms(bars["timestamp"]))
                           for bars, _ in (histories[s.key] for s in stepper.sleeves)], times)
    hold = np.empty((n, times))
    for s, sleeve in enumerate(stepper.sleeves):
        bars, targets = histories[sleeve.key]
        at = np.searchsorted(clock, epoch_ms(bars["timestamp"]))
        present[s, at] = True
        for c, column in enumerate(("open", "high", "low", "close")):
            prices[c, s, at] = bars[column].to_numpy(dtype=np.float64)
        aims[s, at] = targets.exposure
        reasons[s, at] = targets.reason
        close = bars["close"].to_numpy(dtype=np.float64)
        latest = np.maximum.accumulate(np.where(present[s], np.arange(times), -1))  # last bar at or before t
        value = np.concatenate([[sleeve.config.cash], sleeve.config.cash * close / float(close[0])])
        hold[s] = value[np.where(latest >= 0, np.searchsorted(at, latest) + 1, 0)]
    marks = stepper.run(clock, present, prices[0], prices[1], prices[2], prices[3], aims, reasons, orders)
    buy_and_hold = np.zeros(times)
    for s in range(n):
        buy_and_hold = buy_and_hold + hold[s]
    curve = pd.DataFrame({"equity": marks.equity, "cash": marks.cash, "position_value": marks.position_value,
                          "gross_exposure": marks.gross_exposure, "paused": marks.paused,
                          "buy_and_hold": buy_and_hold + stepper.reserve})
    stamps = pd.to_datetime(clock, unit="ms", utc=True)
    curve.insert(0, "timestamp", pd.Series(stamps).astype(TIMESTAMP_DTYPE))
    event_frame = pd.DataFrame(stepper.events, columns=EVENT_COLUMNS)
    return PortfolioResult({key: engine.result() for key, engine in stepper.engines.items()}, curve, event_frame,
                           config)
