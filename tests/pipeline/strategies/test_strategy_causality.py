"""Strategy causality: no decision changes on truncated prefixes of real data; a planted look-ahead is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.strategies import REGISTRY, NoParams, StrategySpec, Targets
from pipeline.strategies.sma_cross import SmaCross
from tests.pipeline.strategies import strategy_helpers
from tests.pipeline.strategies.strategy_helpers import (
    CASES,
    SMALL_SLICE,
    TAIL,
    decisions,
    sampled_lengths,
    truncation_mismatches,
)

btc = strategy_helpers.btc  # module-scoped slices of real bars, with a model score
aapl = strategy_helpers.aapl


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
