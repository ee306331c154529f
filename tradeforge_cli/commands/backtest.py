"""``backtest``: one strategy over a file of bars or the lake, or a portfolio file, through the engine core."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from tradeforge_cli.commands.options import (
    CashOption,
    CooldownOption,
    EndOption,
    FeeOption,
    FillOption,
    JsonFlag,
    MaxPositionOption,
    NoBreakersOption,
    ParamOption,
    SlippageOption,
    StartOption,
    VenueOption,
)
from tradeforge_cli.commands.output import emit, fail, format_value, load_settings, pairs

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.domain import Timeframe
    from pipeline.settings import Settings


ColumnsOption = Annotated[str | None, typer.Option(
    "--columns", help="With --data: the file's columns for canonical names, e.g. timestamp=Date,close=Close "
                      "(default: found by name).")]


def refused(exc: Exception) -> typer.Exit:
    """A refusal on one line of stderr (a message of several lines is joined)."""
    return fail("; ".join(line.strip() for line in str(exc).splitlines() if line.strip()))


def date_range(start: str | None, end: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``--start`` and ``--end`` as UTC times; refused when either is not a date or the end is not after the start."""
    from pipeline.backtest.inputs import date_range as checked

    return checked(start, end)


def backtest_bars(
    settings: Settings, data: Path | None, symbol: str | None, timeframe: str | None, start: str | None,
    end: str | None, venue: str | None, columns: str | None = None,
) -> tuple[pd.DataFrame, Timeframe, Any]:
    """The bars to backtest (a file, through the ingest quality gate, its timeframe guessed from its bar gaps
    unless given; or the lake), their timeframe and instrument (None when unknown)."""
    from pipeline.backtest.inputs import no_bars
    from pipeline.domain import DataError, Instrument

    lo, hi = date_range(start, end)
    tf = _timeframe(timeframe) if timeframe else None
    if data is not None:
        from pipeline.backtest.bar_file import read_checked_bars
        from pipeline.clock import SystemClock
        from pipeline.data.sources.files import parse_column_map

        instrument = Instrument.of(venue or "file", symbol) if symbol else None
        bars, tf = read_checked_bars(data, tf, instrument, lo, hi, SystemClock().now(), settings.spike_z,
                                     parse_column_map(columns))
        return bars, tf, instrument
    if columns:
        raise DataError("--columns maps the columns of a --data file; the lake's bars need none")
    if not symbol or tf is None:
        raise DataError("give --data FILE.parquet, or --symbol and --timeframe to read bars from the lake")
    from pipeline.data.catalog import read_bars
    from pipeline.data.lake import Lake

    bars = read_bars(settings, symbol, tf, lo, hi, venue)
    if bars.empty:
        raise no_bars(settings, symbol, tf, venue, lo, hi)
    series = Lake(settings.lake_dir).find(symbol, venue=venue)
    return bars, tf, series[0].instrument if series else None


def _timeframe(text: str) -> Timeframe:
    from pipeline.domain import DataError, Timeframe

    try:
        return Timeframe.parse(text)
    except DataError as exc:
        raise DataError(f"--timeframe: {exc}") from None


def engine_config(cash: float, fee_bps: float, slippage_bps: float, fill: str, max_position: float,
                  breaker_cooldown_bars: int | None, no_breakers: bool) -> Any:
    """The engine's configuration from the cost and risk options (a ``DataError`` naming each option the engine
    cannot honour, with the range or the values it accepts)."""
    from pipeline.backtest.inputs import engine_config as checked
    from pipeline.domain import DataError

    if no_breakers and breaker_cooldown_bars is not None:
        raise DataError(f"--breaker-cooldown-bars {breaker_cooldown_bars} has no effect with --no-breakers (no breaker "
                        "trips, none releases): drop one of them")
    config = checked({"cash": cash, "fee_bps": fee_bps, "slippage_bps": slippage_bps, "fill": fill,
                      "max_position": max_position, "breaker_cooldown_bars": breaker_cooldown_bars})
    return config.without_breakers() if no_breakers else config


def strategy_frame(settings: Settings, strategy: Any, bars: pd.DataFrame, tf: Timeframe, symbol: str | None,
                   venue: str | None, start: str | None, end: str | None) -> pd.DataFrame:
    """``bars`` plus the other series the strategy reads, from the lake over the same span (the venue of the
    strategy's own bars: ``venue``, or where the lake holds ``symbol``; for a file, ``venue`` or any)."""
    from pipeline.backtest.series import lake_venue, with_lake_series

    own = lake_venue(settings, symbol, venue) if symbol is not None else venue
    lo, hi = date_range(start, end)
    return with_lake_series(settings, strategy, bars, tf, own, lo, hi)


SINGLE_STRATEGY_OPTIONS = ("strategy", "symbol", "timeframe", "data", "columns", "param", "fee_bps", "slippage_bps",
                           "fill", "cash", "max_position", "no_breakers", "breaker_cooldown_bars")
"""Options of a single-strategy backtest; a portfolio file sets these per entry."""


def _portfolio_conflicts(ctx: typer.Context) -> None:
    """Refuse single-strategy options given with ``--portfolio`` (they would be ignored)."""
    from pipeline.domain import DataError

    sources = {name: ctx.get_parameter_source(name) for name in SINGLE_STRATEGY_OPTIONS}
    given = [name for name, source in sources.items() if source is not None and source.name != "DEFAULT"]
    if given:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise DataError(f"--portfolio takes strategies, symbols, timeframes and engine settings from its file, so "
                        f"{options} would be ignored: drop {'it' if len(given) == 1 else 'them'}, or set "
                        f"{'it' if len(given) == 1 else 'them'} in the file's strategy entries")


def backtest(
    ctx: typer.Context,
    strategy: Annotated[
        str | None, typer.Option(help="A strategy name (see `tradeforge strategies list`), PATH.py:Class or "
                                      "package.module:Class.")
    ] = None,
    portfolio: Annotated[
        Path | None, typer.Option(help="Portfolio file (TOML/YAML): several strategies, each with a sub-ledger.")
    ] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol to read from the lake.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Timeframe (resampled from a finer one if needed).")] = None,
    start: StartOption = None,
    end: EndOption = None,
    venue: VenueOption = None,
    data: Annotated[Path | None, typer.Option(
        help="Backtest a Parquet/CSV file of bars instead of the lake (checked as an ingest checks it).")] = None,
    columns: ColumnsOption = None,
    param: ParamOption = None,
    fee_bps: FeeOption = 10.0,
    slippage_bps: SlippageOption = 0.0,
    fill: FillOption = "next_open",
    cash: CashOption = 100_000.0,
    max_position: MaxPositionOption = 0.25,
    no_breakers: NoBreakersOption = False,
    breaker_cooldown_bars: CooldownOption = None,
    save: Annotated[bool, typer.Option(help="Store the run under <data_dir>/backtests/.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Backtest a strategy through the engine core; prints metrics, stores the run."""
    from pipeline.backtest.run import run_backtest, save_backtest
    from pipeline.domain import DataError
    from pipeline.strategies import REGISTRY
    from runtime.config import parse_params

    settings = load_settings()
    if portfolio is not None:
        try:
            _portfolio_conflicts(ctx)
        except DataError as exc:
            raise refused(exc) from exc
        _backtest_portfolio(settings, portfolio, start, end, venue, save, as_json)
        return
    try:
        if strategy is None:
            raise DataError("give --strategy NAME (or --portfolio FILE)")
        params = parse_params(param or [])
        chosen = REGISTRY.build(strategy, params)
        config = engine_config(cash, fee_bps, slippage_bps, fill, max_position, breaker_cooldown_bars, no_breakers)
        bars, tf, instrument = backtest_bars(settings, data, symbol, timeframe, start, end, venue, columns)
        frame = strategy_frame(settings, chosen, bars, tf, symbol if data is None else None, venue, start, end)
        result = run_backtest(bars, chosen, config, tf, instrument, features=frame, params=params,
                              reference=strategy)
    except DataError as exc:
        raise refused(exc) from exc
    folder = save_backtest(result, settings.data_dir / "backtests") if save else None
    document = {**result.summary(), "stored": None if folder is None else str(folder)}
    keys = ("bars", "first", "last", "trades", "final_equity", "total_return", "cagr", "sharpe", "sortino",
            "max_drawdown", "win_rate", "profit_factor", "fees", "buy_and_hold_return", "breaker_events",
            "rejections", "seconds", "stored")
    table = pairs([(key, escape(format_value(document.get(key)))) for key in keys],
                  f"backtest {result.strategy} {result.run_id}")
    emit(document, as_json, table)


def _backtest_portfolio(
    settings: Settings, path: Path, start: str | None, end: str | None, venue: str | None, save: bool, as_json: bool
) -> None:
    from pipeline.backtest.inputs import no_bars
    from pipeline.backtest.portfolio import load_portfolio, run_portfolio
    from pipeline.backtest.run import save_portfolio
    from pipeline.backtest.series import lake_series_loader
    from pipeline.data.catalog import read_bars
    from pipeline.domain import DataError

    try:
        config = load_portfolio(path)
        lo, hi = date_range(start, end)
    except DataError as exc:
        raise refused(exc) from exc

    def load(symbol: str, tf: Timeframe) -> pd.DataFrame:
        bars = read_bars(settings, symbol, tf, lo, hi, venue)
        if bars.empty:
            raise no_bars(settings, symbol, tf, venue, lo, hi)
        return bars

    try:
        result = run_portfolio(config, load, lake_series_loader(settings, venue, lo, hi))
    except DataError as exc:
        raise refused(DataError(f"portfolio file {str(path)!r}, {exc}")) from exc
    summary, folder = save_portfolio(result, settings.data_dir / "backtests", save)
    document = {**summary, "stored": None if folder is None else str(folder)}
    table = Table(title=f"portfolio backtest {summary['run_id']}", box=box.SIMPLE)
    for name in ("sleeve", "trades", "final_equity", "total_return"):
        table.add_column(name)
    for sleeve in summary["sleeves"]:
        table.add_row(escape(sleeve["sleeve"]), str(sleeve["trades"]), format_value(sleeve["final_equity"]),
                      format_value(sleeve["total_return"]))
    table.add_row("[bold]portfolio[/]", str(summary["trades"]), format_value(summary["final_equity"]),
                  format_value(summary["total_return"]))
    emit(document, as_json, table)


def register(app: typer.Typer) -> None:
    app.command()(backtest)
