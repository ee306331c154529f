"""A trader's own strategy that reads *another symbol*: the crossover of two moving means of its own closes,
taking entries only while the regime series (BTC/USDT 1h by default) last closed above the mean of its last
``regime_window`` closes.

The strategy declares the series it reads in ``series`` (``pipeline.strategies.other_series.OtherSeries``): here
``regime_symbol`` at ``regime_timeframe``, delivered as the columns ``regime_timestamp``, ``regime_open`` ...
``regime_close``, ``regime_volume``. On every row they hold the last regime bar *closed* by that row's close (the
hour of 10:00 is seen by the 5m row of 10:55, whose close is 11:00), so a backtest (which reads the series from the
lake), a paper replay and live trading (which read it from the same feed as the strategy's own bars) see the same
regime bar at the same row. Exits are never filtered: the regime can keep the strategy out of a trade, never in.

    tradeforge ingest --source ccxt --exchange binance --symbol BTC/USDT --timeframe 1h --since 2024-01-01
    tradeforge backtest --strategy examples/strategies/regime_filtered.py:RegimeFiltered --symbol ETH/USDT \\
        --timeframe 5m --param regime_window=48
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pipeline.domain import Timeframe, epoch_ms, parse_symbol
from pipeline.features.streaming import Window, pack, section, unpack
from pipeline.strategies import StrategyParams, Targets, check_features
from pipeline.strategies.base import check_owner
from pipeline.strategies.other_series import OtherSeries

PREFIX = "regime_"


class RegimeFilteredParams(StrategyParams):
    fast: int = Field(12, ge=1, description="bars in the fast mean of the strategy's own closes")
    slow: int = Field(48, ge=2, description="bars in the slow mean of its own closes; more than fast")
    regime_symbol: str = Field("BTC/USDT", description="the symbol whose bars say whether entries are allowed")
    regime_timeframe: str = Field("1h", description="the timeframe of the regime symbol's bars")
    regime_window: int = Field(24, ge=1, le=10_000, description="regime bars in the mean the regime close must beat")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.slow <= self.fast:
            raise ValueError(f"'slow' must be greater than 'fast' ({self.fast}), got {self.slow}")
        parse_symbol(self.regime_symbol)
        Timeframe.parse(self.regime_timeframe)
        return self


class RegimeFiltered:
    """Moving-mean crossover whose entries need the regime symbol above the mean of its last closes."""

    name = "regime_filtered"
    Params = RegimeFilteredParams
    requires: tuple[str, ...] = ()

    def __init__(self, params: RegimeFilteredParams | None = None) -> None:
        self.params = p = params or RegimeFilteredParams()
        self.warmup = p.slow
        self.series = (OtherSeries(symbol=p.regime_symbol, timeframe=p.regime_timeframe, prefix=PREFIX),)
        regime = f"{self.series[0].symbol} {self.series[0].timeframe} above its {p.regime_window}-bar mean"
        self.reasons = (f"up-cross {p.fast}/{p.slow}, {regime}", f"down-cross {p.fast}/{p.slow}")

    def __repr__(self) -> str:
        p = self.params
        return (f"RegimeFiltered(fast={p.fast}, slow={p.slow}, regime={self.series[0].symbol!r} "
                f"{self.series[0].timeframe}, regime_window={p.regime_window})")

    def stream(self) -> RegimeFilteredStream:
        return RegimeFilteredStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)


class RegimeFilteredStream:
    """Two windows of own closes and the previous spread; the regime's window, its last bar and its verdict."""

    def __init__(self, strategy: RegimeFiltered) -> None:
        self.strategy = strategy
        self._fast = Window(strategy.params.fast)
        self._slow = Window(strategy.params.slow)
        self._regime = Window(strategy.params.regime_window)
        self._carried = np.array([np.nan, np.nan, 0.0])  # previous spread, last regime bar (open ms), verdict

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        close = features["close"].to_numpy(dtype=np.float64)
        spread = self._fast.update(close)[0] - self._slow.update(close)[0]
        previous = np.r_[self._carried[0], spread[:-1]]
        enter = (previous < 0) & (spread > 0) & self._regime_up(features)
        leave = (previous > 0) & (spread < 0)
        if len(spread):
            self._carried[0] = spread[-1]
        return Targets.from_signals(enter, leave, self.strategy.reasons)

    def _regime_up(self, features: pd.DataFrame) -> np.ndarray:
        """Per row: whether the visible regime bar closed above the mean of the last ``regime_window`` regime
        closes (the window advances once per regime bar, on the first row that sees it)."""
        stamps = features[PREFIX + "timestamp"]
        seen = stamps.notna().to_numpy()
        opened = np.where(seen, epoch_ms(stamps.fillna(pd.Timestamp(0, tz="UTC"))), -1).astype(np.float64)
        before = np.r_[self._carried[1], opened[:-1]]
        new = seen & (opened != before)
        regime_close = features[PREFIX + "close"].to_numpy(dtype=np.float64)[new]
        verdict = np.full(len(features), np.nan)
        verdict[new] = (regime_close > self._regime.update(regime_close)[0]).astype(np.float64)
        verdict = pd.Series(np.r_[self._carried[2], verdict]).ffill().to_numpy()[1:]
        if len(features):
            self._carried[1:] = opened[-1], verdict[-1]
        return (verdict == 1.0) & seen

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy), "fast": self._fast.state(), "slow": self._slow.state(),
                "regime": self._regime.state(), "carried": pack(self._carried)}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        fresh = RegimeFilteredStream(self.strategy)
        for part in ("fast", "slow", "regime"):
            getattr(fresh, f"_{part}").restore(section(state, part, "regime_filtered state"))
        fresh._carried = unpack(state.get("carried"), 3, "regime_filtered carried values")
        self.__dict__.update(fresh.__dict__)
