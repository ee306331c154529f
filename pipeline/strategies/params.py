"""A strategy's parameters: a frozen pydantic model with defaults, bounds and descriptions, validated once at the
edge.

Every strategy declares its parameters as a subclass of :class:`StrategyParams`::

    class Params(StrategyParams):
        fast: int = Field(10, ge=1, description="bars in the fast mean")
        slow: int = Field(30, ge=2, description="bars in the slow mean")

``parse_params`` turns what a user wrote (``--param fast=12`` strings, TOML or YAML values, Prefect parameters)
into that model, and refuses an unknown name or a bad value with a ``DataError`` naming the strategy, the
parameter, its bounds and the value given. ``describe_params`` lists them for ``tradeforge strategies show``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from pipeline.domain import DataError


class StrategyParams(BaseModel):
    """The base of every strategy's parameter model: frozen, and no parameter it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class NoParams(StrategyParams):
    """The parameters of a strategy that takes none."""


P = TypeVar("P", bound=StrategyParams)

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def bounds_of(info: FieldInfo) -> str:
    """A field's bounds in words (``">= 1, <= 100"``), or ``""`` when it has none."""
    found = []
    for constraint in info.metadata:
        for attribute, sign in _BOUNDS:
            value = getattr(constraint, attribute, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def type_of(info: FieldInfo) -> str:
    """A field's type as a user reads it (``int``, ``float``, ``str``, ``bool``...)."""
    annotation = info.annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def describe_params(model: type[StrategyParams]) -> list[dict[str, Any]]:
    """Every parameter of ``model``: name, type, default, bounds and description."""
    return [
        {"name": name, "type": type_of(info), "default": info.get_default(call_default_factory=True),
         "bounds": bounds_of(info), "description": info.description or ""}
        for name, info in model.model_fields.items()
    ]


def parse_params(strategy: str, model: type[P], raw: Mapping[str, Any] | None) -> P:
    """``raw`` validated against ``model``; a ``DataError`` naming ``strategy``, the parameter and its bounds when
    a name is unknown or a value is refused. Text values (``--param k=v``) are read as the declared type."""
    values = {str(key): value.strip() if isinstance(value, str) else value for key, value in (raw or {}).items()}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise DataError(_explain(strategy, model, exc)) from None


def _explain(strategy: str, model: type[StrategyParams], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            names = list(model.model_fields)
            accepted = f"its parameters are {', '.join(names)}" if names else "it takes no parameters"
            problems.append(f"strategy {strategy!r} has no parameter {where!r}; {accepted}")
            continue
        info = model.model_fields.get(where)
        detail = f" ({type_of(info)}{', ' + bounds_of(info) if bounds_of(info) else ''})" if info else ""
        message = error["msg"].removeprefix("Value error, ")
        subject = f"parameter {where!r}{detail}" if where else "parameters"
        problems.append(f"strategy {strategy!r} {subject}: {message}, got {error['input']!r}"
                        if where else f"strategy {strategy!r} {subject}: {message}")
    return "; ".join(problems)
