"""A trader's own strategy, complete: long when the close breaks above its moving mean by more than a band, flat
when it falls back below the mean.

Everything tradeforge needs from a strategy is here:

* ``name`` — the name it is found by (``tradeforge backtest --strategy band_breakout`` when this folder is in the
  setting ``strategy_paths``; or name the class: ``--strategy examples/strategies/band_breakout.py:BandBreakout``);
* ``Params`` — its parameters as a frozen pydantic model with defaults, bounds and descriptions: ``--param``,
  portfolio files and Prefect parameters are validated against it, and ``tradeforge strategies show`` prints it;
* ``requires`` — feature columns it reads besides the bars (none here), and ``warmup`` — bars needed before its
  first decision;
* ``stream()`` — a decision stream: ``update(rows)`` returns the decisions for exactly those rows (NaN = no
  decision, else the wanted exposure as a fraction of equity) with constant work per row, and ``state()`` /
  ``restore()`` save and continue it exactly, so a runtime restarted mid-trade decides as if it never stopped;
* ``targets(frame)`` — the batch form, a fresh stream given the whole frame: backtests and the runtime make the
  same decisions by construction.

The mean is an exact window mean (``pipeline.features.streaming.Window``), so a decision depends on the last
``window`` closes only: the same whatever history precedes them (no warm-up sensitivity), and never on a later bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from pipeline.features.streaming import Window, section
from pipeline.strategies import StrategyParams, Targets, check_features
from pipeline.strategies.base import check_owner


class BandBreakoutParams(StrategyParams):
    window: int = Field(48, ge=2, le=10_000, description="bars in the moving mean of closes")
    band: float = Field(0.01, ge=0.0, lt=0.5, description="how far above the mean (a fraction) the close must be")


class BandBreakout:
    """Long above the moving mean plus a band, flat below the mean."""

    name = "band_breakout"
    Params = BandBreakoutParams
    requires: tuple[str, ...] = ()

    def __init__(self, params: BandBreakoutParams | None = None) -> None:
        self.params = params or BandBreakoutParams()
        self.warmup = self.params.window
        self.reasons = (f"close {self.params.band:.2%} above its {self.params.window}-bar mean",
                        f"close below its {self.params.window}-bar mean")

    def __repr__(self) -> str:
        return f"BandBreakout(window={self.params.window}, band={self.params.band!r})"

    def stream(self) -> BandBreakoutStream:
        return BandBreakoutStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class BandBreakoutStream:
    """The decisions bar by bar; the state is the window of closes."""

    def __init__(self, strategy: BandBreakout) -> None:
        self.strategy = strategy
        self._mean = Window(strategy.params.window)

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        close = features["close"].to_numpy(dtype=np.float64)
        mean, _ = self._mean.update(close)
        enter = close > mean * (1.0 + self.strategy.params.band)  # False where the mean is still NaN
        leave = close < mean
        return Targets.from_signals(enter, leave, self.strategy.reasons)

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy), "mean": self._mean.state()}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        fresh = Window(self.strategy.params.window)
        fresh.restore(section(state, "mean", "band_breakout state"))
        self._mean = fresh
