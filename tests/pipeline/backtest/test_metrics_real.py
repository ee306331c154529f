"""Performance metrics of real BTC daily closes against plain loops, and of a million bars."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.domain import TIMESTAMP_DTYPE
from tests.conftest import shared_file
from tests.pipeline.backtest.metrics_helpers import START, assert_json_clean, fills_frame, trades_frame
from tests.timing import best_of

pytestmark = pytest.mark.filterwarnings("error")


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


def test_metrics_cost_grows_linearly_with_the_bars() -> None:
    """The metrics are vectorised: ten times the bars cost about ten times as much, on any machine (a loop over
    trades or bars in Python, or a quadratic step, would cost far more). Absolute speed is bench/'s to report."""
    rng = np.random.default_rng(7)

    def inputs(count: int) -> tuple[Any, ...]:
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
        trades = trades_frame(rng.normal(0.0, 5.0, count // 100).tolist())
        fills = fills_frame((rng.random(count // 50) * 1000).tolist(), (rng.random(count // 50)).tolist())
        return equity, trades, fills, pd.Series(equity_values / 10), bars_per_year(60, "crypto")

    small, large = inputs(100_000), inputs(1_000_000)
    compute_metrics(*large)
    result = compute_metrics(*large)
    ratio = best_of(5, lambda: compute_metrics(*large)) / best_of(5, lambda: compute_metrics(*small))
    assert ratio < 25, f"1M bars cost {ratio:.1f} times 100k bars"
    assert result["bars"] == 1_000_000
    assert_json_clean(result)
