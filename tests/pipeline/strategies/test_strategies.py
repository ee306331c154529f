"""Strategies: causality on real data (truncated prefixes), the crossover maths against an independent
reference, Wilder's RSI, parameter checks, the golden-cross preset, the model gate and buy-and-hold."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import DataError
from pipeline.strategies import REGISTRY, NoParams, Strategy, StrategySpec, Targets, check_features
from pipeline.strategies.buy_and_hold import BuyAndHold
from pipeline.strategies.model_gate import ModelGated
from pipeline.strategies.rsi_reversion import RsiReversion
from pipeline.strategies.sma_cross import SmaCross, golden_cross
from tests.conftest import shared_file

BTC_H1 = "binance_BTC-USDT_1h.parquet"
AAPL_D1 = "quandlwiki_AAPL_1d.parquet"
SLICE = 3_000
SMALL_SLICE = 600
TAIL = 300
STRIDE = 7

# Every registered strategy with its defaults, plus hybrids over each kind of rule.
CASES: list[tuple[str, dict[str, str]]] = [(name, {}) for name in REGISTRY.names()] + [
    ("hybrid", {"base": "sma_cross", "fast": "5", "slow": "20"}),
    ("hybrid", {"base": "rsi_reversion", "threshold": "0.3"}),
    ("hybrid", {"base": "buy_and_hold", "threshold": "0.5"}),
]


def with_model_score(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars plus a deterministic, causal ``model_score``: the rank of the latest return among the last 50."""
    frame = bars.copy()
    frame["model_score"] = frame["close"].pct_change().rolling(50).rank(pct=True)
    return frame


def real_bars(name: str, rows: int) -> pd.DataFrame:
    return with_model_score(pd.read_parquet(shared_file(name)).iloc[-rows:].reset_index(drop=True))


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return real_bars(BTC_H1, SLICE)


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return real_bars(AAPL_D1, SLICE)


@pytest.fixture(scope="module")
def btc_full() -> pd.DataFrame:
    return pd.read_parquet(shared_file(BTC_H1))


def same_decision(left: Targets, i: int, right: Targets, j: int) -> bool:
    a, b = left.exposure[i], right.exposure[j]
    same_exposure = bool(np.isnan(a) and np.isnan(b)) or a == b
    return same_exposure and left.reason_text(int(left.reason[i])) == right.reason_text(int(right.reason[j]))


def truncation_mismatches(strategy: Strategy, features: pd.DataFrame, lengths: Iterable[int]) -> list[int]:
    """Prefix lengths whose last decision (exposure and reason) differs from the full run's at the same bar."""
    full = strategy.targets(features)
    mismatches = []
    for length in lengths:
        prefix = strategy.targets(features.iloc[:length])
        assert prefix.exposure.shape == prefix.reason.shape == (length,)
        if not same_decision(prefix, length - 1, full, length - 1):
            mismatches.append(length)
    return mismatches


def sampled_lengths(rows: int, warmup: int) -> list[int]:
    """Every prefix length over the last ``TAIL`` bars, and every ``STRIDE``-th one from the warmup on."""
    start = max(warmup, 1)
    return sorted(set(range(start, rows - TAIL, STRIDE)) | set(range(max(start, rows - TAIL), rows + 1)))


def decisions(targets: Targets) -> list[tuple[int, float, str]]:
    rows = np.flatnonzero(~np.isnan(targets.exposure))
    return [(int(i), float(targets.exposure[i]), targets.reason_text(int(targets.reason[i]))) for i in rows]


# --- (a) causality: truncated prefixes of real data --------------------------------------------------------------


@pytest.mark.parametrize("data", ["btc", "aapl"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}{p or ''}" for n, p in CASES])
def test_decisions_do_not_change_when_later_bars_arrive(
    name: str, params: dict[str, str], data: str, request: pytest.FixtureRequest
) -> None:
    features: pd.DataFrame = request.getfixturevalue(data)
    strategy = REGISTRY.build(name, params)
    full = strategy.targets(features)
    assert np.isfinite(full.exposure[strategy.warmup :]).any(), "the check must cover real decisions"
    if name == "hybrid" and params.get("base") != "buy_and_hold":
        assert any("+ml(" in text for _, _, text in decisions(full)), "the check must cover confirmed entries"

    lengths = sampled_lengths(len(features), strategy.warmup)
    assert set(range(len(features) - TAIL, len(features) + 1)) <= set(lengths)
    assert truncation_mismatches(strategy, features, lengths) == []


@pytest.mark.parametrize("data", ["btc", "aapl"])
@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}{p or ''}" for n, p in CASES])
def test_decisions_do_not_change_on_any_prefix_of_a_small_slice(
    name: str, params: dict[str, str], data: str, request: pytest.FixtureRequest
) -> None:
    features: pd.DataFrame = request.getfixturevalue(data).iloc[-SMALL_SLICE:].reset_index(drop=True)
    strategy = REGISTRY.build(name, params)
    assert truncation_mismatches(strategy, features, range(1, SMALL_SLICE + 1)) == []


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}{p or ''}" for n, p in CASES])
def test_an_empty_frame_gets_no_decisions(name: str, params: dict[str, str], btc: pd.DataFrame) -> None:
    targets = REGISTRY.build(name, params).targets(btc.iloc[:0])
    assert targets.exposure.shape == targets.reason.shape == (0,)


def test_every_registered_strategy_is_covered_by_the_causality_check() -> None:
    assert {"sma_cross", "golden_cross", "rsi_reversion", "buy_and_hold", "hybrid"} <= set(REGISTRY.names())
    assert {name for name, _ in CASES} == set(REGISTRY.names())


# --- (b) a planted look-ahead is caught ----------------------------------------------------------------------------


class PeekAhead:
    """Long when the *next* close is higher: uses a bar it cannot have seen."""

    name = "peek_ahead"
    requires: tuple[str, ...] = ()
    warmup = 0
    reasons = ("peek up", "peek down")

    def targets(self, features: pd.DataFrame) -> Targets:
        close = features["close"]
        up = (close.shift(-1) > close).to_numpy()
        return Targets(np.where(up, 1.0, 0.0), np.where(up, 0, 1).astype(np.int64), self.reasons)


class CentredMean(SmaCross):
    """A crossover whose slow mean is centred on the bar, so it reads half a window into the future."""

    def targets(self, features: pd.DataFrame) -> Targets:
        close = features["close"].astype("float64")
        d = (close.rolling(self.fast).mean() - close.rolling(self.slow, center=True).mean()).to_numpy()
        previous = np.r_[np.nan, d[:-1]]
        return Targets.from_signals((previous < 0.0) & (d > 0.0), (previous > 0.0) & (d < 0.0), self.reasons)


@pytest.mark.parametrize(
    "factory", [lambda params: PeekAhead(), lambda params: CentredMean(10, 30, name="centred")], ids=["next", "centred"]
)
def test_a_planted_look_ahead_fails_the_causality_check(
    factory: object, btc: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(REGISTRY.built_in, "planted_look_ahead", StrategySpec("planted_look_ahead", NoParams, factory))
    strategy = REGISTRY.build("planted_look_ahead")
    assert np.isfinite(strategy.targets(btc).exposure).any()

    assert truncation_mismatches(strategy, btc, sampled_lengths(len(btc), strategy.warmup)) != []
    small = btc.iloc[-SMALL_SLICE:].reset_index(drop=True)
    assert truncation_mismatches(strategy, small, range(1, SMALL_SLICE + 1)) != []


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


# --- (d) parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: SmaCross(0, 10), "fast"),
        (lambda: SmaCross(-3, 10), "fast"),
        (lambda: SmaCross(10, 10), "slow"),
        (lambda: SmaCross(30, 10), "slow"),
        (lambda: SmaCross(10.0, 30), "fast"),  # type: ignore[arg-type]
        (lambda: SmaCross(10, "30"), "slow"),  # type: ignore[arg-type]
        (lambda: SmaCross(True, 30), "fast"),
        (lambda: RsiReversion(1), "period"),
        (lambda: RsiReversion(14.5), "period"),  # type: ignore[arg-type]
        (lambda: RsiReversion(14, 0, 70), "lower"),
        (lambda: RsiReversion(14, 30, 100), "upper"),
        (lambda: RsiReversion(14, 70, 30), "upper"),
        (lambda: RsiReversion(14, 50, 50), "upper"),
        (lambda: RsiReversion(14, float("nan"), 70), "lower"),
        (lambda: ModelGated(BuyAndHold(), 1.5), "threshold"),
        (lambda: ModelGated(BuyAndHold(), float("nan")), "threshold"),
        (lambda: ModelGated(BuyAndHold(), column=""), "column"),
    ],
)
def test_bad_parameters_are_refused_by_name(build: object, parameter: str) -> None:
    assert callable(build)
    with pytest.raises(DataError, match=f"'{parameter}'"):
        build()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("sma_cross", {"fast": "ten"}, r"'fast' \(int, >= 1\): Input should be a valid integer.*got 'ten'"),
        ("sma_cross", {"fast": "10.5"}, r"'fast' \(int, >= 1\): Input should be a valid integer"),
        ("sma_cross", {"slow": "5"}, r"'slow' must be greater than 'fast'"),
        ("sma_cross", {"fsat": "5"}, r"no parameter 'fsat'; its parameters are fast, slow"),
        ("golden_cross", {"fast": "10"}, r"'golden_cross' has no parameter 'fast'; it takes no parameters"),
        ("rsi_reversion", {"period": "1"}, r"'period' \(int, >= 2\): Input should be greater than or equal to 2"),
        ("rsi_reversion", {"lower": "abc"}, r"'lower' \(float, > 0, < 100\): Input should be a valid number.*'abc'"),
        ("rsi_reversion", {"upper": "inf"}, r"'upper' \(float, > 0, < 100\): Input should be a finite number"),
        ("rsi_reversion", {"lower": "nan"}, r"'lower' \(float, > 0, < 100\): Input should be a finite number"),
        ("rsi_reversion", {"lower": "80"}, r"'upper' must be greater than 'lower'"),
        ("buy_and_hold", {"size": "1"}, r"'buy_and_hold' has no parameter 'size'"),
        ("hybrid", {"threshold": "2"}, r"'threshold' \(float, >= 0, <= 1\): Input should be less than or equal to 1"),
        ("hybrid", {"threshold": "high"}, r"'threshold' \(float, >= 0, <= 1\): Input should be a valid number"),
        ("hybrid", {"base": "hybrid"}, r"'base' must be one of buy_and_hold, golden_cross, rsi_reversion"),
        ("hybrid", {"base": "macd"}, r"'base' must be one of .*got 'macd'"),
        ("hybrid", {"base": "sma_cross", "period": "14"}, r"base 'sma_cross'.*no parameter 'period'"),
        ("hybrid", {"fast": "10"}, r"base 'golden_cross'.*no parameter 'fast'"),
        ("momentum", {}, r"strategy 'momentum' is not known"),
    ],
)
def test_bad_cli_parameters_are_refused_by_name(name: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        REGISTRY.build(name, params)


def test_cli_parameters_are_parsed_into_typed_values() -> None:
    sma = REGISTRY.build("sma_cross", {"fast": " 5 ", "slow": "+20"})
    rsi = REGISTRY.build("rsi_reversion", {"period": "7", "lower": "25.5", "upper": "80"})
    hybrid = REGISTRY.build("hybrid", {"base": "rsi_reversion", "threshold": "0.6", "period": "9"})
    assert isinstance(sma, SmaCross)
    assert (sma.fast, sma.slow, sma.warmup) == (5, 20, 20)
    assert isinstance(rsi, RsiReversion)
    assert (rsi.period, rsi.lower, rsi.upper, rsi.warmup) == (7, 25.5, 80.0, 8)
    assert rsi.reasons == ("rsi_reversion oversold (<25.5)", "rsi_reversion overbought (>80)")
    assert isinstance(hybrid, ModelGated)
    assert isinstance(hybrid.base, RsiReversion)
    assert (hybrid.base.period, hybrid.threshold, hybrid.warmup) == (9, 0.6, 10)
    default = REGISTRY.build("sma_cross")
    assert isinstance(default, SmaCross)
    assert (default.fast, default.slow) == (10, 30)


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


# --- speed ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def million_bars() -> pd.DataFrame:
    frames = [pd.read_parquet(shared_file(name)) for name in ("binance_BTC-USDT_1m.parquet", BTC_H1, AAPL_D1)]
    bars = pd.concat(frames * 2, ignore_index=True).iloc[:1_000_000]
    assert len(bars) == 1_000_000
    return with_model_score(bars)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_a_million_bars_take_well_under_a_fifth_of_a_second(name: str, million_bars: pd.DataFrame) -> None:
    strategy = REGISTRY.build(name)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        strategy.targets(million_bars)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.2, f"{name}: {min(timings):.3f} s for 1M bars"
