"""The ad hoc backtest request: one type for the flow's parameters and the dashboard's form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.domain import DataError, Timeframe, parse_symbol


@dataclass(frozen=True)
class AdhocRequest:
    """The parameters of the ad hoc backtest flow (the dashboard's form, the Prefect UI's form); validated and
    normalised on creation: canonical symbol and timeframe, ISO UTC bounds, parameters as text.

    ``breaker_cooldown_bars`` is the engine's cool-down (``EngineConfig.breaker_cooldown_bars``): the drawdown and
    loss-streak breakers release by themselves after that many bars, as an operator's reset would; none keeps
    them tripped for the rest of the run."""

    strategy: str
    symbol: str
    timeframe: str
    venue: str | None = None
    start: str | None = None
    end: str | None = None
    fee_bps: float = 10.0
    slippage_bps: float = 0.0
    max_position: float = 0.25
    cash: float = 100_000.0
    params: dict[str, str | float] = field(default_factory=dict)
    breaker_cooldown_bars: int | None = None

    def __post_init__(self) -> None:
        from pipeline.backtest.inputs import date_range, engine_config
        from pipeline.strategies import REGISTRY

        REGISTRY.spec(self.strategy)  # refuses an unknown strategy, naming the ones there are
        canonical, _ = parse_symbol(self.symbol)
        object.__setattr__(self, "symbol", canonical)
        object.__setattr__(self, "timeframe", str(Timeframe.parse(self.timeframe)))
        for name, stamp in zip(("start", "end"), date_range(self.start, self.end, ("start", "end")), strict=True):
            object.__setattr__(self, name, None if stamp is None else stamp.isoformat())
        cooldown = self.breaker_cooldown_bars
        if cooldown is not None:
            number = isinstance(cooldown, int | float) and not isinstance(cooldown, bool)
            if not number or not float(cooldown).is_integer() or cooldown < 1:
                raise DataError(f"breaker_cooldown_bars {cooldown!r} is not valid: give a whole number of bars, "
                                "1 or more")
            object.__setattr__(self, "breaker_cooldown_bars", int(cooldown))
        engine_config({"fee_bps": self.fee_bps, "slippage_bps": self.slippage_bps, "max_position": self.max_position,
                       "cash": self.cash, "breaker_cooldown_bars": self.breaker_cooldown_bars},
                      lambda loc: ".".join(map(str, loc)))  # refuses what the engine cannot honour, with the range
        object.__setattr__(self, "params", {key: _param_text(key, value) for key, value in self.params.items()})
        REGISTRY.build(self.strategy, self.text_params)  # refuses unknown or bad parameters, naming them

    @property
    def text_params(self) -> dict[str, str]:
        """The strategy parameters as text (how the strategy registry takes them)."""
        return {key: str(value) for key, value in self.params.items()}

    def parameters(self) -> dict[str, Any]:
        """The flow run's parameters (the names of the ``adhoc-backtest`` flow's arguments). An optional engine
        option left unset is not sent, so a deployment registered before the option existed still runs it."""
        parameters = asdict(self)
        if parameters["breaker_cooldown_bars"] is None:
            del parameters["breaker_cooldown_bars"]
        return parameters


def _param_text(key: str, value: object) -> str:
    if isinstance(value, str):  # as typed in a form; the strategy checks its meaning
        if not value.strip():
            raise DataError(f"strategy parameter {key!r} is empty")
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"strategy parameter {key!r} must be a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise DataError(f"strategy parameter {key!r} must be finite, got {value!r}")
    return str(int(number)) if number.is_integer() else repr(number)
