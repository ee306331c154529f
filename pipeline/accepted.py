"""What a frozen pydantic model accepts, in words, and its refusals told in those words.

The words come from the model itself, so a hint never drifts from what is accepted: a bounded number's range
(``> 0 and <= 1``) from its ``Field`` bounds and those a validator reports in its error's context (an
``out_of_range`` error whose ``bound`` names the field a bound comes from: ``<= 1 (the leverage)``); a choice's
values from its ``Literal``; a table's keys from its fields. ``explain`` turns a ``ValidationError`` into one
sentence per problem, naming each input as the user gave it (``--max-position``, ``engine.stop_loss``,
``caps.max_drawdown``).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

Location = tuple[int | str, ...]
_SIGNS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number", "out_of_range"}


def shown(value: object) -> str:
    """A value as it was given: numbers plainly (``1.5``, ``2``, ``inf``), text quoted."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return repr(value)


def _limit(value: object) -> str:
    """A bound as a user reads it: ``1`` rather than ``1.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return shown(value)


def bounds(info: FieldInfo, reported: dict[str, Any] | None = None) -> str:
    """A number's range in words: ``> 0 and <= 1``; ``reported`` (an error's context) adds or replaces bounds,
    and its ``bound`` names the field a bound comes from."""
    found: dict[str, Any] = {}
    for constraint in info.metadata:
        for attribute, _ in _SIGNS:
            if getattr(constraint, attribute, None) is not None:
                found[attribute] = getattr(constraint, attribute)
    context = reported or {}
    for attribute, _ in _SIGNS:
        if attribute in context:
            found.pop({"gt": "ge", "ge": "gt", "lt": "le", "le": "lt"}[attribute], None)
            found[attribute] = context[attribute]
    text = " and ".join(f"{sign} {_limit(found[attribute])}" for attribute, sign in _SIGNS if attribute in found)
    return text + (f" (the {context['bound']})" if text and "bound" in context else "")


def choices(info: FieldInfo) -> tuple[Any, ...]:
    """The values a ``Literal`` field accepts (empty for any other field)."""
    annotation: Any = info.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is Literal:
            return typing.get_args(candidate)
    return ()


def field_at(model: type[BaseModel], loc: Location) -> FieldInfo | None:
    """The field an error's location points at, through nested models, lists and mappings."""
    current: Any = model
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _inner_model(info.annotation)
    return info


def _inner_model(annotation: Any) -> Any:
    """The model inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]`` (else the annotation)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, dict, tuple, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            inner = _inner_model(argument)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation


def model_at(model: type[BaseModel], loc: Location) -> type[BaseModel] | None:
    """The model whose keys are at ``loc`` (the parent of an unknown key)."""
    if not loc:
        return model
    info = field_at(model, loc)
    inner = None if info is None else _inner_model(info.annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def unknown_key(key: str, known: Sequence[str]) -> str:
    """``unknown key 'alocation' (did you mean 'allocation'?); the keys are ...``."""
    close = difflib.get_close_matches(key, known, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{guess}; the keys are {', '.join(known)}"


def explain(exc: ValidationError, model: type[BaseModel], name: Callable[[Location], str]) -> list[str]:
    """One sentence per problem of ``exc`` (raised by ``model``); ``name`` gives an input's name from its
    location (an empty location is the whole input)."""
    return [problem(error, model, name) for error in exc.errors(include_url=False)]


def problem(error: Any, model: type[BaseModel], name: Callable[[Location], str]) -> str:
    """One error of a ``ValidationError`` in words (see ``explain``)."""
    loc: Location = tuple(error["loc"])
    kind, value = str(error["type"]), error.get("input")
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        parent = model_at(model, loc[:-1])
        known = list(parent.model_fields) if parent is not None else []
        where = name(loc[:-1])
        return f"{where + ': ' if where else ''}{unknown_key(str(loc[-1]), known)}"
    subject = name(loc)
    if not loc:
        return message
    info = field_at(model, loc)
    if kind == "missing":
        return f"{subject} is missing"
    if info is not None and kind in _RANGE_ERRORS:
        words = bounds(info, error.get("ctx"))
        finite = "a finite number" + (" " if words else "") if kind == "finite_number" else ""
        return f"{subject} {shown(value)} is out of range: it must be {finite}{words}"
    if info is not None and kind == "literal_error":
        return f"{subject} {shown(value)} is not accepted: it must be one of {', '.join(map(str, choices(info)))}"
    if kind == "list_type":
        return f"{subject} must be a list, not {shown(value)} (e.g. [{shown(value)}])"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{subject} must be a table of keys and values, not {shown(value)}"
    return f"{subject} {shown(value)}: {message}"
