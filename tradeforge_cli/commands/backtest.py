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
from tradeforge_cli.commands.output import emit, fail, format_value, load_settings, pairs, timestamp

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.domain import Timeframe
    from pipeline.settings import Settings


def backtest_bars(
    settings: Settings, data: Path | None, symbol: str | None, timeframe: str | None, start: str | None,
    end: str | None, venue: str | None,
) -> tuple[pd.DataFrame, Timeframe, Any]:
    """The bars to backtest (a file, timeframe guessed from its bar gaps unless given; or the lake), their
    timeframe and instrument (None when unknown)."""
    from pipeline.domain import DataError, Instrument, Timeframe

    if data is not None:
        from pipeline.data.sources.files import read_bar_series

        tf = Timeframe.parse(timeframe) if timeframe else None
        bars, tf = read_bar_series(data, tf, timestamp(start, "--start"), timestamp(end, "--end"))
        instrument = Instrument.of(venue or "file", symbol) if symbol else None
        return bars, tf, instrument
    if not symbol or not timeframe:
        raise DataError("give --data FILE.parquet, or --symbol and --timeframe to read bars from the lake")
    from pipeline.data.catalog import read_bars
    from pipeline.data.lake import Lake

    tf = Timeframe.parse(timeframe)
    bars = read_bars(settings, symbol, tf, timestamp(start, "--start"), timestamp(end, "--end"), venue)
    series = Lake(settings.lake_dir).find(symbol, venue=venue)
    return bars, tf, series[0].instrument if series else None


def engine_config(cash: float, fee_bps: float, slippage_bps: float, fill: str, max_position: float,
                  breaker_cooldown_bars: int | None, no_breakers: bool) -> Any:
    """The engine's configuration from the cost and risk options (a ``DataError`` naming the bad options)."""
    from pydantic import ValidationError

    from pipeline.domain import DataError
    from pipeline.engine import EngineConfig

    try:
        config = EngineConfig(cash=cash, fee_bps=fee_bps, slippage_bps=slippage_bps, fill=fill,
                              max_position=max_position, breaker_cooldown_bars=breaker_cooldown_bars)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise DataError(problems.replace("_", "-")) from exc
    return config.without_breakers() if no_breakers else config


def strategy_frame(settings: Settings, strategy: Any, bars: pd.DataFrame, tf: Timeframe, symbol: str | None,
                   venue: str | None, start: str | None, end: str | None) -> pd.DataFrame:
    """``bars`` plus the other series the strategy reads, from the lake over the same span (the venue of the
    strategy's own bars: ``venue``, or where the lake holds ``symbol``; for a file, ``venue`` or any)."""
    from pipeline.backtest.series import lake_venue, with_lake_series

    own = lake_venue(settings, symbol, venue) if symbol is not None else venue
    return with_lake_series(settings, strategy, bars, tf, own, timestamp(start, "--start"), timestamp(end, "--end"))


def backtest(
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
    data: Annotated[Path | None, typer.Option(help="Backtest a Parquet/CSV file of bars instead of the lake.")] = None,
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
        _backtest_portfolio(settings, portfolio, start, end, venue, save, as_json)
        return
    try:
        if strategy is None:
            raise DataError("give --strategy NAME (or --portfolio FILE)")
        params = parse_params(param or [])
        chosen = REGISTRY.build(strategy, params)
        config = engine_config(cash, fee_bps, slippage_bps, fill, max_position, breaker_cooldown_bars, no_breakers)
        bars, tf, instrument = backtest_bars(settings, data, symbol, timeframe, start, end, venue)
        frame = strategy_frame(settings, chosen, bars, tf, symbol if data is None else None, venue, start, end)
        result = run_backtest(bars, chosen, config, tf, instrument, features=frame, params=params,
                              reference=strategy)
    except DataError as exc:
        raise fail(str(exc)) from exc
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
    from pipeline.backtest.portfolio import load_portfolio, run_portfolio
    from pipeline.backtest.run import save_portfolio
    from pipeline.backtest.series import lake_series_loader
    from pipeline.data.catalog import read_bars
    from pipeline.domain import DataError

    try:
        config = load_portfolio(path)
        lo, hi = timestamp(start, "--start"), timestamp(end, "--end")
        result = run_portfolio(config, lambda symbol, tf: read_bars(settings, symbol, tf, lo, hi, venue),
                               lake_series_loader(settings, venue, lo, hi))
    except DataError as exc:
        raise fail(str(exc)) from exc
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
