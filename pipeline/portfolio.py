"""Multi-strategy portfolios: a portfolio file, one sub-ledger per strategy and symbol, portfolio caps on top.

A portfolio file (TOML or YAML) looks like::

    cash = 100000

    [caps]
    max_gross_exposure = 1.0   # sum of |position values| / portfolio equity, checked before every order
    max_drawdown = 0.25        # portfolio breaker: a fall from the portfolio's peak pauses every strategy
    breaker_cooldown_bars = 1440   # optional: the portfolio breaker releases by itself after this many bars

    [[strategies]]
    id = "btc-trend"
    strategy = "golden_cross"
    symbols = ["BTC/USDT"]
    timeframe = "1h"
    allocation = 0.6           # fraction of the portfolio's cash; split evenly over the symbols
    params = {}                # strategy parameters (as --param)
    engine = { max_position = 1.0, stop_loss = 0.05, breaker_cooldown_bars = 60 }   # EngineConfig fields

Every (strategy, symbol) pair is a sub-ledger with its own cash, position, trades and breakers, advanced by
the same compiled step as a single backtest (``pipeline.engine.Engine``). Bars of all pairs are merged in time
order; at each bar time every pair with a bar steps, then the portfolio is marked and its caps checked:

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

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe, epoch_ms, parse_symbol
from pipeline.engine import Engine, EngineConfig, EngineResult
from pipeline.engine import kernel as k
from pipeline.strategies import REGISTRY, Strategy, Targets, check_features


class Caps(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_gross_exposure: float | None = Field(None, gt=0)
    max_drawdown: float | None = Field(None, gt=0, lt=1)
    breaker_cooldown_bars: int | None = Field(None, ge=1)
    """Bar times after which the portfolio drawdown breaker releases by itself; none waits for an operator."""


class StrategySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.\-]+$")
    strategy: str
    symbols: list[str] = Field(min_length=1)
    timeframe: str
    allocation: float = Field(gt=0, le=1)
    params: dict[str, str | int | float] = Field(default_factory=dict)
    engine: dict[str, Any] = Field(default_factory=dict)


class PortfolioConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cash: float = Field(100_000.0, gt=0)
    caps: Caps = Field(default_factory=Caps)
    strategies: list[StrategySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioConfig:
        total = sum(s.allocation for s in self.strategies)
        if total > 1.0 + 1e-9:
            raise ValueError(f"allocations add up to {total:.4g}; they may not exceed 1")
        ids = [s.id for s in self.strategies]
        if len(set(ids)) != len(ids):
            raise ValueError("strategy ids must be unique")
        return self


def load_portfolio(path: Path) -> PortfolioConfig:
    """Read and validate a portfolio file; errors name the file and the field."""
    if not path.exists():
        raise DataError(f"portfolio file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            raw: object = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        else:
            raise DataError(f"portfolio file {str(path)!r} must be .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"portfolio file {str(path)!r} is not valid: {exc}") from exc
    try:
        config = PortfolioConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"portfolio file {str(path)!r}: {problems}") from exc
    for spec in config.strategies:
        for symbol in spec.symbols:
            parse_symbol(symbol)
        Timeframe.parse(spec.timeframe)
        REGISTRY.build(spec.strategy, {k: str(v) for k, v in spec.params.items()})
        _engine_config(spec, 1.0)
    return config


def _engine_config(spec: StrategySpec, cash: float) -> EngineConfig:
    try:
        return EngineConfig.model_validate({**spec.engine, "cash": cash})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DataError(f"strategy {spec.id!r} engine settings: {problems}") from exc


@dataclass(frozen=True)
class Sleeve:
    """One sub-ledger: a strategy on one symbol with its share of the cash."""

    key: str
    spec: StrategySpec
    symbol: str
    strategy: Strategy
    config: EngineConfig


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


def sleeves_of(config: PortfolioConfig) -> list[Sleeve]:
    sleeves = []
    for spec in config.strategies:
        share = config.cash * spec.allocation / len(spec.symbols)
        for symbol in spec.symbols:
            canonical, _ = parse_symbol(symbol)
            strategy = REGISTRY.build(spec.strategy, {k: str(v) for k, v in spec.params.items()})
            sleeves.append(Sleeve(f"{spec.id}:{canonical}", spec, canonical, strategy, _engine_config(spec, share)))
    return sleeves


BarLoader = Callable[[str, Timeframe], pd.DataFrame]
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


class PortfolioStepper:
    """Every sleeve's engine advanced one bar time at a time, with the portfolio caps in between.

    The backtest drives it over merged history (``run_portfolio``); the runtime drives it as bars close. It
    is the one place where sleeves, caps and the portfolio ledger meet.
    """

    def __init__(self, config: PortfolioConfig, reasons: dict[str, tuple[str, ...]], external: bool = False) -> None:
        self.config = config
        self.sleeves = sleeves_of(config)
        self.engines = {s.key: Engine(s.config, reasons[s.key], external) for s in self.sleeves}
        self.reserve = config.cash * (1.0 - sum(s.allocation for s in config.strategies))
        self.peak = config.cash
        self.events: list[dict[str, Any]] = []
        self.steps = 0
        """Bar times stepped by this stepper."""
        self._tripped = False
        self._tripped_at = 0
        self._reset_pending = False
        self._equity = {s.key: s.config.cash for s in self.sleeves}
        self._value = {s.key: 0.0 for s in self.sleeves}
        self._base_position = {s.key: s.config.max_position for s in self.sleeves}

    @property
    def tripped(self) -> bool:
        """Whether the portfolio drawdown breaker is tripped.

        Setting it to false is an operator's reset: recorded as a release at the next bar time (set the new
        ``peak`` with it). Setting it to true restores a tripped breaker (its cool-down counts from now).
        """
        return self._tripped

    @tripped.setter
    def tripped(self, value: bool) -> None:
        if value and not self._tripped:
            self._tripped_at = self.steps
        if not value and self._tripped:
            self._reset_pending = True
        self._tripped = bool(value)

    def _set_sleeve_rule(self, on: bool) -> None:
        for engine in self.engines.values():
            if on:
                engine.ledger.istate[k.I_TRIPPED] |= 1 << k.RULE_PORTFOLIO
            else:
                engine.ledger.istate[k.I_TRIPPED] &= ~(1 << k.RULE_PORTFOLIO)

    def _event(self, at: int, action: str, released_by: str, value: float, bars: int) -> None:
        self.events.append({"timestamp": pd.Timestamp(at, unit="ms", tz="UTC"), "rule": PORTFOLIO_RULE,
                            "value": value, "threshold": self.config.caps.max_drawdown or 0.0, "action": action,
                            "released_by": released_by, "bars_tripped": bars})

    def _releases(self, at: int) -> None:
        """Record an operator's reset, or release by cool-down, before the sleeves step at ``at``."""
        caps = self.config.caps
        equity = self.equity
        drawdown = 1.0 - equity / self.peak if self.peak > 0 else 0.0
        if self._reset_pending:
            self._reset_pending = False
            self._event(at, "release", "operator", drawdown, self.steps - self._tripped_at)
            self._set_sleeve_rule(False)
        cooldown = caps.breaker_cooldown_bars
        if self._tripped and cooldown is not None and self.steps - self._tripped_at >= cooldown:
            self._tripped = False
            self._event(at, "release", "cooldown", drawdown, self.steps - self._tripped_at)
            self.peak = equity
            self._set_sleeve_rule(False)

    def restore_sleeve(self, key: str) -> None:
        """Take a sleeve's marks from its (restored) ledger."""
        ledger = self.engines[key].ledger
        self._equity[key] = float(ledger.fstate[k.F_EQUITY])
        self._value[key] = float(ledger.fstate[k.F_EQUITY]) - float(ledger.fstate[k.F_CASH])

    @property
    def equity(self) -> float:
        return float(sum(self._equity.values()) + self.reserve)

    @property
    def cash(self) -> float:
        return float(sum(float(e.ledger.fstate[k.F_CASH]) for e in self.engines.values()) + self.reserve)

    @property
    def position_value(self) -> float:
        return float(sum(self._value.values()))

    def step(self, at: int, bars: dict[str, Bar]) -> dict[str, float]:
        """Advance the sleeves that have a bar opening at ``at`` (epoch ms); returns the portfolio's marks
        (``paused`` is 1.0 when any sleeve's entries are blocked at this bar time's close, else 0.0)."""
        caps = self.config.caps
        self._releases(at)
        if caps.max_gross_exposure is not None:
            total = sum(self._equity.values())
            gross = sum(abs(v) for v in self._value.values())
            for key, engine in self.engines.items():
                room = caps.max_gross_exposure * total - (gross - abs(self._value[key]))
                allowed = max(room, 0.0) / self._equity[key] if self._equity[key] > 0 else 0.0
                engine.ledger.params[k.P_MAX_POSITION] = min(self._base_position[key], allowed)
        for key, bar in bars.items():
            engine = self.engines[key]
            self._equity[key] = engine.step(at, bar.o, bar.h, bar.low, bar.c, bar.aim, bar.reason)
            self._value[key] = float(engine.ledger.fstate[k.F_UNITS]) * bar.c
        equity = sum(self._equity.values()) + self.reserve
        cash = sum(float(e.ledger.fstate[k.F_CASH]) for e in self.engines.values()) + self.reserve
        value = sum(self._value.values())
        gross = sum(abs(v) for v in self._value.values()) / equity if equity > 0 else 0.0
        self.peak = max(self.peak, equity)
        if caps.max_drawdown is not None and not self._tripped:
            drawdown = 1.0 - equity / self.peak
            if drawdown > caps.max_drawdown:
                self._tripped = True
                self._tripped_at = self.steps
                self._event(at, "trip", "", drawdown, 0)
                self._set_sleeve_rule(True)
        self.steps += 1
        paused = any(int(e.ledger.istate[k.I_TRIPPED]) != 0 for e in self.engines.values())
        return {"equity": equity, "cash": cash, "position_value": value, "gross_exposure": gross,
                "paused": 1.0 if paused else 0.0}


def run_portfolio(config: PortfolioConfig, load_bars: BarLoader) -> PortfolioResult:
    """Run every sleeve through the engine step in time order, applying the portfolio caps."""
    sleeves = sleeves_of(config)
    histories: dict[str, tuple[pd.DataFrame, Targets]] = {}
    for sleeve in sleeves:
        bars = load_bars(sleeve.symbol, Timeframe.parse(sleeve.spec.timeframe))
        if bars.empty:
            raise DataError(f"sleeve {sleeve.key!r} has no bars in the selected range")
        check_features(sleeve.strategy, bars)
        histories[sleeve.key] = (bars, sleeve.strategy.targets(bars))
    stepper = PortfolioStepper(config, {key: targets.reasons for key, (_, targets) in histories.items()})
    clock = np.unique(np.concatenate([epoch_ms(bars["timestamp"]) for bars, _ in histories.values()]))
    rows_at: dict[str, np.ndarray] = {}
    columns: dict[str, tuple[np.ndarray, ...]] = {}
    for key, (bars, targets) in histories.items():
        row_of = np.full(len(clock), -1, dtype=np.int64)
        row_of[np.searchsorted(clock, epoch_ms(bars["timestamp"]))] = np.arange(len(bars))
        rows_at[key] = row_of
        columns[key] = (bars["open"].to_numpy(), bars["high"].to_numpy(), bars["low"].to_numpy(),
                        bars["close"].to_numpy(), targets.exposure, targets.reason)
    first_close = {key: float(bars["close"].iloc[0]) for key, (bars, _) in histories.items()}
    hold_value = {s.key: s.config.cash for s in sleeves}
    stamps = pd.to_datetime(clock, unit="ms", utc=True)
    marks: list[dict[str, float]] = []
    for t in range(len(clock)):
        due: dict[str, Bar] = {}
        for key, row_of in rows_at.items():
            row = row_of[t]
            if row >= 0:
                o, h, low, c, aims, reasons = columns[key]
                due[key] = Bar(float(o[row]), float(h[row]), float(low[row]), float(c[row]), float(aims[row]),
                               int(reasons[row]))
                hold_value[key] = stepper.engines[key].ledger.config.cash * float(c[row]) / first_close[key]
        mark = stepper.step(int(clock[t]), due)
        mark["buy_and_hold"] = sum(hold_value.values()) + stepper.reserve
        marks.append(mark)
    curve = pd.DataFrame(marks)
    curve["paused"] = curve["paused"] > 0
    curve.insert(0, "timestamp", pd.Series(stamps).astype(TIMESTAMP_DTYPE))
    event_frame = pd.DataFrame(stepper.events, columns=EVENT_COLUMNS)
    return PortfolioResult({key: engine.result() for key, engine in stepper.engines.items()}, curve, event_frame,
                           config)
