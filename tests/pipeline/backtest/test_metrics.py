"""Performance metrics: every figure checked against numbers worked out by hand from the documented formulas."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, DataError
from tests.conftest import shared_file

pytestmark = pytest.mark.filterwarnings("error")

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


# --- real data -----------------------------------------------------------------------------------------------


def test_buy_and_hold_on_real_btc_daily_closes() -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1d.parquet"))
    closes = bars["close"].reset_index(drop=True)
    assert len(closes) > 1000
    scale = 10_000.0 / float(closes.iloc[0])
    equity_values = closes.to_numpy() * scale
    equity = pd.DataFrame(
        {
            "timestamp": bars["timestamp"].reset_index(drop=True),
            "equity": equity_values,
            "cash": np.zeros(len(closes)),
            "position_value": equity_values,
        }
    )
    fills = fills_frame([10_000.0], [10.0])
    result = compute_metrics(equity, trades_frame(), fills, closes, bars_per_year(86400, "crypto"))

    # the independent figures, with plain Python loops over the closes
    values = [float(c) for c in closes]
    when = list(bars["timestamp"])
    peak, worst, peak_at, longest, longest_days, underwater = values[0], 0.0, 0, 0, 0.0, False
    for i, price in enumerate(values):
        if price >= peak:
            if underwater:  # the peak is regained: a drawdown stretch ends here
                longest = max(longest, i - peak_at)
                longest_days = max(longest_days, (when[i] - when[peak_at]).total_seconds() / 86400)
            peak, peak_at, underwater = price, i, False
        else:
            worst = max(worst, (peak - price) / peak)
            underwater = True
    if underwater:  # still below the peak at the end of the file
        longest = max(longest, len(values) - 1 - peak_at)
        longest_days = max(longest_days, (when[-1] - when[peak_at]).total_seconds() / 86400)
    first, last = values[0], values[-1]

    assert result["bars"] == len(values)
    assert result["buy_and_hold_return"] == pytest.approx(last / first - 1, rel=1e-12)
    assert result["total_return"] == pytest.approx(result["buy_and_hold_return"], rel=1e-12)
    assert result["max_drawdown"] == pytest.approx(worst, rel=1e-12)
    assert 0.5 < worst < 0.9  # BTC's deepest fall in the file is a crash of well over half its value
    assert result["max_drawdown_duration_bars"] == longest
    assert result["max_drawdown_duration_days"] == pytest.approx(longest_days)
    assert result["cagr"] == pytest.approx((last / first) ** (365.25 / (len(values) - 1)) - 1, rel=1e-9)
    assert result["exposure"] == 1.0
    assert result["turnover"] == pytest.approx(10_000.0 / float(np.mean(equity_values)), rel=1e-12)
    assert result["fees"] == 10.0
    assert result["trades_per_day"] == 0.0
    assert_json_clean(result)


def test_metrics_of_a_million_bars_are_fast() -> None:
    import time

    count = 1_000_000
    rng = np.random.default_rng(7)
    equity_values = 1000.0 * np.cumprod(1.0 + rng.normal(0.0, 0.001, count))
    position = np.where(rng.random(count) < 0.5, 0.0, equity_values)
    equity = pd.DataFrame(
        {
            "timestamp": pd.Series(pd.date_range(START, periods=count, freq="1min")).astype(TIMESTAMP_DTYPE),
            "equity": equity_values,
            "cash": equity_values - position,
            "position_value": position,
        }
    )
    trades = trades_frame(rng.normal(0.0, 5.0, 10_000).tolist())
    fills = fills_frame((rng.random(20_000) * 1000).tolist(), (rng.random(20_000)).tolist())
    closes = pd.Series(equity_values / 10)
    periods = bars_per_year(60, "crypto")
    compute_metrics(equity, trades, fills, closes, periods)
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        result = compute_metrics(equity, trades, fills, closes, periods)
        best = min(best, time.perf_counter() - started)
    assert best < 0.2, f"compute_metrics took {best:.3f} s on 1M bars"
    assert result["bars"] == count
    assert_json_clean(result)
