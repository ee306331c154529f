"""Buy and hold: the benchmark every other strategy has to beat.

It decides ``1.0`` (all in long) on every bar with reason ``"buy_and_hold"``. Since the engine acts only when a
decision differs from the exposure it is aiming for, that is a single purchase on the first bar, and again after
anything else (a risk check, a flatten command) has taken the position away.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.strategies.base import Targets, check_features


class BuyAndHold:
    """Always all in long."""

    def __init__(self, name: str = "buy_and_hold") -> None:
        self.name = name
        self.requires: tuple[str, ...] = ()
        self.warmup = 0
        self.reasons: tuple[str, ...] = (name,)

    def __repr__(self) -> str:
        return f"BuyAndHold(name={self.name!r})"

    def targets(self, features: pd.DataFrame) -> Targets:
        check_features(self, features)
        n = len(features)
        return Targets(np.ones(n), np.zeros(n, dtype=np.int64), self.reasons)
