"""The metrics tests' builders: equity, trade and fill frames of hand-picked values, and the JSON check."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.domain import TIMESTAMP_DTYPE

KEYS = {
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_days",
    "calmar",
    "trades",
    "win_rate",
    "profit_factor",
    "average_trade",
    "trades_per_day",
    "exposure",
    "turnover",
    "fees",
    "buy_and_hold_return",
    "initial_equity",
    "final_equity",
    "bars",
}
START = pd.Timestamp("2024-01-01", tz="UTC")


def stamps(offsets: Sequence[float], unit: str = "D") -> pd.Series:
    unit_seconds = {"D": 86400, "h": 3600, "min": 60}[unit]
    values = [START + pd.Timedelta(seconds=value * unit_seconds) for value in offsets]
    return pd.Series(values, dtype=TIMESTAMP_DTYPE)


def equity_frame(
    values: Sequence[float],
    position: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    unit: str = "D",
) -> pd.DataFrame:
    equity = np.asarray(values, dtype="float64")
    position_value = np.zeros(len(equity)) if position is None else np.asarray(position, dtype="float64")
    return pd.DataFrame(
        {
            "timestamp": stamps(range(len(equity)) if offsets is None else offsets, unit),
            "equity": equity,
            "cash": equity - position_value,
            "position_value": position_value,
        }
    )


def trades_frame(pnl: Sequence[float] = ()) -> pd.DataFrame:
    count = len(pnl)
    return pd.DataFrame(
        {
            "entry_time": stamps([0] * count),
            "exit_time": stamps([1] * count),
            "side": pd.Series(["long"] * count, dtype="object"),
            "qty": np.ones(count),
            "entry_price": np.full(count, 100.0),
            "exit_price": np.full(count, 100.0),
            "pnl": np.asarray(pnl, dtype="float64"),
            "fees": np.zeros(count),
            "entry_reason": pd.Series(["signal"] * count, dtype="object"),
            "exit_reason": pd.Series(["signal"] * count, dtype="object"),
            "bars_held": np.ones(count, dtype="int64"),
        }
    )


def fills_frame(notional: Sequence[float] = (), fee: Sequence[float] = ()) -> pd.DataFrame:
    count = len(notional)
    return pd.DataFrame(
        {
            "timestamp": stamps([0] * count),
            "side": pd.Series(["buy"] * count, dtype="object"),
            "qty": np.ones(count),
            "price": np.asarray(notional, dtype="float64"),
            "notional": np.asarray(notional, dtype="float64"),
            "fee": np.asarray(fee, dtype="float64"),
            "reason": pd.Series(["signal"] * count, dtype="object"),
        }
    )


def closes_for(count: int) -> pd.Series:
    return pd.Series(np.full(count, 50.0))


def assert_json_clean(result: dict[str, float | int | None]) -> None:
    assert set(result) == KEYS
    for name, value in result.items():
        assert value is None or type(value) in (float, int), (name, type(value))
        assert not (isinstance(value, float) and not math.isfinite(value)), name
    text = json.dumps(result, allow_nan=False)
    assert "NaN" not in text
    assert "Infinity" not in text
