"""A search space: which of a strategy's parameters vary and over what, taken from its typed parameter model.

``parse_space(spec, texts, fixed)`` reads ``--space`` texts ``name=LOW:HIGH[:STEP]``. Each names a numeric
parameter of the strategy and must lie inside the bounds its model declares. Without any text, every numeric
parameter whose model declares both a lower and an upper bound is searched over those bounds. Parameters not
searched keep ``fixed`` values (``--param``) or their defaults. An integer parameter takes integer bounds and
steps (step 1 by default); a float parameter needs a step for a grid. A parameter set that the model refuses as a
whole (``slow`` not above ``fast``) is not a point of the space: ``Space.grid`` leaves it out and counts it,
``Space.admits`` says so for one set.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic.fields import FieldInfo

from pipeline.domain import DataError
from pipeline.strategies import StrategySpec
from pipeline.strategies.params import parse_params

MAX_GRID = 1_000_000


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: ``low..high`` inclusive, by ``step`` (None: continuous, floats only)."""

    name: str
    low: float
    high: float
    step: float | None
    integer: bool

    def values(self) -> list[int | float]:
        """Every grid value, ``low`` first, ``high`` last when a whole number of steps away."""
        if self.step is None:
            raise DataError(f"--space {self.name}: a grid over a float parameter needs a step (LOW:HIGH:STEP)")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        if self.integer:
            return [int(self.low + k * self.step) for k in range(count)]
        return [round(self.low + k * self.step, 12) for k in range(count)]

    def describe(self) -> str:
        step = "" if self.step is None else f":{_text(self.step)}"
        return f"{self.name}={_text(self.low)}:{_text(self.high)}{step}"


@dataclass(frozen=True)
class Space:
    """The searched dimensions of one strategy and the values of its other parameters."""

    spec: StrategySpec
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, Any]

    def admits(self, params: Mapping[str, Any]) -> str | None:
        """None when the model accepts ``params`` with the fixed values, else why not."""
        try:
            parse_params(self.spec.name, self.spec.params, {**self.fixed, **params})
        except DataError as exc:
            return str(exc)
        return None

    def full(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with the fixed values: what the strategy is built with."""
        return {**self.fixed, **params}

    def grid(self) -> tuple[list[dict[str, Any]], int]:
        """Every admitted point of the grid (first dimension slowest), and how many points were refused (worked
        out once per space)."""
        points, refused = self._grid
        return list(points), refused

    def example(self, grid: bool) -> dict[str, Any]:
        """A parameter set of the space to build the strategy with before any trial (to learn what its frame
        needs): the first grid point for a grid, else the fixed values and the defaults."""
        return self.full(self.grid()[0][0] if grid else {})

    @cached_property
    def _grid(self) -> tuple[list[dict[str, Any]], int]:
        axes = [d.values() for d in self.dimensions]
        size = math.prod(len(axis) for axis in axes)
        if size > MAX_GRID:
            raise DataError(f"the grid has {size:,} points (more than {MAX_GRID:,}); use larger steps, narrower "
                            "--space ranges, or sample with --trials instead of --grid")
        points, refused = [], 0
        for values in itertools.product(*axes):
            point = dict(zip((d.name for d in self.dimensions), values, strict=True))
            if self.admits(point) is None:
                points.append(point)
            else:
                refused += 1
        if not points:
            raise DataError(f"no point of the grid {self.describe()} is a valid parameter set of strategy "
                            f"{self.spec.name!r}")
        return points, refused

    def describe(self) -> str:
        return " ".join(d.describe() for d in self.dimensions)


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bounds(info: FieldInfo, integer: bool) -> tuple[float, float]:
    low, high = -math.inf, math.inf
    unit = 1.0 if integer else 0.0
    for constraint in info.metadata:
        for attribute, shift, lower in (("ge", 0.0, True), ("gt", unit, True), ("le", 0.0, False),
                                        ("lt", -unit, False)):
            value = getattr(constraint, attribute, None)
            if value is None:
                continue
            bound = float(value) + shift
            strict = attribute in ("gt", "lt") and not integer
            if lower:
                low = max(low, math.nextafter(bound, math.inf) if strict else bound)
            else:
                high = min(high, math.nextafter(bound, -math.inf) if strict else bound)
    return low, high


def _numeric(spec: StrategySpec, name: str) -> tuple[FieldInfo, bool]:
    fields = spec.params.model_fields
    if name not in fields:
        names = ", ".join(fields) or "none"
        raise DataError(f"--space {name}: strategy {spec.name!r} has no parameter {name!r} (its parameters: {names})")
    info = fields[name]
    if info.annotation is int:
        return info, True
    if info.annotation is float:
        return info, False
    raise DataError(f"--space {name}: parameter {name!r} of strategy {spec.name!r} is not a number; fix it with "
                    f"--param {name}=VALUE instead")


def _number(text: str, integer: bool, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"--space {where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"--space {where}: {text!r} is not a finite number")
    if integer and not value.is_integer():
        raise DataError(f"--space {where}: {text!r} is not a whole number, and the parameter is an integer")
    return value


def parse_dimension(spec: StrategySpec, text: str) -> Dimension:
    """One ``name=LOW:HIGH[:STEP]`` text of strategy ``spec``, checked against the parameter's bounds."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    parts = rest.split(":")
    if not sep or not name or len(parts) not in (2, 3):
        raise DataError(f"--space {text!r} is not valid: write name=LOW:HIGH or name=LOW:HIGH:STEP")
    info, integer = _numeric(spec, name)
    low, high = (_number(part.strip(), integer, text) for part in parts[:2])
    step = _number(parts[2].strip(), integer, text) if len(parts) == 3 else (1.0 if integer else None)
    if high < low:
        raise DataError(f"--space {text}: HIGH {_text(high)} is below LOW {_text(low)}")
    if step is not None and step <= 0:
        raise DataError(f"--space {text}: STEP must be positive, got {_text(step)}")
    lowest, highest = _bounds(info, integer)
    if low < lowest or high > highest:
        allowed = f"{_text(lowest) if math.isfinite(lowest) else '-inf'}.." \
                  f"{_text(highest) if math.isfinite(highest) else 'inf'}"
        raise DataError(f"--space {text}: parameter {name!r} of strategy {spec.name!r} must stay within {allowed}")
    return Dimension(name, low, high, step, integer)


def parse_space(spec: StrategySpec, texts: Sequence[str], fixed: Mapping[str, Any] | None = None) -> Space:
    """The search space of strategy ``spec`` (see the module documentation)."""
    dimensions = [parse_dimension(spec, text) for text in texts]
    names = [d.name for d in dimensions]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"--space names {', '.join(twice)} more than once")
    if not dimensions:
        for name, info in spec.params.model_fields.items():
            if info.annotation in (int, float):
                low, high = _bounds(info, info.annotation is int)
                if math.isfinite(low) and math.isfinite(high):
                    dimensions.append(Dimension(name, low, high, 1.0 if info.annotation is int else None,
                                                info.annotation is int))
    if not dimensions:
        raise DataError(f"strategy {spec.name!r} declares no parameter with both bounds; name the ones to search "
                        "with --space name=LOW:HIGH[:STEP]")
    fixed_values = dict(fixed or {})
    clash = sorted(set(fixed_values) & {d.name for d in dimensions})
    if clash:
        raise DataError(f"parameter(s) {', '.join(clash)} are both searched (--space) and fixed (--param)")
    unknown = sorted(set(fixed_values) - set(spec.params.model_fields))
    if unknown and spec.params.model_config.get("extra") != "allow":
        raise DataError(f"strategy {spec.name!r} has no parameter {', '.join(unknown)}")
    return Space(spec, tuple(dimensions), fixed_values)
