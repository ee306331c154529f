"""A trader's own strategy with richer orders: enter on a pullback with a limit order, protect the position
with a stop-loss and a trailing stop, and take entries only while the higher timeframe rises.

On an up-cross of two moving means of its own bars, while the last *closed* higher-timeframe bar (a day by
default, ``HigherTimeframe``) closed above its open, it places a day limit order ``offset`` below the close:
it fills only if the market comes back to that price before the trading day ends. The position it opens has a
stop-loss and a trailing stop (fractions of the entry price and of the best price since). A down-cross exits
with a market order. The engine simulates these orders in a backtest and a paper run, and a live venue holds
them (the stop rests at the venue, so it protects while the runtime is down).

    tradeforge backtest --strategy examples/strategies/pullback_entry.py:PullbackEntry --param offset=0.002 ...
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pipeline.domain import Timeframe
from pipeline.domain.orders import LIMIT, MARKET
from pipeline.features.streaming import Window, pack, section, unpack
from pipeline.strategies import StrategyParams, Targets, check_features
from pipeline.strategies.base import check_owner
from pipeline.strategies.series import HigherTimeframe


class PullbackEntryParams(StrategyParams):
    fast: int = Field(12, ge=1, description="bars in the fast mean of closes")
    slow: int = Field(48, ge=2, description="bars in the slow mean of closes; more than fast")
    higher: str = Field("1d", description="the higher timeframe whose last closed bar must have risen")
    offset: float = Field(0.002, ge=0, lt=0.2, description="the limit entry's distance below the close")
    stop_loss: float = Field(0.01, gt=0, lt=1, description="stop-loss below the entry price (fraction)")
    trailing_stop: float = Field(0.02, ge=0, lt=1, description="trailing stop below the best price (0: none)")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.slow <= self.fast:
            raise ValueError(f"'slow' must be greater than 'fast' ({self.fast}), got {self.slow}")
        Timeframe.parse(self.higher)
        return self


class PullbackEntry:
    """Moving-mean crossover entered by a day limit order on a pullback, with a stop-loss and a trailing stop."""

    name = "pullback_entry"
    Params = PullbackEntryParams
    requires: tuple[str, ...] = ()

    def __init__(self, params: PullbackEntryParams | None = None) -> None:
        self.params = params or PullbackEntryParams()
        self.warmup = self.params.slow
        p = self.params
        self.reasons = (f"pullback {p.offset:g} after up-cross {p.fast}/{p.slow}, {p.higher} up",
                        f"down-cross {p.fast}/{p.slow}")

    def __repr__(self) -> str:
        p = self.params
        return (f"PullbackEntry(fast={p.fast}, slow={p.slow}, higher={p.higher!r}, offset={p.offset!r}, "
                f"stop_loss={p.stop_loss!r}, trailing_stop={p.trailing_stop!r})")

    def stream(self) -> PullbackEntryStream:
        return PullbackEntryStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class PullbackEntryStream:
    """Two windows of closes, the previous bar's spread and the higher timeframe."""

    def __init__(self, strategy: PullbackEntry) -> None:
        self.strategy = strategy
        self._fast = Window(strategy.params.fast)
        self._slow = Window(strategy.params.slow)
        self._higher = HigherTimeframe(strategy.params.higher)
        self._previous = np.nan

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        p = self.strategy.params
        close = features["close"].to_numpy(dtype=np.float64)
        spread = self._fast.update(close)[0] - self._slow.update(close)[0]
        higher = self._higher.update(features)
        risen = (higher["close"] > higher["open"]).to_numpy()  # False before the first closed higher bar
        previous = np.r_[self._previous, spread[:-1]]
        if len(spread):
            self._previous = float(spread[-1])
        enter = (previous < 0) & (spread > 0) & risen
        leave = (previous > 0) & (spread < 0)
        targets = Targets.from_signals(enter, leave, self.strategy.reasons)
        return targets.with_orders(kind=np.where(enter, LIMIT, MARKET), price=close * (1.0 - p.offset), tif="day",
                                   stop_loss=p.stop_loss, trailing_stop=p.trailing_stop)

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy), "fast": self._fast.state(), "slow": self._slow.state(),
                "higher": self._higher.state(), "previous": pack(np.array([self._previous]))}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        fresh = PullbackEntryStream(self.strategy)
        fresh._fast.restore(section(state, "fast", "pullback_entry state"))
        fresh._slow.restore(section(state, "slow", "pullback_entry state"))
        fresh._higher.restore(section(state, "higher", "pullback_entry state"))
        fresh._previous = float(unpack(state.get("previous"), 1, "pullback_entry previous spread")[0])
        self.__dict__.update(fresh.__dict__)
