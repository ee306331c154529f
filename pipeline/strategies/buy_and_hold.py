"""Buy and hold: the benchmark every other strategy has to beat.

It decides ``1.0`` (all in long) on every bar with reason ``"buy_and_hold"``. Since the engine acts only when a
decision differs from the exposure it is aiming for, that is a single purchase on the first bar, and again after
anything else (a risk check, a flatten command) has taken the position away. Its stream carries nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.strategies.base import Targets, check_features, check_owner


class BuyAndHold:
    """Always all in long."""

    def __init__(self, name: str = "buy_and_hold") -> None:
        self.name = name
        self.requires: tuple[str, ...] = ()
        self.warmup = 0
        self.reasons: tuple[str, ...] = (name,)

    def __repr__(self) -> str:
        return f"BuyAndHold(name={self.name!r})"

    def stream(self) -> BuyAndHoldStream:
        return BuyAndHoldStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class BuyAndHoldStream:
    """``1.0`` on every row; no state."""

    def __init__(self, strategy: BuyAndHold) -> None:
        self.strategy = strategy

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        n = len(features)
        return Targets(np.ones(n), np.zeros(n, dtype=np.int64), self.strategy.reasons)

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy)}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
