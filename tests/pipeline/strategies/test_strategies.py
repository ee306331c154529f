"""Strategy rules: sma_cross and Wilder's RSI against references, golden cross, model gate and buy-and-hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import DataError
from pipeline.strategies import REGISTRY, check_features
from pipeline.strategies.model_gate import ModelGated
from pipeline.strategies.rsi_reversion import RsiReversion
from pipeline.strategies.sma_cross import SmaCross, golden_cross
from tests.conftest import shared_file
from tests.pipeline.strategies import strategy_helpers
from tests.pipeline.strategies.strategy_helpers import AAPL_D1, BTC_H1, decisions

btc = strategy_helpers.btc  # module-scoped slices of real bars, with a model score
aapl = strategy_helpers.aapl
btc_full = strategy_helpers.btc_full


# --- (c) sma_cross against an independent reference ----------------------------------------------------------------


def reference_sma_cross(close: pd.Series, fast: int, slow: int, name: str) -> list[tuple[int, float, str]]:
    """Written from the rule: d = rolling means, then a plain loop for the sign changes of d."""
    d = (close.rolling(fast).mean() - close.rolling(slow).mean()).tolist()
    found = []
    for i in range(1, len(d)):
        if d[i - 1] < 0 < d[i]:
            found.append((i, 1.0, f"{name} up ({fast}/{slow})"))
        elif d[i - 1] > 0 > d[i]:
            found.append((i, 0.0, f"{name} down ({fast}/{slow})"))
    return found


@pytest.mark.parametrize("fast_slow", [(10, 30), (1, 2), (3, 7), (20, 21), (50, 200)])
@pytest.mark.parametrize("name", [BTC_H1, AAPL_D1])
def test_sma_cross_matches_the_reference_on_real_data(fast_slow: tuple[int, int], name: str) -> None:
    fast, slow = fast_slow
    bars = pd.read_parquet(shared_file(name))
    strategy = SmaCross(fast, slow)
    found = decisions(strategy.targets(bars))
    assert found == reference_sma_cross(bars["close"], fast, slow, "sma_cross")
    assert len(found) > 10
    assert strategy.warmup == slow
    assert found[0][0] >= slow
    assert {value for _, value, _ in found} == {0.0, 1.0}


def test_sma_cross_can_decide_exactly_at_bar_slow_and_not_before() -> None:
    # fast=2, slow=4: d[3] = 5.5 - 7.75 < 0 and d[4] = 10.5 - 10.25 > 0, an up-cross at bar 4 = slow.
    bars = pd.DataFrame({"close": [10.0, 10.0, 10.0, 1.0, 20.0, 20.0, 1.0, 1.0]})
    targets = SmaCross(2, 4).targets(bars)
    found = decisions(targets)
    assert found[0] == (4, 1.0, "sma_cross up (2/4)")
    assert np.isnan(targets.exposure[:4]).all()
    assert (targets.reason[:4] == -1).all()
    assert found == reference_sma_cross(bars["close"], 2, 4, "sma_cross")


def test_sma_cross_touching_zero_is_not_a_cross() -> None:
    # d goes negative, exactly zero on a flat stretch, then positive again: no single bar straddles zero.
    closes = [5.0, 5.0, 5.0, 1.0, 5.0, 5.0, 5.0, 5.0, 9.0]
    targets = SmaCross(1, 3).targets(pd.DataFrame({"close": closes}))
    d = SmaCross(1, 3).spread(pd.DataFrame({"close": closes}))
    assert (d[6:8] == 0.0).all()
    assert decisions(targets) == reference_sma_cross(pd.Series(closes), 1, 3, "sma_cross")
    assert all(i not in (7, 8) for i, _, _ in decisions(targets))


def test_sma_cross_uses_every_close_up_to_and_including_the_bar(btc: pd.DataFrame) -> None:
    d = SmaCross(10, 30).spread(btc)
    close = btc["close"].to_numpy()
    i = len(btc) - 1
    assert d[i] == pytest.approx(close[i - 9 : i + 1].mean() - close[i - 29 : i + 1].mean(), abs=1e-9)
    assert np.isnan(d[:29]).all()
    assert np.isfinite(d[29:]).all()


# --- Wilder's RSI ----------------------------------------------------------------------------------------------------


def reference_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI written as the textbook recursion."""
    out = np.full(len(close), np.nan)
    change = np.diff(close)
    gains, losses = np.maximum(change, 0.0), np.maximum(-change, 0.0)
    avg_gain, avg_loss = gains[:period].mean(), losses[:period].mean()
    for i in range(period, len(close)):
        if i > period:
            avg_gain = (avg_gain * (period - 1) + gains[i - 1]) / period
            avg_loss = (avg_loss * (period - 1) + losses[i - 1]) / period
        if avg_loss > 0:
            out[i] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
        else:
            out[i] = 100.0 if avg_gain > 0 else 50.0
    return out


@pytest.mark.parametrize("period", [2, 14, 30])
def test_rsi_is_wilders_and_decides_on_threshold_crossings(period: int, btc_full: pd.DataFrame) -> None:
    strategy = RsiReversion(period, 30, 70)
    rsi = strategy.rsi(btc_full)
    expected = reference_rsi(btc_full["close"].to_numpy(), period)
    assert np.isnan(rsi[:period]).all()
    np.testing.assert_allclose(rsi[period:], expected[period:], rtol=0, atol=1e-9)

    found = decisions(strategy.targets(btc_full))
    assert found[0][0] >= strategy.warmup == period + 1
    for i, value, text in found:
        if value == 1.0:
            assert rsi[i - 1] >= 30 > rsi[i]
            assert text == "rsi_reversion oversold (<30)"
        else:
            assert rsi[i - 1] <= 70 < rsi[i]
            assert text == "rsi_reversion overbought (>70)"
    crossings = np.flatnonzero(((rsi[:-1] >= 30) & (rsi[1:] < 30)) | ((rsi[:-1] <= 70) & (rsi[1:] > 70))) + 1
    assert [i for i, _, _ in found] == crossings.tolist()


def test_rsi_of_a_market_that_only_rises_or_never_moves() -> None:
    rising = RsiReversion(3).rsi(pd.DataFrame({"close": [1.0, 2.0, 3.0, 4.0, 5.0]}))
    flat = RsiReversion(3).rsi(pd.DataFrame({"close": [7.0] * 5}))
    assert rising[3:].tolist() == [100.0, 100.0]
    assert flat[3:].tolist() == [50.0, 50.0]


def test_rsi_refuses_a_missing_close() -> None:
    with pytest.raises(DataError, match=r"'close'.*row 2"):
        RsiReversion(3).targets(pd.DataFrame({"close": [1.0, 2.0, np.nan, 4.0, 5.0]}))


# --- (e) golden cross -------------------------------------------------------------------------------------------------


def test_golden_cross_is_the_50_200_crossover(btc_full: pd.DataFrame) -> None:
    built = REGISTRY.build("golden_cross")
    assert isinstance(built, SmaCross)
    assert (built.fast, built.slow, built.warmup, built.name) == (50, 200, 200, "golden_cross")
    assert (golden_cross().fast, golden_cross().slow) == (50, 200)
    mine, plain = built.targets(btc_full), SmaCross(50, 200).targets(btc_full)
    np.testing.assert_array_equal(mine.exposure, plain.exposure)
    np.testing.assert_array_equal(mine.reason, plain.reason)
    assert mine.reasons == ("golden_cross up (50/200)", "golden_cross down (50/200)")
    assert decisions(mine) == reference_sma_cross(btc_full["close"], 50, 200, "golden_cross")


# --- (f) the model gate --------------------------------------------------------------------------------------------


def test_hybrid_blocks_entries_below_the_threshold_and_passes_exits(btc: pd.DataFrame) -> None:
    base = SmaCross(10, 30)
    base_targets = base.targets(btc)
    entries = np.flatnonzero(base_targets.exposure == 1.0)
    exits = np.flatnonzero(base_targets.exposure == 0.0)
    assert len(entries) >= 8 and len(exits) >= 8

    scores = np.full(len(btc), 0.99)
    # entries: exactly at the threshold, just below, missing, well above
    planted = [0.55, np.nextafter(0.55, 0.0), np.nan, 0.9]
    expected_kept = [True, False, False, True]
    for k, i in enumerate(entries):
        scores[i] = planted[k % 4]
    scores[exits[::2]] = 0.0
    scores[exits[1::2]] = np.nan
    features = btc.assign(model_score=scores)

    gate = ModelGated(base, threshold=0.55)
    gated = gate.targets(features)
    assert gate.requires == ("model_score",)
    assert gate.warmup == base.warmup
    for k, i in enumerate(entries):
        if expected_kept[k % 4]:
            assert gated.exposure[i] == 1.0
            assert gated.reason_text(int(gated.reason[i])) == "sma_cross up (10/30)+ml(p>=0.55)"
        else:
            assert np.isnan(gated.exposure[i])
            assert gated.reason[i] == -1
    for i in exits:
        assert gated.exposure[i] == 0.0
        assert gated.reason_text(int(gated.reason[i])) == "sma_cross down (10/30)"
    others = np.setdiff1d(np.arange(len(btc)), np.concatenate([entries, exits]))
    assert np.isnan(gated.exposure[others]).all()
    assert (gated.reason[others] == -1).all()


def test_hybrid_reason_names_the_base_and_threshold(aapl: pd.DataFrame) -> None:
    hybrid = REGISTRY.build("hybrid")
    found = decisions(hybrid.targets(aapl.assign(model_score=1.0)))
    assert {text for _, value, text in found if value == 1.0} == {"golden_cross up (50/200)+ml(p>=0.55)"}
    assert {text for _, value, text in found if value == 0.0} == {"golden_cross down (50/200)"}
    assert decisions(hybrid.targets(aapl.assign(model_score=0.0))) == [d for d in found if d[1] == 0.0]


def test_hybrid_needs_the_model_score_column(btc: pd.DataFrame) -> None:
    hybrid = REGISTRY.build("hybrid")
    bars = btc.drop(columns="model_score")
    with pytest.raises(DataError, match=r"'hybrid' needs column\(s\) model_score"):
        check_features(hybrid, bars)
    with pytest.raises(DataError, match="model_score"):
        hybrid.targets(bars)


# --- (g) buy and hold -----------------------------------------------------------------------------------------------


def test_buy_and_hold_decides_long_on_every_bar(aapl: pd.DataFrame) -> None:
    strategy = REGISTRY.build("buy_and_hold")
    targets = strategy.targets(aapl)
    assert strategy.warmup == 0
    assert (targets.exposure == 1.0).all()
    assert {targets.reason_text(int(code)) for code in targets.reason} == {"buy_and_hold"}
