"""The strategies tradeforge ships, registered by name in ``REGISTRY``.

``REGISTRY.build(name, params)`` takes parameters as ``--param k=v`` strings and refuses unknown names or bad
values with a ``DataError`` that names the strategy and the parameter:

| name | parameters (default) |
|---|---|
| ``sma_cross`` | ``fast`` (10), ``slow`` (30) |
| ``golden_cross`` | none (``sma_cross`` 50/200) |
| ``rsi_reversion`` | ``period`` (14), ``lower`` (30), ``upper`` (70) |
| ``buy_and_hold`` | none |
| ``hybrid`` | ``base`` (``golden_cross``), ``threshold`` (0.55), plus the base strategy's own parameters |

``hybrid`` keeps an entry of its base strategy only where the feature ``model_score`` is ``>= threshold``.

Every strategy is also a stream (``strategy.stream()``, a ``DecisionStream``): decisions advance by the next rows
with constant work per row, and ``targets(frame)`` is a fresh stream given the whole frame (see ``base``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from pipeline.domain import DataError
from pipeline.strategies.base import REGISTRY, DecisionStream, Strategy, Targets, check_features
from pipeline.strategies.buy_and_hold import BuyAndHold
from pipeline.strategies.model_gate import ModelGated
from pipeline.strategies.rsi_reversion import RsiReversion
from pipeline.strategies.sma_cross import SmaCross, golden_cross

__all__ = [
    "REGISTRY",
    "BuyAndHold",
    "DecisionStream",
    "ModelGated",
    "RsiReversion",
    "SmaCross",
    "Strategy",
    "Targets",
    "check_features",
    "golden_cross",
]

HYBRID = "hybrid"
_INTEGER = re.compile(r"^[+-]?\d+$")


def _known(strategy: str, params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        accepted = f"its parameters are {', '.join(allowed)}" if allowed else "it takes no parameters"
        raise DataError(f"strategy {strategy!r} has no parameter {', '.join(map(repr, unknown))}; {accepted}")


def _integer(strategy: str, params: Mapping[str, str], key: str, default: int) -> int:
    if key not in params:
        return default
    text = str(params[key]).strip()
    if not _INTEGER.match(text):
        raise DataError(f"strategy {strategy!r} parameter {key!r} must be an integer, got {params[key]!r}")
    return int(text)


def _number(strategy: str, params: Mapping[str, str], key: str, default: float) -> float:
    if key not in params:
        return default
    try:
        value = float(str(params[key]).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"strategy {strategy!r} parameter {key!r} must be a finite number, got {params[key]!r}")
    return value


def _sma_cross(params: Mapping[str, str]) -> Strategy:
    _known("sma_cross", params, ("fast", "slow"))
    return SmaCross(_integer("sma_cross", params, "fast", 10), _integer("sma_cross", params, "slow", 30))


def _golden_cross(params: Mapping[str, str]) -> Strategy:
    _known("golden_cross", params, ())
    return golden_cross()


def _rsi_reversion(params: Mapping[str, str]) -> Strategy:
    _known("rsi_reversion", params, ("period", "lower", "upper"))
    return RsiReversion(
        _integer("rsi_reversion", params, "period", 14),
        _number("rsi_reversion", params, "lower", 30.0),
        _number("rsi_reversion", params, "upper", 70.0),
    )


def _buy_and_hold(params: Mapping[str, str]) -> Strategy:
    _known("buy_and_hold", params, ())
    return BuyAndHold()


def _hybrid(params: Mapping[str, str]) -> Strategy:
    base_name = str(params.get("base", "golden_cross")).strip()
    if base_name == HYBRID or base_name not in REGISTRY.factories:
        rules = [name for name in REGISTRY.names() if name != HYBRID]
        raise DataError(f"strategy {HYBRID!r} parameter 'base' must be one of {', '.join(rules)}, got {base_name!r}")
    threshold = _number(HYBRID, params, "threshold", 0.55)
    base_params = {key: value for key, value in params.items() if key not in ("base", "threshold")}
    try:
        base = REGISTRY.build(base_name, base_params)
    except DataError as exc:
        raise DataError(f"strategy {HYBRID!r} with base {base_name!r}: {exc}") from exc
    return ModelGated(base, threshold, name=HYBRID)


REGISTRY.register("sma_cross", _sma_cross)
REGISTRY.register("golden_cross", _golden_cross)
REGISTRY.register("rsi_reversion", _rsi_reversion)
REGISTRY.register("buy_and_hold", _buy_and_hold)
REGISTRY.register(HYBRID, _hybrid)
