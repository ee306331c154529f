"""Finding a trader's own strategies: in a Python file, in an importable module, in the folders of the setting
``strategy_paths``, or through the ``tradeforge.strategies`` entry-point group of installed packages.

A user strategy is a class with a ``name`` (the name it is found by), a ``Params`` model (a subclass of
:class:`~pipeline.strategies.params.StrategyParams`) and a constructor that takes those parameters, or no
``Params`` and a constructor without arguments; the instances it builds are
:class:`~pipeline.strategies.base.Strategy` objects. It is named:

* ``PATH.py:Class`` — the class ``Class`` of the file at ``PATH``;
* ``package.module:Class`` — the class ``Class`` of an importable module;
* ``NAME`` — the class whose ``name`` is ``NAME`` in a file of a ``strategy_paths`` folder, or the entry point
  ``NAME`` of the group ``tradeforge.strategies``.

A file that cannot be loaded (a syntax error, an import that fails, an exception while it runs) is reported as
a :class:`LoadProblem` naming the file, the line and the problem; the other files and their strategies load as
they would without it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.domain import DataError
from pipeline.strategies.params import NoParams, StrategyParams

ENTRY_POINT_GROUP = "tradeforge.strategies"


@dataclass(frozen=True)
class LoadProblem:
    """A strategy file or entry point that could not be loaded: where, at which line, and why."""

    origin: str
    line: int | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.origin}, line {self.line}" if self.line else self.origin
        return f"{where}: {self.problem}"


class StrategyLoadError(DataError):
    """A user strategy that cannot be loaded; ``problem`` says where and why."""

    def __init__(self, problem: LoadProblem) -> None:
        super().__init__(f"strategy could not be loaded: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class Found:
    """A user strategy class and where it came from (``source``: path, module or entry point; ``origin``: the
    file, module or distribution)."""

    cls: type[Any]
    source: str
    origin: str

    @property
    def name(self) -> str:
        return str(self.cls.name)

    @property
    def params(self) -> type[StrategyParams]:
        model = getattr(self.cls, "Params", None) or NoParams
        return model

    def build(self, params: StrategyParams) -> Any:
        """An instance: ``cls(params)`` when the class declares ``Params``, else ``cls()``; an exception of the
        constructor is a ``StrategyLoadError`` naming the class and the line."""
        try:
            return self.cls(params) if getattr(self.cls, "Params", None) is not None else self.cls()
        except DataError:
            raise  # the strategy's own refusal, already worded for the user
        except Exception as exc:
            problem = _problem(self.origin, exc)
            raise StrategyLoadError(LoadProblem(f"{problem.origin} ({self.cls.__name__})", problem.line,
                                                problem.problem)) from exc


def is_strategy_class(value: object) -> bool:
    """Whether ``value`` is a user strategy class: a class with a text ``name``, a ``stream`` method and, if it
    has ``Params``, a :class:`StrategyParams` model."""
    if not inspect.isclass(value) or not isinstance(getattr(value, "name", None), str):
        return False
    model = getattr(value, "Params", None)
    has_model = model is None or (inspect.isclass(model) and issubclass(model, StrategyParams))
    return has_model and callable(getattr(value, "stream", None))


def _problem(origin: Path | str, exc: BaseException) -> LoadProblem:
    if isinstance(exc, SyntaxError):
        return LoadProblem(str(exc.filename or origin), exc.lineno, f"SyntaxError: {exc.msg}")
    line = None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename) == Path(origin):
            line = frame.lineno
            break
    return LoadProblem(str(origin), line, f"{type(exc).__name__}: {exc}")


_IMPORTED: dict[tuple[Path, int, int], ModuleType] = {}
"""Modules already imported, by file and its modification time and size: a file is run again only once it
changed."""


def import_file(path: Path) -> ModuleType:
    """The module of the Python file ``path``, imported under a name of its own (two files with one stem do not
    collide); raises :class:`StrategyLoadError` naming the file and the line when it cannot be loaded."""
    path = path.resolve()
    if not path.is_file():
        raise DataError(f"strategy file {path} does not exist")
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key in _IMPORTED:
        return _IMPORTED[key]
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"tradeforge_user_strategies.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"strategy file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise StrategyLoadError(_problem(path, exc)) from exc
    _IMPORTED[key] = module
    return module


def _class_of(module: ModuleType, attribute: str, origin: str) -> type[Any]:
    value = getattr(module, attribute, None)
    if value is None:
        raise DataError(f"{origin} has no class {attribute!r}")
    if not is_strategy_class(value):
        raise DataError(f"{origin}:{attribute} is not a strategy class: it needs a text 'name', a 'stream' method "
                        "and, for parameters, a 'Params' model (a StrategyParams subclass)")
    return value  # type: ignore[no-any-return]


def _file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def anchor(reference: str, folder: Path) -> str:
    """``reference`` with a relative ``PATH.py`` made absolute against ``folder`` (a portfolio file's folder), so
    that it names the same file from any working directory; any other name is returned as it is. (A reference
    typed on a command line needs nothing: a relative path is read from the working directory.)"""
    target, separator, attribute = reference.strip().rpartition(":")
    if not separator or not _file_target(target) or Path(target).expanduser().is_absolute():
        return reference
    return f"{(folder / target).resolve()}:{attribute}"


def load_reference(reference: str) -> Found:
    """The class named by ``PATH.py:Class`` or ``package.module:Class``."""
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise DataError(f"strategy {reference!r} is not PATH.py:Class or package.module:Class")
    if _file_target(target):
        path = Path(target).expanduser().resolve()
        return Found(_class_of(import_file(path), attribute, str(path)), "path", str(path))
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        raise DataError(f"strategy module {target!r} cannot be imported: {exc}") from exc
    except Exception as exc:
        raise StrategyLoadError(_problem(getattr(exc, "filename", None) or target, exc)) from exc
    return Found(_class_of(module, attribute, target), "module", target)


def scan_folders(folders: Iterable[Path]) -> tuple[list[Found], list[LoadProblem]]:
    """The strategy classes defined in the ``*.py`` files of ``folders`` (not recursive; files starting with
    ``_`` are skipped), and a problem for each file that could not be loaded."""
    found: list[Found] = []
    problems: list[LoadProblem] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                module = import_file(path)
            except StrategyLoadError as exc:
                problems.append(exc.problem)
                continue
            for _, value in inspect.getmembers(module, is_strategy_class):
                if value.__module__ == module.__name__:
                    found.append(Found(value, "path", str(path.resolve())))
    return found, problems


def scan_entry_points(group: str = ENTRY_POINT_GROUP) -> tuple[list[Found], list[LoadProblem]]:
    """The strategy classes that installed packages declare in the entry-point ``group`` (the entry point's
    name is the strategy's name)."""
    found: list[Found] = []
    problems: list[LoadProblem] = []
    for point in entry_points(group=group):
        origin = f"entry point {point.name!r} ({point.value})"
        try:
            value = point.load()
        except Exception as exc:
            problems.append(_problem(origin, exc))
            continue
        if not is_strategy_class(value):
            problems.append(LoadProblem(origin, None, "is not a strategy class"))
            continue
        if value.name != point.name:
            problems.append(LoadProblem(origin, None, f"the class is named {value.name!r}, the entry point "
                                                      f"{point.name!r}: they must agree"))
            continue
        dist = getattr(point, "dist", None)
        found.append(Found(value, "entry point", getattr(dist, "name", None) or point.value))
    return found, problems


Scanner = Callable[[], tuple[list[Found], list[LoadProblem]]]
