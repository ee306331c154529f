"""Strategy parameters: bad ones refused by name, the CLI's strings parsed into typed values."""

from __future__ import annotations

import pytest

from pipeline.domain import DataError
from pipeline.strategies import REGISTRY
from pipeline.strategies.buy_and_hold import BuyAndHold
from pipeline.strategies.model_gate import ModelGated
from pipeline.strategies.rsi_reversion import RsiReversion
from pipeline.strategies.sma_cross import SmaCross

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
