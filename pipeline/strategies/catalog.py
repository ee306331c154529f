"""Every strategy by name: the shipped ones, and a trader's own (:mod:`pipeline.strategies.loading`).

``REGISTRY.build(name, params)`` finds the strategy ``name`` — a shipped name, ``PATH.py:Class``,
``package.module:Class``, or the name of a class in a ``strategy_paths`` folder or of an entry point — validates
``params`` against its parameter model once, and builds it. A name that matches nothing is refused with the
names that exist and the files that could not be loaded. A user strategy may not take a shipped name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.domain import DataError
from pipeline.strategies.base import Strategy
from pipeline.strategies.loading import (
    Found,
    LoadProblem,
    load_reference,
    scan_entry_points,
    scan_folders,
)
from pipeline.strategies.params import StrategyParams, describe_params, parse_params

BUILT_IN = "built-in"


@dataclass(frozen=True)
class StrategySpec:
    """One strategy: its name, parameter model, how it is built from validated parameters, and where it comes
    from (``source``: built-in, path, module or entry point; ``origin``: the file, module or distribution)."""

    name: str
    params: type[StrategyParams]
    make: Callable[[Any], Strategy]
    summary: str = ""
    source: str = BUILT_IN
    origin: str = ""

    def build(self, raw: Mapping[str, Any] | None = None) -> Strategy:
        """The strategy with ``raw`` parameters, validated against :attr:`params` (``DataError`` naming them)."""
        return self.make(parse_params(self.name, self.params, raw))

    def describe(self) -> dict[str, Any]:
        """What ``tradeforge strategies show`` prints: name, source, origin, summary and parameters."""
        return {"name": self.name, "source": self.source, "origin": self.origin, "summary": self.summary,
                "parameters": describe_params(self.params)}

    @classmethod
    def of(cls, found: Found, name: str | None = None) -> StrategySpec:
        doc = (found.cls.__doc__ or "").strip().splitlines()
        return cls(name or found.name, found.params, found.build, doc[0] if doc else "", found.source, found.origin)


def _default_paths() -> list[Path]:
    from pipeline.settings import Settings

    return list(Settings().strategy_paths)


@dataclass
class Registry:
    """The shipped strategies, plus what the folders of ``paths()`` and the installed entry points hold."""

    built_in: dict[str, StrategySpec] = field(default_factory=dict)
    paths: Callable[[], Sequence[Path]] = _default_paths

    def register(self, spec: StrategySpec) -> None:
        self.built_in[spec.name] = spec

    def user(self) -> tuple[dict[str, StrategySpec], list[LoadProblem]]:
        """The user strategies found now, by name, and what could not be loaded (a name defined twice, or one
        that a shipped strategy already has, is a problem, not a strategy)."""
        found_in_folders, problems = scan_folders(self.paths())
        found_by_packages, more = scan_entry_points()
        problems += more
        specs: dict[str, StrategySpec] = {}
        for found in [*found_in_folders, *found_by_packages]:
            where = f"{found.origin} ({found.source})"
            if found.name in self.built_in:
                problems.append(LoadProblem(where, None, f"strategy {found.name!r} has the name of a shipped "
                                                         "strategy; give it another name"))
            elif found.name in specs:
                problems.append(LoadProblem(where, None, f"strategy {found.name!r} is also defined in "
                                                         f"{specs[found.name].origin}; names must be unique"))
            else:
                specs[found.name] = StrategySpec.of(found)
        return specs, problems

    def names(self) -> list[str]:
        """Every strategy name: the shipped ones, then the user ones."""
        return sorted(self.built_in) + sorted(self.user()[0])

    def specs(self) -> list[StrategySpec]:
        return [self.built_in[name] for name in sorted(self.built_in)] + [
            spec for _, spec in sorted(self.user()[0].items())]

    def spec(self, name: str) -> StrategySpec:
        """The strategy ``name`` (see the module documentation)."""
        name = name.strip()
        if name in self.built_in:
            return self.built_in[name]
        if ":" in name:
            return StrategySpec.of(load_reference(name), name)
        specs, problems = self.user()
        if name in specs:
            return specs[name]
        known = ", ".join(sorted(self.built_in) + sorted(specs))
        broken = "".join(f"\n  could not load {problem}" for problem in problems)
        raise DataError(f"strategy {name!r} is not known; choose one of {known}, or name a class as PATH.py:Class "
                        f"or package.module:Class{broken}")

    def build(self, name: str, params: Mapping[str, Any] | None = None) -> Strategy:
        """The strategy ``name`` built with ``params`` (text or typed values), validated once."""
        return self.spec(name).build(params)


REGISTRY = Registry()
