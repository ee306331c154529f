"""The engine's parameters: fill conventions, costs, risk limits and circuit breakers, with their defaults."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.engine import layout


class EngineConfig(BaseModel):
    """How one strategy's orders are filled, sized, checked and stopped. Frozen; unknown fields are errors.

    Breakers say how they release (``pipeline.engine.kernel``): the daily ones at the next trading day, the
    drawdown and loss-streak ones when an operator resets them, or after ``breaker_cooldown_bars`` bars.

    Only values the engine honours are accepted: finite numbers within each field's bounds, and a max position no
    larger than the leverage (the gross exposure cap would cut a larger one down to it). A refusal in words, with
    the accepted range, is ``pipeline.accepted.explain``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cash: float = Field(100_000.0, gt=0, description="Starting cash of the strategy's sub-ledger.")
    fee_bps: float = Field(10.0, ge=0, le=1000, description="Fee in basis points of each fill's notional.")
    slippage_bps: float = Field(0.0, ge=0, le=1000, description="Fixed slippage against the trader, in bps.")
    slippage_vol: float = Field(
        0.0, ge=0, description="Extra slippage as a multiple of the previous bar's (high - low) / close."
    )
    fill: Literal["next_open", "close"] = Field(
        "next_open", description="Where a decision taken at a bar's close fills: the next bar's open, or that close"
    )
    leverage: float = Field(1.0, gt=0, description="Gross exposure cap as a multiple of equity (1 = no leverage).")
    max_position: float = Field(
        0.25, gt=0, description="Largest position per symbol, as a fraction of equity; at most the leverage.")
    allow_short: bool = Field(False, description="Allow negative exposure (short positions).")
    lot_size: float = Field(0.0, ge=0, description="Quantity increment; 0 trades fractional units.")
    tick_size: float = Field(0.0, ge=0, description="Price increment of fills; 0 leaves prices unrounded.")
    min_notional: float = Field(0.0, ge=0, description="Smallest order value; smaller orders are rejected.")
    stop_loss: float | None = Field(None, gt=0, lt=1, description="Stop-loss distance from the entry price.")
    take_profit: float | None = Field(None, gt=0, description="Take-profit distance from the entry price.")
    trailing_stop: float | None = Field(
        None, gt=0, lt=1, description="Trailing stop distance from the best price since entry (highest high of a "
                                      "long, lowest low of a short).")
    intrabar: Literal["stop_first", "target_first"] = Field(
        "stop_first", description="When a position's stop and its take-profit are both inside one bar (and the "
                                  "open gapped through neither), which fills: the adverse stop, or the target.")
    max_drawdown: float | None = Field(
        0.20, gt=0, lt=1,
        description="Breaker: drawdown from the equity peak. Waits for an operator's reset (or the cool-down); "
                    "a release re-bases the peak to the equity at that time.")
    daily_loss: float | None = Field(
        0.05, gt=0, lt=1,
        description="Breaker: loss from the day's opening equity. Releases at the next trading day "
                    "(see daily_release).")
    max_consecutive_losses: int | None = Field(
        5, ge=1,
        description="Breaker: losing round trips in a row. Waits for an operator's reset (or the cool-down); "
                    "a release restarts the count.")
    max_trades_per_day: int | None = Field(
        50, ge=1,
        description="Breaker: fills in one trading day. Releases at the next trading day (see daily_release).")
    daily_release: bool = Field(
        True,
        description="The daily breakers (daily_loss, max_trades_per_day) release at the first bar of the next "
                    "trading day; false makes them wait for an operator's reset (or the cool-down) like the others.")
    breaker_cooldown_bars: int | None = Field(
        None, ge=1,
        description="Bars after which a breaker that waits for an operator releases by itself, as a reset would "
                    "(models the operator in a backtest); none waits for the operator. An operator's pause is "
                    "never released by it.")
    flatten_on_trip: bool = Field(False, description="Close the position when a breaker trips (else only pause).")
    session_orders: Literal["wait", "reject"] = Field(
        "wait", description="Orders for a closed market wait for the next session or are rejected."
    )
    day_boundary_hour: int = Field(0, ge=0, le=23, description="UTC hour at which a trading day starts.")

    @field_validator("max_position", mode="wrap")
    @classmethod
    def _within_leverage(cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> float:
        """A position larger than the leverage cannot be taken: refused with the whole range (the field's own
        bounds and the leverage's value)."""
        leverage = info.data.get("leverage")
        beyond = PydanticCustomError("out_of_range", "Input should be within its bounds and at most {le} (the {bound})",
                                     {"le": leverage, "bound": "leverage"})
        try:
            checked: float = handler(value)
        except ValidationError as exc:
            if leverage is None or exc.errors()[0]["type"] != "greater_than":
                raise
            raise beyond from None
        if leverage is not None and checked > leverage:
            raise beyond
        return checked

    def without_breakers(self) -> EngineConfig:
        return self.model_copy(
            update={
                "max_drawdown": None,
                "daily_loss": None,
                "max_consecutive_losses": None,
                "max_trades_per_day": None,
            }
        )

    def params(self) -> np.ndarray:
        """The parameter vector of the compiled kernel."""
        p = np.zeros(layout.N_PARAMS)
        p[layout.P_FEE] = self.fee_bps / 10_000.0
        p[layout.P_SLIPPAGE] = self.slippage_bps / 10_000.0
        p[layout.P_SLIPPAGE_VOL] = self.slippage_vol
        p[layout.P_FILL_CLOSE] = 1.0 if self.fill == "close" else 0.0
        p[layout.P_MAX_POSITION] = self.max_position
        p[layout.P_LEVERAGE] = self.leverage
        p[layout.P_ALLOW_SHORT] = 1.0 if self.allow_short else 0.0
        p[layout.P_LOT] = self.lot_size
        p[layout.P_TICK] = self.tick_size
        p[layout.P_MIN_NOTIONAL] = self.min_notional
        p[layout.P_STOP_LOSS] = self.stop_loss or 0.0
        p[layout.P_TAKE_PROFIT] = self.take_profit or 0.0
        p[layout.P_MAX_DRAWDOWN] = self.max_drawdown or 0.0
        p[layout.P_DAILY_LOSS] = self.daily_loss or 0.0
        p[layout.P_MAX_CONSECUTIVE_LOSSES] = float(self.max_consecutive_losses or 0)
        p[layout.P_MAX_TRADES_PER_DAY] = float(self.max_trades_per_day or 0)
        p[layout.P_FLATTEN_ON_TRIP] = 1.0 if self.flatten_on_trip else 0.0
        p[layout.P_SESSION_WAIT] = 1.0 if self.session_orders == "wait" else 0.0
        p[layout.P_COOLDOWN] = float(self.breaker_cooldown_bars or 0)
        p[layout.P_DAILY_RELEASE] = 1.0 if self.daily_release else 0.0
        p[layout.P_TRAILING] = self.trailing_stop or 0.0
        p[layout.P_TARGET_FIRST] = 1.0 if self.intrabar == "target_first" else 0.0
        return p
