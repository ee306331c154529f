"""Performance metrics of degenerate runs (one bar, flat, wiped out, overflowing) and of refused bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.domain import DataError
from tests.pipeline.backtest.metrics_helpers import (
    assert_json_clean,
    closes_for,
    equity_frame,
    fills_frame,
    trades_frame,
)

pytestmark = pytest.mark.filterwarnings("error")


# --- degenerate runs -----------------------------------------------------------------------------------------


def test_single_bar() -> None:
    equity = equity_frame([1000.0], position=[500.0])
    result = compute_metrics(equity, trades_frame(), fills_frame([500.0], [0.5]), closes_for(1), 365.25)
    assert result == {
        "total_return": 0.0,
        "cagr": None,
        "volatility": None,
        "sharpe": None,
        "sortino": None,
        "max_drawdown": 0.0,
        "max_drawdown_duration_bars": 0,
        "max_drawdown_duration_days": 0.0,
        "calmar": None,
        "trades": 0,
        "win_rate": None,
        "profit_factor": None,
        "average_trade": None,
        "trades_per_day": None,
        "exposure": 1.0,
        "turnover": 0.5,
        "fees": 0.5,
        "buy_and_hold_return": 0.0,
        "initial_equity": 1000.0,
        "final_equity": 1000.0,
        "bars": 1,
    }
    assert_json_clean(result)


def test_two_bars_have_no_volatility_but_a_sortino() -> None:
    # one return of -0.1: stdev (ddof=1) undefined; DD = 0.1, sortino = -0.1/0.1 * sqrt(P)
    equity = equity_frame([100, 90])
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(2), 9)
    assert result["volatility"] is None
    assert result["sharpe"] is None
    assert result["sortino"] == pytest.approx(-3.0)
    assert result["cagr"] == pytest.approx(0.9**9 - 1)
    assert result["max_drawdown"] == pytest.approx(0.1)
    assert result["calmar"] == pytest.approx((0.9**9 - 1) / 0.1)
    assert_json_clean(result)


def test_flat_equity_with_no_trades() -> None:
    equity = equity_frame([1000.0] * 10)
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(10), 365.25)
    assert result["total_return"] == 0.0
    assert result["cagr"] == 0.0
    assert result["volatility"] == 0.0
    assert result["sharpe"] == 0.0
    assert result["sortino"] is None
    assert result["max_drawdown"] == 0.0
    assert result["max_drawdown_duration_bars"] == 0
    assert result["calmar"] is None
    assert result["trades"] == 0
    assert result["win_rate"] is None
    assert result["profit_factor"] is None
    assert result["average_trade"] is None
    assert result["trades_per_day"] == 0.0
    assert result["exposure"] == 0.0
    assert result["turnover"] == 0.0
    assert result["fees"] == 0.0
    assert_json_clean(result)


def test_equity_wiped_out_mid_run() -> None:
    # a return after a bar at 0 is undefined: the return-based figures are None, the rest still hold
    equity = equity_frame([100, 0, 50])
    result = compute_metrics(equity, trades_frame([-100.0]), fills_frame(), closes_for(3), 365.25)
    assert result["volatility"] is None
    assert result["sharpe"] is None
    assert result["sortino"] is None
    assert result["max_drawdown"] == pytest.approx(1.0)
    assert result["max_drawdown_duration_bars"] == 2
    assert result["total_return"] == pytest.approx(-0.5)
    assert result["cagr"] == pytest.approx(0.5 ** (365.25 / 2) - 1)
    assert_json_clean(result)


def test_equity_ending_at_zero_or_below() -> None:
    at_zero = compute_metrics(equity_frame([100, 50, 0]), trades_frame(), fills_frame(), closes_for(3), 365.25)
    assert at_zero["cagr"] == -1.0
    assert at_zero["calmar"] == pytest.approx(-1.0)
    assert at_zero["max_drawdown"] == 1.0
    below = compute_metrics(equity_frame([100, 50, -10]), trades_frame(), fills_frame(), closes_for(3), 365.25)
    assert below["cagr"] is None
    assert below["calmar"] is None
    assert below["total_return"] == pytest.approx(-1.1)
    assert below["max_drawdown"] == pytest.approx(1.1)
    assert below["turnover"] == 0.0  # mean equity 140/3 > 0
    assert_json_clean(at_zero)
    assert_json_clean(below)


def test_annualised_growth_too_large_for_a_float_is_none() -> None:
    # doubling in one minute, annualised over 525960 minutes: 2^525960 overflows
    equity = equity_frame([100, 200], offsets=[0, 1], unit="min")
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(2), bars_per_year(60, "crypto"))
    assert result["cagr"] is None
    assert result["calmar"] is None
    assert result["total_return"] == 1.0
    assert_json_clean(result)


# --- bad input -----------------------------------------------------------------------------------------------


def test_rejects_bad_input() -> None:
    trades, fills = trades_frame(), fills_frame()
    good = equity_frame([100, 110, 120])
    with pytest.raises(DataError, match="no rows"):
        compute_metrics(good.iloc[:0], trades, fills, closes_for(0), 365.25)
    with pytest.raises(DataError, match="position_value"):
        compute_metrics(good.drop(columns="position_value"), trades, fills, closes_for(3), 365.25)
    with pytest.raises(DataError, match="pnl"):
        compute_metrics(good, trades.drop(columns="pnl"), fills, closes_for(3), 365.25)
    with pytest.raises(DataError, match="notional"):
        compute_metrics(good, trades, fills.drop(columns="notional"), closes_for(3), 365.25)
    with pytest.raises(DataError, match="missing or infinite"):
        compute_metrics(equity_frame([100, float("nan"), 120]), trades, fills, closes_for(3), 365.25)
    with pytest.raises(DataError, match="initial equity"):
        compute_metrics(equity_frame([0, 110, 120]), trades, fills, closes_for(3), 365.25)
    with pytest.raises(DataError, match="closes has 2 values"):
        compute_metrics(good, trades, fills, closes_for(2), 365.25)
    with pytest.raises(DataError, match="positive prices"):
        compute_metrics(good, trades, fills, pd.Series([10.0, 0.0, 12.0]), 365.25)
    with pytest.raises(DataError, match="increase strictly"):
        compute_metrics(equity_frame([100, 110, 120], offsets=[0, 2, 1]), trades, fills, closes_for(3), 365.25)
    unstamped = good.copy()
    unstamped.loc[0, "timestamp"] = pd.NaT
    with pytest.raises(DataError, match="NaT"):
        compute_metrics(unstamped, trades, fills, closes_for(3), 365.25)
    for periods in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(DataError, match="periods_per_year"):
            compute_metrics(good, trades, fills, closes_for(3), periods)
