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

``engine`` takes every ``EngineConfig`` field but ``cash`` (a strategy's cash is its allocation). A file with a
mistake is refused whole, before anything runs, each problem named by the file, the strategy entry (its ``id``) and
the key, with what is accepted (``load_portfolio``).

Every (strategy, symbol) pair is a ``Sleeve``: a sub-ledger with its own cash (its share of the allocation),
engine settings and strategy. How sleeves are stepped together is ``pipeline.backtest.portfolio``.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.accepted import Location, problem
from pipeline.backtest.inputs import engine_config
from pipeline.domain import DataError, Timeframe, parse_symbol
from pipeline.engine import EngineConfig
from pipeline.strategies import REGISTRY, Strategy
from pipeline.strategies.loading import anchor

SUFFIXES = (".toml", ".yaml", ".yml")


class Caps(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_gross_exposure: float | None = Field(None, gt=0)
    max_drawdown: float | None = Field(None, gt=0, lt=1)
    breaker_cooldown_bars: int | None = Field(None, ge=1)
    """Bar times after which the portfolio drawdown breaker releases by itself; none waits for an operator."""


class StrategySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.\-]+$")
    strategy: str
    symbols: list[str] = Field(min_length=1)
    timeframe: str
    allocation: float = Field(gt=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)
    engine: dict[str, Any] = Field(default_factory=dict)


class PortfolioConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cash: float = Field(100_000.0, gt=0)
    caps: Caps = Field(default_factory=Caps)
    strategies: list[StrategySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioConfig:
        total = sum(s.allocation for s in self.strategies)
        if total > 1.0 + 1e-9:
            parts = " + ".join(f"{s.id} {s.allocation:g}" for s in self.strategies)
            raise ValueError(f"allocations add up to {total:.4g} ({parts}); they may not exceed 1")
        shared = sorted(name for name, count in Counter(s.id for s in self.strategies).items() if count > 1)
        if shared:
            raise ValueError(f"strategy ids must be unique: {', '.join(map(repr, shared))} is used more than once")
        return self


def load_portfolio(path: Path) -> PortfolioConfig:
    """Read and validate a portfolio file. Every problem is refused at once, in one ``DataError`` naming the file,
    the strategy entry (by its id) and the key: a missing or unreadable file, one that does not parse (with its
    line), unknown keys (with the keys there are), values out of range (with the range), an unknown strategy (with
    the known ones) or parameter, bad symbols, timeframes and engine settings."""
    where = f"portfolio file {str(path)!r}"
    raw = _read(path, where)
    try:
        config = PortfolioConfig.model_validate(raw)
    except ValidationError as exc:
        raise DataError(_refusal(where, [_located(error, raw) for error in exc.errors(include_url=False)])) from None
    anchored = [spec.model_copy(update={"strategy": anchor(spec.strategy, path.parent)}) for spec in config.strategies]
    config = config.model_copy(update={"strategies": anchored})
    problems = [(f"strategy {spec.id!r}", text) for spec in config.strategies for text in _entry_problems(spec)]
    if problems:
        raise DataError(_refusal(where, problems))
    return config


def _read(path: Path, where: str) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"{where} does not exist")
    if path.is_dir():
        raise DataError(f"{where} is a folder, not a portfolio file")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{where} must be .toml, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw: object = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{where} is not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise DataError(f"{where} is not valid YAML: {at}{getattr(exc, 'problem', None) or exc}") from None
    if raw is None or raw == {}:
        raise DataError(f"{where} is empty: it needs at least one strategy entry (strategies)")
    if not isinstance(raw, dict):
        raise DataError(f"{where} must hold a table of keys (cash, caps, strategies), not a {type(raw).__name__}")
    return raw


def _located(error: Any, raw: dict[str, Any]) -> tuple[str, str]:
    """A validation error as (the strategy entry it is in, or "", the problem named from there)."""
    loc: Location = tuple(error["loc"])
    if len(loc) >= 2 and loc[0] == "strategies" and isinstance(loc[1], int):
        entries = raw.get("strategies")
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get("id") if isinstance(entry, dict) else None
        label = f"strategy {name!r}" if isinstance(name, str) and name else f"strategies[{loc[1]}] (no id)"
        return label, problem(error, PortfolioConfig, lambda at: ".".join(str(part) for part in at[2:]))
    return "", problem(error, PortfolioConfig, lambda at: ".".join(str(part) for part in at))


def _entry_problems(spec: StrategySpec) -> list[str]:
    """What is wrong with one strategy entry beyond its shape: symbols, timeframe, strategy and parameters, engine
    settings."""
    found, canonical = [], []
    for symbol in spec.symbols:
        try:
            canonical.append(parse_symbol(symbol)[0])
        except DataError as exc:
            found.append(f"symbols: {exc}")
    found += [f"symbols: {symbol!r} is listed {count} times" for symbol, count in Counter(canonical).items()
              if count > 1]
    for check in (lambda: Timeframe.parse(spec.timeframe), lambda: REGISTRY.build(spec.strategy, spec.params),
                  lambda: _engine_config(spec, 1.0)):
        try:
            check()
        except DataError as exc:
            found.append(" ".join(str(exc).split()))
    return found


def _refusal(where: str, problems: list[tuple[str, str]]) -> str:
    """``portfolio file 'p.toml', strategy 'trend': ...; strategy 'carry': ...`` (``portfolio file 'p.toml': ...``
    for a problem outside the strategy entries)."""
    pieces = [f"{entry}: {text}" if entry else text for entry, text in problems]
    return f"{where}{', ' if problems[0][0] else ': '}{'; '.join(pieces)}"


def _engine_config(spec: StrategySpec, cash: float) -> EngineConfig:
    if "cash" in spec.engine:
        raise DataError("engine.cash cannot be set: a strategy's cash is its allocation of the portfolio's cash, "
                        "split evenly over its symbols")
    return engine_config({**spec.engine, "cash": cash}, lambda loc: ".".join(["engine", *map(str, loc)]))


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
