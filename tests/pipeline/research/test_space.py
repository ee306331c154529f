"""Search spaces (``pipeline.research.space``) read from ``--space`` texts and checked against the strategy's typed
parameter model: integer and float dimensions, their grid values, the model's bounds, the automatic space of a
model that bounds its parameters on both sides, grid points the model refuses, and every refusal a ``DataError``
naming the input."""

from __future__ import annotations

import pytest

from pipeline.domain import DataError
from pipeline.research import space as space_module
from pipeline.research.space import Dimension, parse_dimension, parse_space
from pipeline.strategies import REGISTRY

SMA = REGISTRY.spec("sma_cross")
RSI = REGISTRY.spec("rsi_reversion")
HYBRID = REGISTRY.spec("hybrid")


# --- one dimension --------------------------------------------------------------------------------------------------


def test_an_integer_dimension_defaults_to_step_one() -> None:
    dimension = parse_dimension(SMA, "fast=2:6")
    assert dimension == Dimension("fast", 2.0, 6.0, 1.0, True)
    values = dimension.values()
    assert values == [2, 3, 4, 5, 6]
    assert all(type(value) is int for value in values)


def test_an_integer_dimension_with_a_step_and_spaces_around_the_parts() -> None:
    dimension = parse_dimension(SMA, " slow = 10 : 40 : 10 ")
    assert dimension.name == "slow"
    assert dimension.values() == [10, 20, 30, 40]
    assert dimension.describe() == "slow=10:40:10"


def test_a_high_that_is_not_a_whole_number_of_steps_away_is_left_out() -> None:
    assert parse_dimension(SMA, "fast=1:10:4").values() == [1, 5, 9]
    assert parse_dimension(RSI, "lower=10:21:2.5").values() == [10.0, 12.5, 15.0, 17.5, 20.0]


def test_a_float_dimension_with_a_fractional_step_reaches_its_high_without_rounding_noise() -> None:
    dimension = parse_dimension(RSI, "lower=10:10.3:0.1")
    assert dimension == Dimension("lower", 10.0, 10.3, 0.1, False)
    assert dimension.values() == [10.0, 10.1, 10.2, 10.3]
    assert all(type(value) is float for value in dimension.values())
    assert dimension.describe() == "lower=10:10.3:0.1"


def test_a_float_dimension_without_a_step_is_continuous_and_has_no_grid() -> None:
    dimension = parse_dimension(RSI, "upper=60:90")
    assert dimension == Dimension("upper", 60.0, 90.0, None, False)
    assert dimension.describe() == "upper=60:90"
    with pytest.raises(DataError, match=r"--space upper: a grid over a float parameter needs a step"):
        dimension.values()


def test_a_single_value_dimension() -> None:
    assert parse_dimension(SMA, "fast=7:7").values() == [7]


# --- bounds from the model ------------------------------------------------------------------------------------------


def test_an_integer_below_the_models_lower_bound_is_refused_naming_the_parameter_and_its_range() -> None:
    with pytest.raises(DataError) as caught:
        parse_dimension(SMA, "fast=0:5")
    message = str(caught.value)
    assert "fast=0:5" in message
    assert "'fast'" in message and "'sma_cross'" in message
    assert "1..inf" in message


def test_open_float_bounds_refuse_the_bound_itself_and_accept_what_lies_inside() -> None:
    with pytest.raises(DataError) as caught:
        parse_dimension(RSI, "lower=0:50")
    assert "lower=0:50" in str(caught.value) and "'lower'" in str(caught.value)
    assert "must stay within" in str(caught.value)
    with pytest.raises(DataError, match=r"lower=10:100:5"):
        parse_dimension(RSI, "lower=10:100:5")
    assert parse_dimension(RSI, "lower=10:50:5").values() == [10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0]
    assert parse_dimension(RSI, "upper=0.5:99.5").low == 0.5


def test_an_integer_lower_bound_is_reached_exactly() -> None:
    assert parse_dimension(SMA, "fast=1:3").values() == [1, 2, 3]
    assert parse_dimension(RSI, "period=2:4").values() == [2, 3, 4]
    with pytest.raises(DataError, match=r"period=1:4.*'period'.*2\.\.inf"):
        parse_dimension(RSI, "period=1:4")


# --- refused texts --------------------------------------------------------------------------------------------------


def test_an_unknown_parameter_is_refused_listing_the_strategys_parameters() -> None:
    with pytest.raises(DataError) as caught:
        parse_dimension(SMA, "nope=1:2")
    message = str(caught.value)
    assert "nope" in message and "'sma_cross'" in message
    assert "fast, slow" in message


def test_a_parameter_that_is_not_a_number_is_refused_pointing_at_param() -> None:
    with pytest.raises(DataError, match=r"--space base: .*'base'.*not a number.*--param base=VALUE"):
        parse_dimension(HYBRID, "base=1:2")


@pytest.mark.parametrize(("text", "says"), [
    ("fast=a:5", "'a' is not a number"),
    ("fast=1:b", "'b' is not a number"),
    ("fast=1:5:x", "'x' is not a number"),
    ("lower=nan:50", "'nan' is not a finite number"),
    ("lower=10:inf", "'inf' is not a finite number"),
    ("fast=5:1", "HIGH 1 is below LOW 5"),
    ("lower=50:10.5", "HIGH 10.5 is below LOW 50"),
    ("fast=1:5:0", "STEP must be positive, got 0"),
    ("fast=1:5:-1", "STEP must be positive, got -1"),
    ("lower=10:50:-2.5", "STEP must be positive, got -2.5"),
    ("fast=1.5:5", "'1.5' is not a whole number, and the parameter is an integer"),
    ("fast=1:5.5", "'5.5' is not a whole number"),
    ("fast=1:5:0.5", "'0.5' is not a whole number"),
])
def test_bad_numbers_are_refused_naming_the_text(text: str, says: str) -> None:
    with pytest.raises(DataError) as caught:
        parse_dimension(SMA if text.startswith("fast") else RSI, text)
    assert text in str(caught.value)
    assert says in str(caught.value)


@pytest.mark.parametrize("text", ["fast", "fast=1", "=1:2", "fast=1:2:3:4", "fast:1:2", ""])
def test_a_text_not_of_the_form_name_low_high_is_refused(text: str) -> None:
    with pytest.raises(DataError) as caught:
        parse_dimension(SMA, text)
    assert repr(text) in str(caught.value)
    assert "name=LOW:HIGH" in str(caught.value)


def test_integer_text_like_2_0_is_a_whole_number() -> None:
    assert parse_dimension(SMA, "fast=2.0:4e0").values() == [2, 3, 4]


# --- the space ------------------------------------------------------------------------------------------------------


def test_a_parameter_named_twice_is_refused() -> None:
    with pytest.raises(DataError, match=r"--space names fast more than once"):
        parse_space(SMA, ["fast=1:5", "slow=10:20", "fast=2:3"])


def test_a_parameter_both_searched_and_fixed_is_refused() -> None:
    with pytest.raises(DataError, match=r"parameter\(s\) fast are both searched \(--space\) and fixed \(--param\)"):
        parse_space(SMA, ["fast=1:5"], {"fast": 3})


def test_an_unknown_fixed_parameter_is_refused() -> None:
    with pytest.raises(DataError, match=r"strategy 'sma_cross' has no parameter nope"):
        parse_space(SMA, ["fast=1:5"], {"nope": 3})


def test_a_model_without_a_doubly_bounded_parameter_needs_space_texts() -> None:
    with pytest.raises(DataError) as caught:
        parse_space(SMA, [])
    message = str(caught.value)
    assert "'sma_cross'" in message
    assert "--space name=LOW:HIGH[:STEP]" in message


def test_the_automatic_space_searches_the_parameters_bounded_on_both_sides_only() -> None:
    found = parse_space(RSI, [])
    assert [d.name for d in found.dimensions] == ["lower", "upper"]  # period has no upper bound
    for dimension in found.dimensions:
        assert not dimension.integer and dimension.step is None
        assert 0.0 < dimension.low < 1e-300  # the open bound 0 itself is not searched
        assert 99.999 < dimension.high < 100.0
    assert found.fixed == {}
    hybrid = parse_space(HYBRID, [])
    assert [(d.name, d.low, d.high) for d in hybrid.dimensions] == [("threshold", 0.0, 1.0)]


def test_fixed_values_complete_every_point() -> None:
    found = parse_space(SMA, ["fast=2:6:2"], {"slow": 5})
    assert found.fixed == {"slow": 5}
    assert found.full({"fast": 4}) == {"slow": 5, "fast": 4}
    assert found.admits({"fast": 4}) is None
    refused = found.admits({"fast": 6})
    assert refused is not None and "'slow' must be greater than 'fast'" in refused
    points, left_out = found.grid()
    assert points == [{"fast": 2}, {"fast": 4}]
    assert left_out == 1


def test_the_grid_leaves_out_and_counts_sets_the_model_refuses() -> None:
    found = parse_space(SMA, ["fast=2:10:4", "slow=6:12:2"])
    points, left_out = found.grid()
    every = [(fast, slow) for fast in (2, 6, 10) for slow in (6, 8, 10, 12)]  # first dimension slowest
    assert [(p["fast"], p["slow"]) for p in points] == [(f, s) for f, s in every if s > f]
    assert left_out == sum(1 for f, s in every if s <= f) == 4
    assert len(points) + left_out == 12
    assert found.describe() == "fast=2:10:4 slow=6:12:2"


def test_admits_says_why_a_set_is_refused() -> None:
    found = parse_space(RSI, ["lower=10:50:10", "upper=40:90:10"])
    assert found.admits({"lower": 20.0, "upper": 70.0}) is None
    why = found.admits({"lower": 50.0, "upper": 40.0})
    assert why is not None and "'upper' must be greater than 'lower'" in why and "rsi_reversion" in why
    assert found.full({"lower": 20.0, "upper": 70.0}) == {"lower": 20.0, "upper": 70.0}
    points, left_out = found.grid()
    assert all(p["upper"] > p["lower"] for p in points)
    assert left_out == sum(1 for lo in (10, 20, 30, 40, 50) for up in (40, 50, 60, 70, 80, 90) if up <= lo)


def test_a_grid_with_no_valid_point_is_refused() -> None:
    with pytest.raises(DataError, match=r"no point of the grid fast=5:9:1 slow=2:5:1 .*'sma_cross'"):
        parse_space(SMA, ["fast=5:9", "slow=2:5"]).grid()


def test_a_grid_too_big_is_refused_before_anything_is_checked() -> None:
    found = parse_space(SMA, ["fast=1:1000", "slow=2:2000"])
    with pytest.raises(DataError) as caught:
        found.grid()
    message = str(caught.value)
    assert "1,999,000 points" in message
    assert f"{space_module.MAX_GRID:,}" in message
    assert "--trials" in message

