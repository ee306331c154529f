"""Multi-strategy portfolios: a portfolio file, one sub-ledger per strategy and symbol, portfolio caps on top.

A portfolio file (TOML or YAML) looks like::

    cash = 100000

    [caps]
    max_gross_exposure = 1.0   # sum of |position values| / portfolio equity, checked before every order
    max_drawdown = 0.25        # portfolio breaker: a fall from the portfolio's peak pauses every strategy

    [[strategies]]
    id = "btc-trend"
    strategy = "golden_cross"
    symbols = ["BTC/USDT"]
    timeframe = "1h"
    allocation = 0.6           # fraction of the portfolio's cash; split evenly over the symbols
    params = {}                # strategy parameters (as --param)
    engine = { max_position = 1.0, stop_loss = 0.05 }   # EngineConfig fields for this strategy

Every (strategy, symbol) pair is a sub-ledger with its own cash, position, trades and breakers, advanced by
the same compiled step as a single backtest (``pipeline.engine.Engine``). Bars of all pairs are merged in time
order; at each bar time every pair with a bar steps, then the portfolio is marked and its caps checked:

* ``max_gross_exposure``: before the next bars, each sub-ledger's max-position fraction is lowered so that
  its position may grow only into the room the others leave (room measured at the latest close);
* ``max_drawdown``: a portfolio drawdown beyond the cap trips the breaker of every sub-ledger (recorded once,
  with time and values).

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
    """Portfolio per bar time: ``timestamp, equity, cash, position_value, gross_exposure, buy_and_hold`` (the
    value of buying each sleeve's symbol with its cash at its first bar and holding)."""
    events: pd.DataFrame
    """Portfolio-level breaker events: ``timestamp, rule, value, threshold``."""
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


def run_portfolio(config: PortfolioConfig, load_bars: BarLoader) -> PortfolioResult:
    """Run every sleeve through the engine step in time order, applying the portfolio caps."""
    sleeves = sleeves_of(config)
    prepared: list[tuple[Sleeve, pd.DataFrame, Targets, Engine]] = []
    for sleeve in sleeves:
        bars = load_bars(sleeve.symbol, Timeframe.parse(sleeve.spec.timeframe))
        if bars.empty:
            raise DataError(f"sleeve {sleeve.key!r} has no bars in the selected range")
        check_features(sleeve.strategy, bars)
        targets = sleeve.strategy.targets(bars)
        prepared.append((sleeve, bars, targets, Engine(sleeve.config, targets.reasons)))
    clock = np.unique(np.concatenate([epoch_ms(bars["timestamp"]) for _, bars, _, _ in prepared]))
    positions = [np.searchsorted(clock, epoch_ms(bars["timestamp"])) for _, bars, _, _ in prepared]
    rows_at: list[np.ndarray] = []
    for index in positions:
        row_of = np.full(len(clock), -1, dtype=np.int64)
        row_of[index] = np.arange(len(index))
        rows_at.append(row_of)
    caps = config.caps
    base_position = [sleeve.config.max_position for sleeve, _, _, _ in prepared]
    last_equity = np.array([sleeve.config.cash for sleeve, _, _, _ in prepared])
    last_value = np.zeros(len(prepared))
    hold_value = last_equity.copy()  # the same cash bought and held in each sleeve's symbol
    first_close = np.array([bars["close"].iloc[0] for _, bars, _, _ in prepared])
    n = len(clock)
    equity, cash, value, gross, benchmark = (np.empty(n) for _ in range(5))
    reserve = config.cash * (1.0 - sum(s.allocation for s in config.strategies))  # unallocated cash
    peak = config.cash
    events: list[dict[str, Any]] = []
    tripped = False
    arrays = [
        (bars["open"].to_numpy(), bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy())
        for _, bars, _, _ in prepared
    ]
    stamps = pd.to_datetime(clock, unit="ms", utc=True)
    for t in range(n):
        if caps.max_gross_exposure is not None:
            total = last_equity.sum()
            for j, (_, _, _, engine) in enumerate(prepared):
                room = caps.max_gross_exposure * total - (np.abs(last_value).sum() - abs(last_value[j]))
                allowed = max(room, 0.0) / last_equity[j] if last_equity[j] > 0 else 0.0
                engine.ledger.params[k.P_MAX_POSITION] = min(base_position[j], allowed)
        for j, (_, _, targets, engine) in enumerate(prepared):
            row = rows_at[j][t]
            if row < 0:
                continue
            o, h, low, c = (a[row] for a in arrays[j])
            last_equity[j] = engine.step(stamps[t], o, h, low, c, targets.exposure[row], int(targets.reason[row]))
            last_value[j] = float(engine.ledger.fstate[k.F_UNITS]) * c
            hold_value[j] = engine.ledger.config.cash * c / first_close[j]
        equity[t] = last_equity.sum() + reserve
        cash[t] = sum(float(engine.ledger.fstate[k.F_CASH]) for _, _, _, engine in prepared) + reserve
        value[t] = last_value.sum()
        benchmark[t] = hold_value.sum() + reserve
        gross[t] = np.abs(last_value).sum() / equity[t] if equity[t] > 0 else 0.0
        peak = max(peak, equity[t])
        if caps.max_drawdown is not None and not tripped:
            drawdown = 1.0 - equity[t] / peak
            if drawdown > caps.max_drawdown:
                tripped = True
                events.append({"timestamp": stamps[t], "rule": "portfolio_drawdown", "value": drawdown,
                               "threshold": caps.max_drawdown})
                for _, _, _, engine in prepared:
                    engine.ledger.istate[k.I_TRIPPED] |= 1 << k.RULE_DRAWDOWN
    curve = pd.DataFrame(
        {
            "timestamp": pd.Series(stamps).astype(TIMESTAMP_DTYPE),
            "equity": equity,
            "cash": cash,
            "position_value": value,
            "gross_exposure": gross,
            "buy_and_hold": benchmark,
        }
    )
    event_frame = pd.DataFrame(events, columns=["timestamp", "rule", "value", "threshold"])
    return PortfolioResult(
        {sleeve.key: engine.result() for sleeve, _, _, engine in prepared}, curve, event_frame, config
    )

