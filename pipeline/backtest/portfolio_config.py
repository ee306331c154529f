"""What a portfolio is: its file (TOML or YAML), caps and sleeves, validated once at the edge.

A portfolio file looks like::

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

Every (strategy, symbol) pair is a ``Sleeve``: a sub-ledger with its own cash (its share of the allocation),
engine settings and strategy. How sleeves are stepped together is ``pipeline.backtest.portfolio``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.domain import DataError, Timeframe, parse_symbol
from pipeline.engine import EngineConfig
from pipeline.strategies import REGISTRY, Strategy
from pipeline.strategies.loading import anchor


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
    params: dict[str, Any] = Field(default_factory=dict)
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
    anchored = [spec.model_copy(update={"strategy": anchor(spec.strategy, path.parent)}) for spec in config.strategies]
    config = config.model_copy(update={"strategies": anchored})
    for spec in config.strategies:
        try:
            for symbol in spec.symbols:
                parse_symbol(symbol)
            Timeframe.parse(spec.timeframe)
            REGISTRY.build(spec.strategy, spec.params)
            _engine_config(spec, 1.0)
        except DataError as exc:
            raise DataError(f"portfolio file {str(path)!r}, strategy {spec.id!r}: {exc}") from exc
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


def sleeves_of(config: PortfolioConfig) -> list[Sleeve]:
    sleeves = []
    for spec in config.strategies:
        share = config.cash * spec.allocation / len(spec.symbols)
        for symbol in spec.symbols:
            canonical, _ = parse_symbol(symbol)
            strategy = REGISTRY.build(spec.strategy, spec.params)
            sleeves.append(Sleeve(f"{spec.id}:{canonical}", spec, canonical, strategy, _engine_config(spec, share)))
    return sleeves
