"""What a study maximises: a metric of the backtest, or an arithmetic expression of several.

``Objective.parse(text)`` takes ``sharpe``, ``sortino``, ``calmar``, ``return`` (the total return) or an
expression over the metrics every sweep reports (``METRICS``) with numbers, ``+ - * / **``, parentheses and
``min``, ``max``, ``abs`` — e.g. ``sharpe - 2 * max_drawdown``. ``value(metrics)`` is None when a metric it reads
is undefined for that run (a Sharpe ratio without returns), when the result is not a finite number, or when the
run closed fewer than ``min_trades`` trades: such a trial has no value and is never the best.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.domain import DataError

METRICS = ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar", "trades",
           "exposure", "final_equity")
ALIASES = {"return": "total_return"}
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


class _Undefined(Exception):
    """A metric the expression reads has no value for this run."""


@dataclass(frozen=True)
class Objective:
    """A parsed objective: its text, the metrics it reads, and the least trades a run must close."""

    text: str
    tree: ast.expr
    reads: tuple[str, ...]
    min_trades: int = 0

    @classmethod
    def parse(cls, text: str, min_trades: int = 0) -> Objective:
        source = text.strip()
        if not source:
            raise DataError("--objective is empty: give sharpe, sortino, calmar, return or an expression")
        if min_trades < 0:
            raise DataError(f"--min-trades must be 0 or more, got {min_trades}")
        try:
            tree = ast.parse(re.sub(r"\breturn\b", ALIASES["return"], source), mode="eval").body
        except SyntaxError as exc:
            raise DataError(f"--objective {source!r} is not a valid expression: {exc.msg}") from None
        reads = tuple(sorted({_check(node, source) for node in ast.walk(tree) if isinstance(node, ast.Name)} - {""}))
        for node in ast.walk(tree):
            _allowed(node, source)
        return cls(source, tree, reads, min_trades)

    def value(self, metrics: Mapping[str, float | int | None]) -> float | None:
        """The objective of one run's metrics, or None (see the module documentation)."""
        trades = metrics.get("trades")
        if self.min_trades and (trades is None or int(trades) < self.min_trades):
            return None
        try:
            result = _evaluate(self.tree, metrics)
        except (_Undefined, ZeroDivisionError, OverflowError, ValueError, TypeError):
            return None  # TypeError: a negative number to a fractional power is complex
        return result if math.isfinite(result) else None


def _check(node: ast.Name, source: str) -> str:
    if node.id in _FUNCTIONS:
        return ""
    name = ALIASES.get(node.id, node.id)
    if name not in METRICS:
        known = ", ".join((*METRICS, *ALIASES))
        raise DataError(f"--objective {source!r} reads {node.id!r}, which is not a metric; use {known}")
    return name


def _allowed(node: ast.AST, source: str) -> None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
            raise DataError(f"--objective {source!r}: only min(...), max(...) and abs(...) may be called")
        wanted = "one argument" if node.func.id == "abs" else "two or more arguments"
        if (len(node.args) != 1) if node.func.id == "abs" else (len(node.args) < 2):
            raise DataError(f"--objective {source!r}: {node.func.id}(...) takes {wanted}, got {len(node.args)}")
        return
    allowed = (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load, ast.USub, ast.UAdd, *_BINARY)
    if not isinstance(node, allowed) or (isinstance(node, ast.Constant) and not _is_number(node.value)):
        raise DataError(f"--objective {source!r}: {type(node).__name__} is not allowed; use metrics, numbers, "
                        "+ - * / **, parentheses, min, max and abs")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _evaluate(node: ast.expr, metrics: Mapping[str, float | int | None]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        found = metrics.get(ALIASES.get(node.id, node.id))
        if found is None:
            raise _Undefined(node.id)
        return float(found)
    if isinstance(node, ast.UnaryOp):
        inner = _evaluate(node.operand, metrics)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        return float(_BINARY[type(node.op)](_evaluate(node.left, metrics), _evaluate(node.right, metrics)))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return float(_FUNCTIONS[node.func.id](*(_evaluate(arg, metrics) for arg in node.args)))
    raise _Undefined(type(node).__name__)  # pragma: no cover - refused by parse
