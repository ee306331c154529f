"""The strategies: the ones tradeforge ships and a trader's own, every one found by name in ``REGISTRY``.

Each strategy declares its parameters as a frozen pydantic model (:mod:`pipeline.strategies.params`);
``REGISTRY.build(name, params)`` validates ``params`` (``--param k=v`` text, TOML/YAML values, Prefect
parameters) against it once and refuses unknown names or bad values with a ``DataError`` naming the strategy,
the parameter and its bounds. The shipped strategies:

| name | parameters (default) |
|---|---|
| ``sma_cross`` | ``fast`` (10, >= 1), ``slow`` (30, > fast) |
| ``golden_cross`` | none (``sma_cross`` 50/200) |
| ``rsi_reversion`` | ``period`` (14, >= 2), ``lower`` (30), ``upper`` (70; 0 < lower < upper < 100) |
| ``buy_and_hold`` | none |
| ``hybrid`` | ``base`` (``golden_cross``), ``threshold`` (0.55, 0..1), plus the base strategy's own parameters |

``hybrid`` keeps an entry of its base strategy only where the feature ``model_score`` is ``>= threshold``.

A trader's own strategy is a class in their own file or package (:mod:`pipeline.strategies.loading`), found as
``PATH.py:Class``, ``package.module:Class``, by its ``name`` in a ``strategy_paths`` folder, or through the
``tradeforge.strategies`` entry points; ``examples/strategies/`` holds a complete one.

A strategy may read a higher timeframe of its own bars (:mod:`pipeline.strategies.series`) and other symbols'
bars (an optional ``series`` attribute of :class:`pipeline.strategies.other_series.OtherSeries`, whose aligned
columns the backtest and the runtime add to its frame).

Every strategy is also a stream (``strategy.stream()``, a ``DecisionStream``): decisions advance by the next rows
with constant work per row, and ``targets(frame)`` is a fresh stream given the whole frame (see ``base``).
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from pipeline.domain import DataError
from pipeline.strategies.base import DecisionStream, Strategy, Targets, check_features
from pipeline.strategies.buy_and_hold import BuyAndHold
from pipeline.strategies.catalog import REGISTRY, StrategySpec
from pipeline.strategies.model_gate import ModelGated
from pipeline.strategies.params import NoParams, StrategyParams
from pipeline.strategies.rsi_reversion import RsiReversion
from pipeline.strategies.sma_cross import SmaCross, golden_cross

__all__ = [
    "REGISTRY",
    "BuyAndHold",
    "DecisionStream",
    "ModelGated",
    "NoParams",
    "RsiReversion",
    "SmaCross",
    "Strategy",
    "StrategyParams",
    "StrategySpec",
    "Targets",
    "check_features",
    "golden_cross",
]

HYBRID = "hybrid"


class SmaCrossParams(StrategyParams):
    fast: int = Field(10, ge=1, description="bars in the fast mean of closes")
    slow: int = Field(30, ge=2, description="bars in the slow mean of closes; more than fast")

    @model_validator(mode="after")
    def _slow_after_fast(self) -> Self:
        if self.slow <= self.fast:
            raise ValueError(f"'slow' must be greater than 'fast' ({self.fast}), got {self.slow}")
        return self


class RsiReversionParams(StrategyParams):
    period: int = Field(14, ge=2, description="bars in Wilder's RSI")
    lower: float = Field(30.0, gt=0, lt=100, description="buy when the RSI crosses below this level")
    upper: float = Field(70.0, gt=0, lt=100, description="go flat when the RSI crosses above this level")

    @model_validator(mode="after")
    def _upper_above_lower(self) -> Self:
        if self.upper <= self.lower:
            raise ValueError(f"'upper' must be greater than 'lower' ({self.lower:g}), got {self.upper:g}")
        return self


class HybridParams(StrategyParams):
    """The gate's own parameters; any other parameter is the base strategy's."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)
    base: str = Field("golden_cross", description="the rule strategy whose entries the model confirms")
    threshold: float = Field(0.55, ge=0, le=1, description="lowest model score that keeps an entry")


def _hybrid(params: HybridParams) -> Strategy:
    rules = sorted(name for name in REGISTRY.built_in if name != HYBRID)
    if params.base not in rules:
        raise DataError(f"strategy {HYBRID!r} parameter 'base' must be one of {', '.join(rules)}, got {params.base!r}")
    base_params: dict[str, Any] = dict(params.model_extra or {})
    try:
        base = REGISTRY.build(params.base, base_params)
    except DataError as exc:
        raise DataError(f"strategy {HYBRID!r} with base {params.base!r}: {exc}") from exc
    return ModelGated(base, params.threshold, name=HYBRID)


REGISTRY.register(StrategySpec("sma_cross", SmaCrossParams, lambda p: SmaCross(p.fast, p.slow),
                               "long when the fast mean of closes crosses above the slow one, flat when below"))
REGISTRY.register(StrategySpec("golden_cross", NoParams, lambda _: golden_cross(), "the classic 50/200 crossover"))
REGISTRY.register(StrategySpec("rsi_reversion", RsiReversionParams, lambda p: RsiReversion(p.period, p.lower, p.upper),
                               "buy when Wilder's RSI crosses below lower, flat when it crosses above upper"))
REGISTRY.register(StrategySpec("buy_and_hold", NoParams, lambda _: BuyAndHold(), "long from the first bar"))
REGISTRY.register(StrategySpec(HYBRID, HybridParams, _hybrid,
                               "the base strategy's entries, kept only where the model score reaches threshold"))
