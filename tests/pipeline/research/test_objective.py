"""Objectives (``pipeline.research.objective``): a named metric, the ``return`` alias, arithmetic expressions over
the metrics, no value where a metric is undefined or the result is not a finite number or too few trades closed,
and every refused text a ``DataError`` naming it."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from pipeline.domain import DataError
from pipeline.research.objective import METRICS, Objective

RUN: dict[str, Any] = {"total_return": 0.12, "cagr": 0.3, "volatility": 0.2, "sharpe": 1.5, "sortino": 2.25,
                       "max_drawdown": 0.08, "calmar": 3.75, "trades": 12, "exposure": 0.4, "final_equity": 112_000.0}


def run(**changes: Any) -> dict[str, Any]:
    """The metrics of one run, with ``changes``."""
    return {**RUN, **changes}


@pytest.mark.parametrize("name", ["sharpe", "sortino", "calmar", "max_drawdown", "trades", "final_equity"])
def test_a_named_metric_is_its_value(name: str) -> None:
    objective = Objective.parse(name)
    assert objective.text == name
    assert objective.reads == (name,)
    assert objective.min_trades == 0
    assert objective.value(RUN) == float(RUN[name])


def test_return_is_the_total_return() -> None:
    objective = Objective.parse("return")
    assert objective.text == "return"
    assert objective.reads == ("total_return",)
    assert objective.value(RUN) == 0.12
    assert Objective.parse("  return  ").value(RUN) == 0.12


def test_the_text_is_kept_without_surrounding_blanks() -> None:
    assert Objective.parse("  sharpe - max_drawdown \n").text == "sharpe - max_drawdown"


@pytest.mark.parametrize(("text", "expected"), [
    ("sharpe - 2 * max_drawdown", 1.5 - 2 * 0.08),
    ("(sharpe + sortino) / 2", (1.5 + 2.25) / 2),
    ("total_return * 100 - trades / 4", 0.12 * 100 - 12 / 4),
    ("sharpe ** 2", 1.5 ** 2),
    ("2 ** -1 * calmar", 0.5 * 3.75),
    ("min(sharpe, sortino, calmar)", 1.5),
    ("max(sharpe, sortino, calmar)", 3.75),
    ("max(sharpe, 0)", 1.5),
    ("abs(-sharpe)", 1.5),
    ("abs(total_return - 1)", 0.88),
    ("-max_drawdown", -0.08),
    ("+sharpe", 1.5),
    ("- -sharpe", 1.5),
    ("min(sharpe - max_drawdown * 10, abs(cagr) / volatility)", min(1.5 - 0.8, 0.3 / 0.2)),
    ("1.5", 1.5),
])
def test_expressions(text: str, expected: float) -> None:
    assert Objective.parse(text).value(RUN) == pytest.approx(expected, rel=1e-15)


def test_an_expression_reads_each_metric_once_in_order() -> None:
    objective = Objective.parse("sharpe - 2 * max_drawdown + min(sharpe, calmar) + abs(trades)")
    assert objective.reads == ("calmar", "max_drawdown", "sharpe", "trades")
    assert Objective.parse("3 * 2").reads == ()


def test_every_metric_may_be_read() -> None:
    objective = Objective.parse(" + ".join(METRICS))
    assert objective.reads == tuple(sorted(METRICS))
    assert objective.value(RUN) == pytest.approx(sum(float(RUN[name]) for name in METRICS))


def test_an_undefined_metric_leaves_no_value() -> None:
    assert Objective.parse("sharpe").value(run(sharpe=None)) is None
    assert Objective.parse("sortino - max_drawdown").value(run(sortino=None)) is None
    assert Objective.parse("max(sharpe, calmar)").value(run(calmar=None)) is None
    assert Objective.parse("total_return").value({"sharpe": 1.0}) is None  # not reported at all
    # a metric the expression does not read may be undefined
    assert Objective.parse("sharpe").value(run(calmar=None, sortino=None)) == 1.5


def test_dividing_by_zero_leaves_no_value() -> None:
    assert Objective.parse("total_return / trades").value(run(trades=0)) is None
    assert Objective.parse("sharpe / (sortino - sortino)").value(RUN) is None
    assert Objective.parse("1 / 0").value(RUN) is None


def test_a_result_that_is_not_finite_leaves_no_value() -> None:
    assert Objective.parse("final_equity ** 400").value(RUN) is None  # overflow
    assert Objective.parse("final_equity * 1e308").value(RUN) is None  # inf
    assert Objective.parse("sharpe").value(run(sharpe=math.inf)) is None
    assert Objective.parse("sharpe - sortino").value(run(sharpe=math.inf, sortino=math.inf)) is None  # nan
    assert Objective.parse("sharpe").value(run(sharpe=math.nan)) is None
    assert Objective.parse("0 ** -1").value(RUN) is None


def test_min_trades_gates_the_value() -> None:
    objective = Objective.parse("sharpe", min_trades=12)
    assert objective.min_trades == 12
    assert objective.value(run(trades=12)) == 1.5
    assert objective.value(run(trades=13)) == 1.5
    assert objective.value(run(trades=11)) is None
    assert objective.value({k: v for k, v in RUN.items() if k != "trades"}) is None
    assert Objective.parse("sharpe", min_trades=0).value(run(trades=0)) == 1.5


@pytest.mark.parametrize(("text", "says"), [
    ("profit", "reads 'profit', which is not a metric"),
    ("sharpe - drawdown", "reads 'drawdown', which is not a metric"),
    ("sharpe.real", "Attribute is not allowed"),
    ("round(sharpe)", "'round'"),
    ("__import__('os')", "'__import__'"),
    ("sharpe(1)", "only min(...), max(...) and abs(...) may be called"),
    ("min(sharpe, calmar, key=abs)", "only min(...), max(...) and abs(...) may be called"),
    ("'sharpe'", "Constant is not allowed"),
    ("sharpe + 'x'", "Constant is not allowed"),
    ("True", "Constant is not allowed"),
    ("lambda: sharpe", "Lambda is not allowed"),
    ("[sharpe for sharpe in (1, 2)]", "ListComp is not allowed"),
    ("max(sharpe for sharpe in (1, 2))", "max(...) takes two or more arguments"),
    ("sharpe > 1", "Compare is not allowed"),
    ("sharpe if trades else 0", "IfExp is not allowed"),
    ("sharpe % 2", "Mod is not allowed"),
    ("sharpe // 2", "FloorDiv is not allowed"),
    ("(sharpe, calmar)", "Tuple is not allowed"),
    ("sharpe +", "is not a valid expression"),
    ("sharpe = 1", "is not a valid expression"),
])
def test_refused_texts_name_themselves(text: str, says: str) -> None:
    with pytest.raises(DataError) as caught:
        Objective.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    assert says in message


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_an_empty_objective_is_refused(text: str) -> None:
    with pytest.raises(DataError, match=r"--objective is empty: give sharpe, sortino, calmar, return"):
        Objective.parse(text)


def test_negative_min_trades_is_refused() -> None:
    with pytest.raises(DataError, match=r"--min-trades must be 0 or more, got -1"):
        Objective.parse("sharpe", min_trades=-1)


def test_an_unknown_metric_is_refused_listing_the_metrics() -> None:
    with pytest.raises(DataError) as caught:
        Objective.parse("profit")
    assert all(name in str(caught.value) for name in METRICS)


def test_a_complex_result_leaves_no_value() -> None:
    assert Objective.parse("total_return ** 0.5").value(run(total_return=-0.25)) is None


@pytest.mark.parametrize("text", ["min(sharpe)", "max(sharpe)", "min()", "abs(sharpe, sortino)"])
def test_a_call_with_the_wrong_number_of_arguments_is_refused(text: str) -> None:
    with pytest.raises(DataError, match=re.escape(repr(text))):
        Objective.parse(text)
