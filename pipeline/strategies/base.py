"""What a strategy is: a causal, streaming function from a feature frame to per-bar *decisions*.

A strategy returns ``Targets``: for every bar, either NaN (no decision on this bar) or the desired exposure as
a fraction of the strategy's equity (``1.0`` all in long, ``0.0`` flat, ``-1.0`` all in short), with a reason
code. Decisions are events, not levels: the engine acts when a decision differs from the exposure it is
currently aiming for.

Decisions are a stream (DESIGN.md, section 2): ``strategy.stream()`` is a ``DecisionStream`` from the first bar;
its ``update(rows)`` takes the next rows of the feature frame and returns the decisions for exactly those rows,
with constant work per row, carrying only what the rule needs (window values, recursion states, the previous
bar's indicator). ``state()`` is an exact JSON-serialisable snapshot and ``restore(state)`` continues from it.
``targets(frame)``, the batch form, is ``stream().update(frame)``: the backtest and the runtime (bar by bar)
make the same decisions by construction (``tests/pipeline/features/test_streaming.py`` checks it bit for bit on
real data).

Every strategy is causal: its decision at bar i uses rows ``<= i`` only.
``tests/pipeline/strategies/test_strategy_causality.py`` checks this on every shipped strategy by recomputing on
truncated prefixes of real data.

The feature frame is a canonical bar frame (``pipeline.domain``) plus optional extra columns; a strategy that
needs one (for example ``model_score``, the probability an ML model assigns to an up-move) names it in
``requires``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.domain import DataError


@dataclass(frozen=True)
class Targets:
    """Per-bar decisions of a strategy: ``exposure[i]`` (NaN = none) and ``reason[i]`` (index into ``reasons``)."""

    exposure: np.ndarray  # float64, one per bar
    reason: np.ndarray  # int64, one per bar; -1 where exposure is NaN
    reasons: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.exposure.shape != self.reason.shape:
            raise ValueError("exposure and reason must have one entry per bar")

    @classmethod
    def from_signals(cls, enter: np.ndarray, leave: np.ndarray, reasons: tuple[str, ...]) -> Targets:
        """Long-only decisions: ``1.0`` where ``enter`` (reason 0), ``0.0`` where ``leave`` (reason 1), else none."""
        exposure = np.full(len(enter), np.nan)
        reason = np.full(len(enter), -1, dtype=np.int64)
        exposure[enter], reason[enter] = 1.0, 0
        exposure[leave], reason[leave] = 0.0, 1
        return cls(exposure, reason, reasons)

    def reason_text(self, code: int) -> str:
        return self.reasons[code] if 0 <= code < len(self.reasons) else ""


class DecisionStream(Protocol):
    """A strategy's decisions, advanced by the next rows of its feature frame."""

    def update(self, features: pd.DataFrame) -> Targets:
        """Decisions for these rows only, continuing the rows given before (constant work per row)."""
        ...

    def state(self) -> dict[str, Any]:
        """The exact state, JSON-serialisable; its size does not depend on how many rows were seen."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Continue exactly where the stream that saved ``state`` stopped (all or nothing)."""
        ...


class Strategy(Protocol):
    """A named, parameterised decision function."""

    name: str
    requires: tuple[str, ...]
    warmup: int
    """Bars of history needed before the first decision can be made."""

    def targets(self, features: pd.DataFrame) -> Targets:
        """Decisions for every row of ``features``: ``self.stream().update(features)``."""
        ...

    def stream(self) -> DecisionStream:
        """A fresh decision stream, starting at the first bar it is given."""
        ...


def check_owner(state: dict[str, Any], owner: object) -> None:
    """Refuse a saved decision stream state that another strategy (or other parameters) saved."""
    if state.get("strategy") != repr(owner):
        raise DataError(f"saved decision stream belongs to {state.get('strategy')!r}, not to {owner!r}")


def check_features(strategy: Strategy, features: pd.DataFrame) -> None:
    """Refuse a feature frame that lacks a column the strategy reads."""
    missing = [c for c in ("close", *strategy.requires) if c not in features.columns]
    if missing:
        raise DataError(f"strategy {strategy.name!r} needs column(s) {', '.join(missing)} in its features")
