"""Performance metrics: every figure checked against numbers worked out by hand from the documented formulas."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.domain import AssetClass, DataError
from tests.pipeline.backtest.metrics_helpers import (
    assert_json_clean,
    closes_for,
    equity_frame,
    fills_frame,
    trades_frame,
)

pytestmark = pytest.mark.filterwarnings("error")


# --- bars per year -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "asset_class", "expected"),
    [
        (86400, "crypto", 365.25),
        (3600, "crypto", 365.25 * 24),  # 8766
        (60, "crypto", 365.25 * 1440),  # 525960
        (86400, "stock", 252.0),
        (60, "stock", 252 * 390),  # 98280
        (300, "stock", 252 * 78),  # 19656
        (3600, "stock", 252 * 6.5),  # 1638
        (43200, "stock", 252.0),  # longer than the 390-minute session: one bar per session
        (3600, AssetClass.CRYPTO, 8766.0),
    ],
)
def test_bars_per_year(seconds: int, asset_class: str, expected: float) -> None:
    assert bars_per_year(seconds, asset_class) == pytest.approx(expected, rel=1e-15)
    assert type(bars_per_year(seconds, asset_class)) is float


@pytest.mark.parametrize(
    ("seconds", "asset_class", "message"),
    [
        (0, "crypto", "timeframe_seconds"),
        (-60, "stock", "timeframe_seconds"),
        (60, "bonds", "asset_class"),
        (172800, "stock", "stocks"),
    ],
)
def test_bars_per_year_rejects_bad_input(seconds: int, asset_class: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        bars_per_year(seconds, asset_class)


# --- a small run worked out by hand --------------------------------------------------------------------------


def test_small_run_every_metric_by_hand() -> None:
    # five daily bars; P = 8 so that sqrt(P) = 2*sqrt(2) and the CAGR exponent P/(n-1) = 2
    equity = equity_frame([100, 120, 90, 108, 135], position=[0, 50, -40, 0, 70])
    trades = trades_frame([10, -5, 20, 0, -15])
    fills = fills_frame([100, 200, 150, 50], [0.1, 0.2, 0.15, 0.05])
    closes = pd.Series([10.0, 12.0, 11.0, 9.0, 15.0])
    result = compute_metrics(equity, trades, fills, closes, 8)

    # returns: 120/100-1 = 0.2, 90/120-1 = -0.25, 108/90-1 = 0.2, 135/108-1 = 0.25; mean = 0.4/4 = 0.1
    # deviations 0.1, -0.35, 0.1, 0.15 → squares sum 0.01+0.1225+0.01+0.0225 = 0.165; /3 → variance 0.055
    assert result["total_return"] == pytest.approx(0.35)
    assert result["cagr"] == pytest.approx(1.35**2 - 1)  # 0.8225
    assert result["volatility"] == pytest.approx(math.sqrt(0.055 * 8))
    assert result["sharpe"] == pytest.approx(0.1 / math.sqrt(0.055) * math.sqrt(8))
    # downside: only -0.25 → mean of squares 0.0625/4 = 0.015625 → DD = 0.125; 0.1/0.125 = 0.8
    assert result["sortino"] == pytest.approx(0.8 * math.sqrt(8))
    # running peak 100,120,120,120,135: worst fall (120-90)/120 = 0.25, from bar 1 until regained at bar 4
    assert result["max_drawdown"] == pytest.approx(0.25)
    assert result["max_drawdown_duration_bars"] == 3
    assert result["max_drawdown_duration_days"] == pytest.approx(3.0)
    assert result["calmar"] == pytest.approx(0.8225 / 0.25)  # 3.29
    # trades: wins 10, 20; losses -5, -15; the zero trade is neither
    assert result["trades"] == 5
    assert result["win_rate"] == pytest.approx(0.4)
    assert result["profit_factor"] == pytest.approx(30 / 20)
    assert result["average_trade"] == pytest.approx(2.0)
    assert result["trades_per_day"] == pytest.approx(5 / 4)  # 5 trades over 4 calendar days
    # position non-zero on 3 of 5 bars (a short counts)
    assert result["exposure"] == pytest.approx(0.6)
    # notional 500 / mean equity 553/5 = 110.6
    assert result["turnover"] == pytest.approx(500 / 110.6)
    assert result["fees"] == pytest.approx(0.5)
    assert result["buy_and_hold_return"] == pytest.approx(0.5)
    assert result["initial_equity"] == 100.0
    assert result["final_equity"] == 135.0
    assert result["bars"] == 5
    assert_json_clean(result)


def test_drawdown_durations_in_bars_and_days_pick_their_own_longest_stretch() -> None:
    # bars 0..7 on days 0,1,2,3,4,7,10,11 (a weekend gap, as on a stock calendar)
    equity = equity_frame([100, 100, 95, 94, 100, 101, 90, 95], offsets=[0, 1, 2, 3, 4, 7, 10, 11])
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(8), 252)
    # stretch 1: peak at bar 1 (the last bar at 100), equalled at bar 4 → 3 bars, day 1 → day 4 = 3 days,
    #            fall (100-94)/100 = 0.06
    # stretch 2: peak 101 at bar 5, never regained → ends at the last bar 7 → 2 bars, day 7 → day 11 = 4 days,
    #            fall (101-90)/101
    assert result["max_drawdown_duration_bars"] == 3
    assert result["max_drawdown_duration_days"] == pytest.approx(4.0)
    assert result["max_drawdown"] == pytest.approx(11 / 101)
    assert_json_clean(result)


def test_drawdown_duration_in_fractional_days_for_intraday_bars() -> None:
    equity = equity_frame([100, 90, 95, 100, 100], offsets=[0, 1, 2, 3, 4], unit="h")
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(5), 8766)
    assert result["max_drawdown_duration_bars"] == 3  # bar 0 → regained at bar 3
    assert result["max_drawdown_duration_days"] == pytest.approx(3 / 24)
    assert result["max_drawdown"] == pytest.approx(0.1)
    assert result["trades_per_day"] == pytest.approx(0.0)  # no trade in 4 hours


def test_drawdown_never_regained_runs_to_the_end() -> None:
    equity = equity_frame([100, 110, 105, 80, 90, 100])
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(6), 365.25)
    assert result["max_drawdown"] == pytest.approx(30 / 110)
    assert result["max_drawdown_duration_bars"] == 4  # peak at bar 1, still under it at bar 5
    assert result["max_drawdown_duration_days"] == pytest.approx(4.0)
    # cagr = (100/100)^(...) - 1 = 0, so calmar = 0 / (30/110) = 0
    assert result["cagr"] == pytest.approx(0.0)
    assert result["calmar"] == pytest.approx(0.0)


def test_sortino_is_none_without_a_negative_return() -> None:
    # returns 0.1, 0.1, 0.0: none negative; mean 0.2/3 = 1/15,
    # deviations 1/30, 1/30, -2/30 → variance (1/900 + 1/900 + 4/900) / 2 = 3/900
    equity = equity_frame([100, 110, 121, 121])
    result = compute_metrics(equity, trades_frame(), fills_frame(), closes_for(4), 4)
    assert result["sortino"] is None
    mean = 0.2 / 3
    stdev = math.sqrt((2 * (1 / 30) ** 2 + (2 / 30) ** 2) / 2)
    assert result["volatility"] == pytest.approx(stdev * 2)
    assert result["sharpe"] == pytest.approx(mean / stdev * 2)
    assert result["max_drawdown"] == 0.0
    assert result["max_drawdown_duration_bars"] == 0
    assert result["max_drawdown_duration_days"] == 0.0
    assert result["calmar"] is None
    assert_json_clean(result)


def test_trade_statistics_without_a_losing_trade() -> None:
    equity = equity_frame([100, 101, 102])
    result = compute_metrics(equity, trades_frame([1.0, 0.0, 3.0]), fills_frame(), closes_for(3), 365.25)
    assert result["trades"] == 3
    assert result["win_rate"] == pytest.approx(2 / 3)
    assert result["profit_factor"] is None
    assert result["average_trade"] == pytest.approx(4 / 3)
    assert result["trades_per_day"] == pytest.approx(3 / 2)


def test_trade_statistics_with_only_losing_trades() -> None:
    equity = equity_frame([100, 99, 97])
    result = compute_metrics(equity, trades_frame([-1.0, -2.0]), fills_frame(), closes_for(3), 365.25)
    assert result["win_rate"] == 0.0
    assert result["profit_factor"] == 0.0
    assert result["average_trade"] == pytest.approx(-1.5)
