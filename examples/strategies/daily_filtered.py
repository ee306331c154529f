"""A trader's own strategy that reads a higher timeframe: the crossover of two moving means of the strategy's
own bars, taking entries only while the last *closed* higher-timeframe bar (a day, by default) closed above
its open.

``HigherTimeframe`` (``pipeline.strategies.series``) builds the higher-timeframe bars from the strategy's own
rows, causally: a day is visible from the bar that completes it, never earlier, so a backtest, a paper replay
and live trading read the same day at the same bar. Its state is saved and restored with the strategy's, like
the moving means'. Exits are never filtered: the filter can keep the strategy out of a trade, never in one.

    tradeforge backtest --strategy examples/strategies/daily_filtered.py:DailyFiltered --param higher=4h ...
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pipeline.domain import Timeframe
from pipeline.features.streaming import Window, pack, section, unpack
from pipeline.strategies import StrategyParams, Targets, check_features
from pipeline.strategies.base import check_owner
from pipeline.strategies.series import HigherTimeframe


class DailyFilteredParams(StrategyParams):
    fast: int = Field(12, ge=1, description="bars in the fast mean of closes")
    slow: int = Field(48, ge=2, description="bars in the slow mean of closes; more than fast")
    higher: str = Field("1d", description="the higher timeframe whose last closed bar must have risen")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.slow <= self.fast:
            raise ValueError(f"'slow' must be greater than 'fast' ({self.fast}), got {self.slow}")
        Timeframe.parse(self.higher)
        return self


class DailyFiltered:
    """Moving-mean crossover whose entries need the last closed higher-timeframe bar to have risen."""

    name = "daily_filtered"
    Params = DailyFilteredParams
    requires: tuple[str, ...] = ()

    def __init__(self, params: DailyFilteredParams | None = None) -> None:
        self.params = params or DailyFilteredParams()
        self.warmup = self.params.slow
        self.reasons = (f"up-cross {self.params.fast}/{self.params.slow}, {self.params.higher} up",
                        f"down-cross {self.params.fast}/{self.params.slow}")

    def __repr__(self) -> str:
        p = self.params
        return f"DailyFiltered(fast={p.fast}, slow={p.slow}, higher={p.higher!r})"

    def stream(self) -> DailyFilteredStream:
        return DailyFilteredStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class DailyFilteredStream:
    """Two windows of closes, the previous bar's spread and the higher timeframe."""

    def __init__(self, strategy: DailyFiltered) -> None:
        self.strategy = strategy
        self._fast = Window(strategy.params.fast)
        self._slow = Window(strategy.params.slow)
        self._higher = HigherTimeframe(strategy.params.higher)
        self._previous = np.nan

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        close = features["close"].to_numpy(dtype=np.float64)
        spread = self._fast.update(close)[0] - self._slow.update(close)[0]
        day = self._higher.update(features)
        risen = (day["close"] > day["open"]).to_numpy()  # False before the first closed higher bar
        previous = np.r_[self._previous, spread[:-1]]
        if len(spread):
            self._previous = float(spread[-1])
        enter = (previous < 0) & (spread > 0) & risen
        leave = (previous > 0) & (spread < 0)
        return Targets.from_signals(enter, leave, self.strategy.reasons)

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy), "fast": self._fast.state(), "slow": self._slow.state(),
                "higher": self._higher.state(), "previous": pack(np.array([self._previous]))}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        fresh = DailyFilteredStream(self.strategy)
        fresh._fast.restore(section(state, "fast", "daily_filtered state"))
        fresh._slow.restore(section(state, "slow", "daily_filtered state"))
        fresh._higher.restore(section(state, "higher", "daily_filtered state"))
        fresh._previous = float(unpack(state.get("previous"), 1, "daily_filtered previous spread")[0])
        self.__dict__.update(fresh.__dict__)
