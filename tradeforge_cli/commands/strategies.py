"""``tradeforge strategies``: every strategy (shipped, in a ``strategy_paths`` folder, from an installed package)
with where it comes from and its parameters, and the files that could not be loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from tradeforge_cli.commands.backtest import refused
from tradeforge_cli.commands.options import JsonFlag, ParamOption, group
from tradeforge_cli.commands.output import emit, load_settings, out, say


def _parameters_text(parameters: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['name']}={p['default']!r}" for p in parameters) or "none"


def strategies_list(as_json: JsonFlag = False) -> None:
    """Every strategy: its name, where it comes from, its parameters (defaults) and what it does."""
    from pipeline.strategies import REGISTRY

    specs = [spec.describe() for spec in REGISTRY.specs()]
    _, problems = REGISTRY.user()
    document = {"strategies": specs, "problems": [str(problem) for problem in problems]}
    table = Table(title="strategies", box=box.SIMPLE)
    for column in ("name", "source", "parameters", "summary"):
        table.add_column(column)
    for spec in specs:
        table.add_row(escape(spec["name"]), escape(spec["source"]), escape(_parameters_text(spec["parameters"])),
                      escape(spec["summary"]))
    emit(document, as_json, table)
    if not as_json:
        for problem in problems:
            say(f"could not load {problem}")


def strategies_show(
    name: Annotated[str, typer.Argument(help="A strategy name, PATH.py:Class or package.module:Class.")],
    as_json: JsonFlag = False,
) -> None:
    """One strategy: where it comes from and each parameter's type, default, bounds and description."""
    from pipeline.domain import DataError
    from pipeline.strategies import REGISTRY

    try:
        spec = REGISTRY.spec(name)
    except DataError as exc:
        raise refused(exc) from exc
    document = spec.describe()
    table = Table(title=f"{spec.name} ({spec.source}{': ' + spec.origin if spec.origin else ''})", box=box.SIMPLE)
    for column in ("parameter", "type", "default", "bounds", "description"):
        table.add_column(column)
    for parameter in document["parameters"]:
        table.add_row(escape(parameter["name"]), escape(parameter["type"]), escape(repr(parameter["default"])),
                      escape(parameter["bounds"]), escape(parameter["description"]))
    if not as_json and spec.summary:
        out.print(escape(spec.summary), highlight=False)
    emit(document, as_json, table)


def strategies_check(
    name: Annotated[str, typer.Argument(help="A strategy name, PATH.py:Class or package.module:Class.")],
    param: ParamOption = None,
    data: Annotated[Path | None, typer.Option(
        help="Bars to check on (Parquet/CSV); default: 3000 bars of the sample market, BTC/USDT 1h.")] = None,
    history: Annotated[int, typer.Option(
        min=1, help="Bars of history a decision may depend on (a live runtime loads warmup_bars).")] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Check a strategy for look-ahead, warm-up dependence and an inexact stream; exit 1 when it fails."""
    from pipeline.domain import DataError
    from pipeline.strategies import REGISTRY
    from pipeline.strategies.checks import check_strategy, sample_bars
    from runtime.config import parse_params

    try:
        strategy = REGISTRY.build(name, parse_params(param or []))
        bars, tf = (sample_bars(), None) if data is None else _file_bars(data)
        report = check_strategy(strategy, bars, history, None if tf is None else _lake_series(strategy, bars, tf))
    except DataError as exc:
        raise refused(exc) from exc
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        out.print(escape(report.text()), highlight=False)
    if not report.passed:
        raise typer.Exit(1)


def _file_bars(path: Path) -> tuple[Any, Any]:
    """The bars of a ``--data`` file, through the ingest quality gate (as ``backtest --data`` reads them)."""
    from pipeline.backtest.bar_file import read_checked_bars
    from pipeline.clock import SystemClock

    return read_checked_bars(path, None, None, None, None, SystemClock().now(), load_settings().spike_z)


def _lake_series(strategy: Any, bars: Any, tf: Any) -> dict[Any, Any]:
    """The other series ``strategy`` reads, from the lake over the span of ``bars`` (checked on a file)."""
    from pipeline.backtest.series import read_series
    from pipeline.strategies.other_series import series_of

    specs = series_of(strategy)
    if not specs:
        return {}
    settings = load_settings()
    start, end = bars["timestamp"].iloc[0], bars["timestamp"].iloc[-1] + tf.delta
    return {spec: read_series(settings, f"strategy {strategy.name!r}", spec, None, start, end) for spec in specs}


def register(app: typer.Typer) -> None:
    strategies_app = group("Strategies: the shipped ones and your own, with their parameters.")
    strategies_app.command("list")(strategies_list)
    strategies_app.command("show")(strategies_show)
    strategies_app.command("check")(strategies_check)
    app.add_typer(strategies_app, name="strategies")
