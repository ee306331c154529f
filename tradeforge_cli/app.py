"""The ``tradeforge`` command: the composition root, the one place that wires every part together.

Reporting commands take ``--json`` and then print exactly one JSON document on stdout; progress and errors go
to stderr. Nothing is hard-wrapped to the terminal width: an error, a path or an id is printed on one line
whatever the width (the terminal folds a long line on screen, a copy keeps it whole), and usage errors are
plain ``Error: ...`` lines. Modules a command needs (MLflow, PyTorch, Prefect, the venue clients, Telegram)
are imported by that command, so every command starts without the others' imports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.clock import SystemClock
from pipeline.domain import DataError, Timeframe, parse_symbol
from pipeline.settings import Settings, load_settings
from pipeline.sources.base import BarSource

# Every Typer below has plain (not rich) help and usage errors (rich_markup_mode=None): rich draws a usage error
# in a box as wide as the terminal and wraps the message inside it, splitting the option values and paths it names.
app = typer.Typer(
    name="tradeforge",
    help="tradeforge: systematic trading of crypto and US stocks.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # a crash report must not print local variables (secrets among them)
)
data_app = typer.Typer(help="Inspect the market-data lake.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
features_app = typer.Typer(help="Build model features from the lake.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(features_app, name="features")
models_app = typer.Typer(help="Registered models: list, promote, roll back.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(models_app, name="models")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
# Options shared by `backtest` and `runtime` (one definition, one help text).
StartOption = Annotated[str | None, typer.Option("--start", help="First bar (UTC).")]
EndOption = Annotated[str | None, typer.Option("--end", help="End of the range, exclusive (UTC).")]
VenueOption = Annotated[str | None, typer.Option("--venue", help="Venue, when several hold the symbol.")]
ParamOption = Annotated[
    list[str] | None, typer.Option("--param", help="Strategy parameter name=value (repeatable).")
]
FeeOption = Annotated[float, typer.Option("--fee-bps", help="Fee in bps of notional.")]
SlippageOption = Annotated[float, typer.Option("--slippage-bps", help="Fixed slippage in bps.")]
FillOption = Annotated[str, typer.Option("--fill", help="next_open or close.")]
CashOption = Annotated[float, typer.Option("--cash", help="Starting cash.")]
MaxPositionOption = Annotated[
    float, typer.Option("--max-position", help="Largest position as a fraction of equity.")
]
NoBreakersOption = Annotated[bool, typer.Option("--no-breakers", help="Switch every circuit breaker off.")]
CooldownOption = Annotated[int | None, typer.Option(
    "--breaker-cooldown-bars", min=1,
    help="Drawdown and loss-streak breakers release by themselves after this many bars, as an operator's reset "
         "would (default: they wait for the operator). Daily breakers release at the next trading day.")]


class SourceName(StrEnum):
    sample = "sample"
    ccxt = "ccxt"
    alpaca = "alpaca"
    files = "files"


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ValueError as exc:
        raise _fail(f"configuration is invalid: {exc}") from exc


def _timestamp(text: str | None, option: str) -> pd.Timestamp | None:
    from pipeline.domain import parse_utc

    return parse_utc(text, option)


def _pairs(rows: Iterable[tuple[str, str]], title: str | None = None, table_box: box.Box | None = box.SIMPLE,
           caption: str | None = None) -> Table:
    """A table of names and values (``rows`` hold rich markup), as wide as its longest value: a value (a path,
    an id, a number) is never cut short nor wrapped inside its cell."""
    rows = list(rows)
    widest = max((Text.from_markup(value).cell_len for _, value in rows), default=0)
    table = Table(title=title, caption=caption, show_header=False, box=table_box)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, min_width=widest)
    for name, value in rows:
        table.add_row(name, value)
    return table


def _emit(document: dict[str, Any] | list[dict[str, Any]], as_json: bool, table: Table) -> None:
    if as_json:
        print(json.dumps(document, default=str))
    else:
        out.print(table)


def _build_source(
    source: SourceName,
    settings: Settings,
    symbol: str,
    exchange: str | None,
    venue: str | None,
    path: Path | None,
    columns: str | None,
) -> BarSource:
    clock = SystemClock()
    if source is SourceName.sample:
        from pipeline.sources.sample import SampleSource

        return SampleSource(clock, settings.sample_seed)
    if source is SourceName.ccxt:
        from pipeline.sources.ccxt_source import CcxtSource

        return CcxtSource(settings, clock, exchange_id=exchange)
    if source is SourceName.alpaca:
        from pipeline.sources.alpaca_source import AlpacaSource

        return AlpacaSource(settings, clock)
    from pipeline.sources.files import FileSource, parse_column_map

    if path is None:
        raise DataError("--source files needs --path FILE_OR_DIR")
    _, asset_class = parse_symbol(symbol)
    default_venue = exchange or (settings.ccxt_exchange if asset_class.value == "crypto" else "us")
    return FileSource(path, clock, venue or default_venue, parse_column_map(columns))


@app.command()
def ingest(
    symbol: Annotated[str, typer.Option(help="BASE/QUOTE for crypto (BTC/USDT) or a US ticker (AAPL).")],
    timeframe: Annotated[str, typer.Option(help="Bar length: 1m, 5m, 15m, 1h, 4h, 1d, ...")],
    source: Annotated[SourceName, typer.Option(help="Where the bars come from.")] = SourceName.sample,
    exchange: Annotated[str | None, typer.Option(help="ccxt exchange id (default: setting ccxt_exchange).")] = None,
    since: Annotated[str | None, typer.Option(help="First bar to fetch (UTC date or timestamp).")] = None,
    path: Annotated[Path | None, typer.Option(help="File or folder to import (--source files).")] = None,
    venue: Annotated[str | None, typer.Option(help="Venue to file imported bars under (--source files).")] = None,
    columns: Annotated[
        str | None, typer.Option(help="Column mapping for CSV/Parquet, e.g. timestamp=Date,close=Close.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fetch bars into the lake, through the quality gate (incremental and idempotent)."""
    from pipeline.ingest import ingest as run_ingest

    settings = _settings()
    try:
        tf = Timeframe.parse(timeframe)
        start = _timestamp(since, "--since")
        bar_source = _build_source(source, settings, symbol, exchange, venue, path, columns)
        with _progress(f"ingest {symbol} {tf} from {source.value}") as advance:
            report = run_ingest(bar_source, symbol, tf, settings, SystemClock(), since=start, progress=advance)
    except DataError as exc:
        raise _fail(str(exc)) from exc
    except RuntimeError as exc:
        raise _fail(str(exc)) from exc
    document = report.to_json()
    table = _pairs([(key, escape(str(value))) for key, value in document.items()],
                   f"ingest {report.venue} {report.symbol} {report.timeframe}", box.HEAVY_HEAD,
                   "SAMPLE DATA (synthetic market, not real prices)" if report.sample else None)
    _emit(document, as_json, table)


class _progress:
    """A rich progress line on stderr counting rows as a source delivers them."""

    def __init__(self, label: str) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._task = self._progress.add_task(label, total=None)

    def __enter__(self) -> Any:
        self._progress.start()
        return lambda rows: self._progress.advance(self._task, rows)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"--param {item!r} is not of the form name=value")
        params[key.strip()] = value.strip()
    return params


def _backtest_bars(
    settings: Settings, data: Path | None, symbol: str | None, timeframe: str | None, start: str | None,
    end: str | None, venue: str | None,
) -> tuple[pd.DataFrame, Timeframe, Any]:
    from pipeline.domain import Instrument, canonical_bars

    if data is not None:
        from pipeline.sources.files import read_bar_file_any

        if not data.exists():
            raise DataError(f"--data {str(data)!r} does not exist")
        bars = canonical_bars(read_bar_file_any(data))
        if not bars["timestamp"].is_monotonic_increasing or not bars["timestamp"].is_unique:
            raise DataError(f"--data {str(data)!r}: timestamps must be sorted and unique (ingest it to clean it)")
        if timeframe:
            tf = Timeframe.parse(timeframe)
        else:
            if len(bars) < 2:
                raise DataError(f"--data {str(data)!r} holds fewer than 2 bars")
            step = bars["timestamp"].diff().median()
            tf = Timeframe.parse(f"{int(pd.Timedelta(step).total_seconds() // 60)}m")
        lo, hi = _timestamp(start, "--start"), _timestamp(end, "--end")
        if lo is not None:
            bars = bars.loc[bars["timestamp"] >= lo]
        if hi is not None:
            bars = bars.loc[bars["timestamp"] < hi]
        instrument = Instrument.of(venue or "file", symbol) if symbol else None
        return bars.reset_index(drop=True), tf, instrument
    if not symbol or not timeframe:
        raise DataError("give --data FILE.parquet, or --symbol and --timeframe to read bars from the lake")
    from pipeline.catalog import read_bars
    from pipeline.lake import Lake

    tf = Timeframe.parse(timeframe)
    bars = read_bars(settings, symbol, tf, _timestamp(start, "--start"), _timestamp(end, "--end"), venue)
    series = Lake(settings.lake_dir).find(symbol, venue=venue)
    return bars, tf, series[0].instrument if series else None


@app.command()
def backtest(
    strategy: Annotated[
        str | None, typer.Option(help="Registered strategy name (sma_cross, golden_cross, ...).")
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
    from pydantic import ValidationError

    from pipeline.backtest import run_backtest, save_backtest
    from pipeline.engine import EngineConfig
    from pipeline.strategies import REGISTRY

    settings = _settings()
    if portfolio is not None:
        _backtest_portfolio(settings, portfolio, start, end, venue, save, as_json)
        return
    try:
        if strategy is None:
            raise DataError("give --strategy NAME (or --portfolio FILE)")
        params = _parse_params(param or [])
        chosen = REGISTRY.build(strategy, params)
        try:
            config = EngineConfig(
                cash=cash, fee_bps=fee_bps, slippage_bps=slippage_bps, fill=fill,
                max_position=max_position, breaker_cooldown_bars=breaker_cooldown_bars,
            )
        except ValidationError as exc:
            problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise DataError(problems.replace("_", "-")) from exc
        if no_breakers:
            config = config.without_breakers()
        bars, tf, instrument = _backtest_bars(settings, data, symbol, timeframe, start, end, venue)
        result = run_backtest(bars, chosen, config, tf, instrument, params=params)
    except DataError as exc:
        raise _fail(str(exc)) from exc
    folder = save_backtest(result, settings.data_dir / "backtests") if save else None
    document = {**result.summary(), "stored": None if folder is None else str(folder)}
    keys = ("bars", "first", "last", "trades", "final_equity", "total_return", "cagr", "sharpe", "sortino",
            "max_drawdown", "win_rate", "profit_factor", "fees", "buy_and_hold_return", "breaker_events",
            "rejections", "seconds", "stored")
    table = _pairs([(key, escape(_format(document.get(key)))) for key in keys],
                   f"backtest {result.strategy} {result.run_id}")
    _emit(document, as_json, table)


def _backtest_portfolio(
    settings: Settings, path: Path, start: str | None, end: str | None, venue: str | None, save: bool, as_json: bool
) -> None:
    from pipeline.backtest import save_portfolio
    from pipeline.catalog import read_bars
    from pipeline.portfolio import load_portfolio, run_portfolio

    try:
        config = load_portfolio(path)
        lo, hi = _timestamp(start, "--start"), _timestamp(end, "--end")
        result = run_portfolio(config, lambda symbol, tf: read_bars(settings, symbol, tf, lo, hi, venue))
    except DataError as exc:
        raise _fail(str(exc)) from exc
    summary, folder = save_portfolio(result, settings.data_dir / "backtests", save)
    document = {**summary, "stored": None if folder is None else str(folder)}
    table = Table(title=f"portfolio backtest {summary['run_id']}", box=box.SIMPLE)
    for name in ("sleeve", "trades", "final_equity", "total_return"):
        table.add_column(name)
    for sleeve in summary["sleeves"]:
        table.add_row(escape(sleeve["sleeve"]), str(sleeve["trades"]), _format(sleeve["final_equity"]),
                      _format(sleeve["total_return"]))
    table.add_row("[bold]portfolio[/]", str(summary["trades"]), _format(summary["final_equity"]),
                  _format(summary["total_return"]))
    _emit(document, as_json, table)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}"
    return "-" if value is None else str(value)


class ModelKind(StrEnum):
    lstm = "lstm"
    lstm_attention = "lstm_attention"
    gru = "gru"


class PromoteChoice(StrEnum):
    auto = "auto"
    never = "never"
    force = "force"


def _lake_series(settings: Settings, symbol: str, timeframe: str, start: str | None, end: str | None,
                 venue: str | None) -> tuple[pd.DataFrame, Timeframe, Any]:
    from pipeline.catalog import read_bars
    from pipeline.lake import Lake

    tf = Timeframe.parse(timeframe)
    bars = read_bars(settings, symbol, tf, _timestamp(start, "--start"), _timestamp(end, "--end"), venue)
    if bars.empty:
        raise DataError(f"no {symbol} {tf} bars in the selected range")
    instrument = Lake(settings.lake_dir).find(symbol, venue=venue)[0].instrument
    return bars, tf, instrument


@features_app.command("build")
def features_build(
    symbol: Annotated[str, typer.Option(help="Symbol in the lake.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe (resampled from a finer one if needed).")],
    venue: VenueOption = None,
    start: StartOption = None,
    end: EndOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Build the default feature set for a series and store it under <data_dir>/features/<spec hash>/."""
    from pipeline.features import FeatureSpec, build_features, store_features

    settings = _settings()
    try:
        bars, tf, instrument = _lake_series(settings, symbol, timeframe, start, end, venue)
        spec = FeatureSpec()
        frame = build_features(bars, spec, instrument.asset_class)
        path = store_features(frame, spec, settings.data_dir, instrument.venue, instrument.key, str(tf))
    except DataError as exc:
        raise _fail(str(exc)) from exc
    document = {
        "symbol": instrument.symbol, "venue": instrument.venue, "timeframe": str(tf), "spec_hash": spec.hash(),
        "rows": len(frame), "warmup_rows_dropped": min(spec.warmup, len(bars)),
        "columns": [c for c in frame.columns if c != "timestamp"], "path": str(path),
        "first": frame["timestamp"].iloc[0].isoformat() if len(frame) else None,
        "last": frame["timestamp"].iloc[-1].isoformat() if len(frame) else None,
    }
    rows = [(key, escape(str(document[key]))) for key in ("spec_hash", "rows", "warmup_rows_dropped", "first",
                                                          "last", "path")]
    table = _pairs([*rows, ("columns", escape(", ".join(document["columns"])))], f"features {instrument.symbol} {tf}")
    _emit(document, as_json, table)


@app.command()
def train(
    model: Annotated[ModelKind, typer.Option(help="Network: lstm, lstm_attention or gru.")],
    symbol: Annotated[str, typer.Option(help="Symbol in the lake.")],
    timeframe: Annotated[str, typer.Option(help="Timeframe.")],
    epochs: Annotated[int, typer.Option(min=1, help="Most epochs per fold (early stopping may stop sooner).")] = 20,
    promote: Annotated[PromoteChoice, typer.Option(help="auto: apply the gate; never; force.")] = PromoteChoice.auto,
    hidden: Annotated[int, typer.Option(min=1, help="Hidden size.")] = 32,
    seq_len: Annotated[int, typer.Option(min=2, help="Sequence length in bars.")] = 32,
    folds: Annotated[int, typer.Option(min=1, help="Walk-forward folds.")] = 3,
    threshold: Annotated[float, typer.Option(help="Probability needed to confirm an entry.")] = 0.55,
    base: Annotated[str, typer.Option(help="Rule strategy the model confirms.")] = "golden_cross",
    venue: VenueOption = None,
    start: StartOption = None,
    end: EndOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Train, evaluate walk-forward, register in MLflow, and promote if the gate passes."""
    from pydantic import ValidationError

    from pipeline.models import ModelConfig
    from pipeline.registry import ModelRegistry
    from pipeline.training import TrainRequest, train_and_register

    settings = _settings()
    try:
        bars, tf, instrument = _lake_series(settings, symbol, timeframe, start, end, venue)
        try:
            config = ModelConfig(kind=model.value, epochs=epochs, hidden=hidden, seq_len=seq_len)
        except ValidationError as exc:
            raise DataError(str(exc)) from exc
        request = TrainRequest(model=config, base_strategy=base, threshold=threshold, folds=folds,
                               promote=promote.value)
        registry = ModelRegistry(settings.mlflow_tracking_uri)
        with _progress(f"train {model.value} on {instrument.symbol} {tf}") as _:
            outcome = train_and_register(bars, instrument, tf, request, registry,
                                         progress=lambda text: err.print(escape(text), highlight=False))
    except DataError as exc:
        raise _fail(str(exc)) from exc
    document = outcome.to_json()
    rows = [(key, escape(str(document[key]))) for key in ("run_id", "model_name", "version", "promoted", "reason")]
    rows += [(key, escape(_format(value))) for key, value in outcome.metrics.items()]
    _emit(document, as_json, _pairs(rows, f"train {outcome.model_name} v{outcome.version}"))


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Registered models and versions; which one carries the production alias."""
    from pipeline.registry import ModelRegistry

    rows = ModelRegistry(_settings().mlflow_tracking_uri).list_models()
    table = Table(title="models", box=box.SIMPLE)
    for name in ("name", "version", "production", "oos_sharpe", "oos_max_drawdown", "oos_auc", "promotion"):
        table.add_column(name)
    for row in rows:
        table.add_row(escape(row["name"]), row["version"], "yes" if row["production"] else "",
                      _format(row["oos_sharpe"]), _format(row["oos_max_drawdown"]), _format(row["oos_auc"]),
                      escape(row["promotion"]))
    _emit(rows, as_json, table)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to give the production alias.")],
    as_json: JsonFlag = False,
) -> None:
    """Give VERSION of NAME the production alias (a manual decision, recorded as such)."""
    from pipeline.registry import ModelRegistry

    registry = ModelRegistry(_settings().mlflow_tracking_uri)
    try:
        registry.promote(name, version, "promoted by hand (tradeforge models promote)")
    except DataError as exc:
        raise _fail(str(exc)) from exc
    document = {"name": name, "production": version}
    _emit(document, as_json, _pairs([(escape(name), f"production → v{escape(version)}")]))


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: JsonFlag = False,
) -> None:
    """Give the production alias back to the previously promoted version."""
    from pipeline.registry import ModelRegistry

    registry = ModelRegistry(_settings().mlflow_tracking_uri)
    try:
        version = registry.rollback(name)
    except DataError as exc:
        raise _fail(str(exc)) from exc
    document = {"name": name, "production": version}
    _emit(document, as_json, _pairs([(escape(name), f"production → v{escape(version)} (rolled back)")]))


runtime_app = typer.Typer(help="The trading runtime (paper or live).", invoke_without_command=True,
                          rich_markup_mode=None)
app.add_typer(runtime_app, name="runtime")


class Mode(StrEnum):
    paper = "paper"
    live = "live"


class Command(StrEnum):
    pause = "pause"
    resume = "resume"
    flatten = "flatten"
    reset_breaker = "reset-breaker"
    stop = "stop"


@runtime_app.callback()
def runtime(
    context: typer.Context,
    mode: Annotated[Mode, typer.Option(help="paper (the engine's fill model) or live (real money).")] = Mode.paper,
    portfolio: Annotated[Path | None, typer.Option(help="Portfolio file (TOML/YAML).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Single-strategy run: the strategy name.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Single-strategy run: the symbol.")] = None,
    timeframe: Annotated[str, typer.Option(help="Bar timeframe.")] = "1m",
    venue: VenueOption = None,
    feed: Annotated[str, typer.Option(
        help="Bar feed: replay (lake or --data), ccxt or alpaca (live bars; default in live mode by symbol).")
    ] = "",
    broker: Annotated[str, typer.Option(
        help="Where orders go: paper (the engine's fill model), ccxt or alpaca (default: paper in paper mode; "
             "in live mode ccxt for crypto symbols, alpaca for stocks).")
    ] = "",
    data: Annotated[Path | None, typer.Option(help="Replay a Parquet/CSV file of bars instead of the lake.")] = None,
    speed: Annotated[str, typer.Option(help="Replay pace: max, or a multiple of real time (e.g. 60).")] = "max",
    batch: Annotated[
        int, typer.Option(min=1, help="Bars per transaction when replaying at max speed (paced replays: 1).")
    ] = 8192,
    start: StartOption = None,
    end: EndOption = None,
    param: ParamOption = None,
    fee_bps: FeeOption = 10.0,
    slippage_bps: SlippageOption = 0.0,
    fill: FillOption = "next_open",
    cash: CashOption = 100_000.0,
    max_position: MaxPositionOption = 0.25,
    no_breakers: NoBreakersOption = False,
    breaker_cooldown_bars: CooldownOption = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start a new runtime (refused if state exists).")] = False,
    restore: Annotated[bool, typer.Option("--restore", help="Restore the saved state (the default).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print every fill, breaker and command.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the trading runtime. Startup is recovery: restore, reconcile, catch up, then trade."""
    if context.invoked_subcommand is not None:
        return
    import signal

    from pipeline.state import StateStore
    from runtime.feeds import ReplayFeed
    from runtime.node import Node, StartupError

    settings = _settings()
    try:
        if fresh and restore:
            raise DataError("--fresh and --restore exclude each other")
        pace = None if speed == "max" else _positive_float(speed, "--speed")
        config = _runtime_portfolio(portfolio, strategy, symbol, timeframe, param or [], fee_bps, slippage_bps,
                                    fill, cash, max_position, no_breakers, breaker_cooldown_bars)
        feed_name, broker_name = _runtime_route(settings, mode, config, feed, broker)
        order_router = _runtime_broker(settings, mode, broker_name, venue)
        if feed_name == "replay":
            frames, feed_of, tf = _runtime_bars(settings, config, data, venue, start, end)
            bar_feed: Any = ReplayFeed(frames, tf, speed=pace, batch_size=batch)
        else:
            bar_feed, feed_of, tf = _live_feed(settings, feed_name, config, venue)
        store = StateStore(settings.state_url)
        telegram = _telegram(settings, store)

        def on_event(kind: str, text: str) -> None:
            if verbose:
                err.print(escape(text), highlight=False)
            if telegram is not None:
                telegram.notifier.send(text)  # start, stop, fills, breakers and commands all go to Telegram

        node = Node(store, config, bar_feed, feed_of, order_router,
                    mode=mode.value, on_event=on_event, scorers=_scorers(settings, config, tf),
                    stale_after_bars=settings.stale_after_bars, heartbeat_s=settings.heartbeat_seconds)
        if telegram is not None:
            telegram.start()
        node.start(fresh=fresh)
    except (DataError, StartupError) as exc:
        raise _fail(str(exc)) from exc
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, _frame: node.request_stop(f"signal {signal.Signals(signum).name}"))
    try:
        summary = node.run()
    finally:
        if telegram is not None:
            telegram.stop()
        store.close()
    document = summary.to_json()
    rows = [(key, escape(_format(value) if not isinstance(value, list) else "; ".join(map(str, value))))
            for key, value in document.items()]
    _emit(document, as_json, _pairs(rows, f"runtime ({mode.value})"))


class _Telegram:
    """The runtime's Telegram edge: notifications out, operator commands in (through the state store)."""

    def __init__(self, settings: Settings, store: Any) -> None:
        from pipeline.state import StateStore
        from runtime.control import StoreControl
        from runtime.notify import CommandBot, Notifier

        self.notifier = Notifier(settings.telegram_token, settings.telegram_chat_ids, settings.telegram_api_url,
                                 settings.telegram_rate_per_minute, timeout_s=settings.http_timeout_s,
                                 max_retries=settings.max_retries, backoff_s=settings.retry_backoff_s)
        self.bot = CommandBot(self.notifier, StoreControl(StateStore(settings.state_url)), StoreControl(store))

    def start(self) -> None:
        self.notifier.start()
        self.bot.start()

    def stop(self) -> None:
        self.bot.stop()
        self.notifier.stop(timeout=10)


def _telegram(settings: Settings, store: Any) -> _Telegram | None:
    """Telegram when a bot token is configured (its client library is loaded only then), else None."""
    token = settings.telegram_token
    if token is None or not token.get_secret_value().strip():
        return None
    return _Telegram(settings, store)


def _scorers(settings: Settings, config: Any, tf: Timeframe) -> dict[str, Any]:
    """A production-model scorer for every sleeve whose strategy reads ``model_score``."""
    from pipeline.clock import SystemClock
    from pipeline.domain import parse_symbol, symbol_key
    from pipeline.portfolio import sleeves_of

    sleeves = [s for s in sleeves_of(config) if "model_score" in s.strategy.requires]
    if not sleeves:
        return {}
    from pipeline.registry import ModelRegistry, model_name
    from runtime.models import ModelScorer

    registry = ModelRegistry(settings.mlflow_tracking_uri)
    return {
        s.key: ModelScorer(registry, model_name("hybrid", symbol_key(s.symbol), str(tf)), parse_symbol(s.symbol)[1],
                           SystemClock(), settings.model_poll_seconds)
        for s in sleeves
    }


def _runtime_route(settings: Settings, mode: Mode, config: Any, feed: str, broker: str) -> tuple[str, str]:
    """The feed and broker of a runtime, and the rules that keep real money safe:

    * live mode needs ``TRADEFORGE_LIVE_CONFIRM=yes`` and the venue's keys;
    * the ccxt broker trades real money, so it needs live mode; Alpaca in paper mode uses Alpaca's paper
      account (its paper endpoint), in live mode its live endpoint;
    * a replayed (historical) feed may drive a venue broker only when the venue URL points somewhere other than
      the real venue (a local test venue): old prices must never reach a real order book.
    """
    from pipeline.domain import parse_symbol
    from pipeline.portfolio import sleeves_of

    kinds = {parse_symbol(s.symbol)[1] for s in sleeves_of(config)}
    venue_default = "ccxt" if kinds == {"crypto"} else "alpaca" if kinds == {"stock"} else ""
    feed = feed or ("replay" if mode is Mode.paper else venue_default)
    broker = broker or ("paper" if mode is Mode.paper else venue_default)
    if feed not in ("replay", "sample", "ccxt", "alpaca"):
        raise DataError(f"--feed {feed!r} is not known: use replay, sample, ccxt or alpaca")
    if broker not in ("paper", "ccxt", "alpaca"):
        raise DataError(f"--broker {broker!r} is not known: use paper, ccxt or alpaca")
    if not feed or not broker:
        raise DataError("this portfolio mixes crypto and stocks: give --feed and --broker explicitly")
    if mode is Mode.live:
        if settings.live_confirm != "yes":
            raise DataError("live trading needs TRADEFORGE_LIVE_CONFIRM=yes (and the venue's keys)")
        if broker == "paper":
            raise DataError("--mode live sends orders to a venue: use --broker ccxt or alpaca (or --mode paper)")
    elif broker == "ccxt":
        raise DataError("the ccxt broker sends real orders: it needs --mode live and TRADEFORGE_LIVE_CONFIRM=yes")
    if broker == "ccxt" and (settings.ccxt_api_key is None or settings.ccxt_api_secret is None):
        raise DataError("the ccxt broker needs TRADEFORGE_CCXT_API_KEY and TRADEFORGE_CCXT_API_SECRET")
    if broker == "alpaca" and (settings.alpaca_api_key is None or settings.alpaca_api_secret is None):
        raise DataError("the alpaca broker needs TRADEFORGE_ALPACA_API_KEY and TRADEFORGE_ALPACA_API_SECRET")
    if feed in ("replay", "sample") and broker != "paper":
        overridden = settings.ccxt_rest_url if broker == "ccxt" else settings.alpaca_trading_url
        if not overridden:
            raise DataError(f"a {feed} feed cannot drive the real {broker} venue (its prices must never reach a "
                            "real order book); use a live feed, or point the venue URL at a test venue")
    return feed, broker


def _live_feed(settings: Settings, name: str, config: Any, venue: str | None) -> tuple[Any, dict[str, str], Timeframe]:
    """A live feed (sample, ccxt or alpaca) for every sleeve's symbol, and the feed key of each sleeve."""
    from pipeline.clock import SystemClock
    from pipeline.portfolio import sleeves_of

    sleeves = sleeves_of(config)
    timeframes = {s.spec.timeframe for s in sleeves}
    if len(timeframes) != 1:
        raise DataError("a runtime portfolio must use one timeframe for every strategy")
    tf = Timeframe.parse(timeframes.pop())
    prefix = {"sample": "sample", "ccxt": venue or settings.ccxt_exchange, "alpaca": "us"}[name]
    feed_of = {s.key: f"{prefix}:{s.symbol}:{tf}" for s in sleeves}
    symbols = {f"{prefix}:{s.symbol}:{tf}": s.symbol for s in sleeves}
    clock = SystemClock()
    common: dict[str, Any] = {"poll_s": settings.feed_poll_seconds, "warmup": settings.warmup_bars}
    if name == "sample":
        from runtime.feeds.sample_feed import SampleFeed

        return SampleFeed(symbols, tf, clock, settings.sample_seed, **common), feed_of, tf
    if name == "ccxt":
        from pipeline.sources.ccxt_source import build_exchange
        from runtime.feeds.ccxt_feed import CcxtFeed

        return (CcxtFeed(build_exchange(settings, prefix), symbols, tf, clock, backoff_base_s=max(
            settings.retry_backoff_s, 0.1), **common), feed_of, tf)
    from pipeline.sources.alpaca_source import make_client
    from runtime.feeds.alpaca_feed import AlpacaFeed, alpaca_stream

    stream = alpaca_stream(settings, settings.alpaca_stream_url) if str(tf) == "1m" else None
    return (AlpacaFeed(make_client(settings), stream, symbols, tf, clock, feed=settings.alpaca_feed,
                       backoff_base_s=max(settings.retry_backoff_s, 0.1), **common), feed_of, tf)


def _runtime_broker(settings: Settings, mode: Mode, name: str, venue: str | None) -> Any:
    """The broker object (imports of venue clients only when they are used)."""
    if name == "paper":
        from runtime.brokers import PaperBroker

        return PaperBroker()
    if name == "ccxt":
        from pipeline.sources.ccxt_source import build_exchange
        from runtime.brokers.ccxt import CcxtBroker

        return CcxtBroker(build_exchange(settings, venue or settings.ccxt_exchange), max_retries=settings.max_retries,
                          backoff_s=settings.retry_backoff_s)
    from runtime.brokers.alpaca import AlpacaBroker, make_trading_client

    return AlpacaBroker(make_trading_client(settings, paper=mode is not Mode.live), max_retries=settings.max_retries,
                        backoff_s=settings.retry_backoff_s)


def _positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise DataError(f"{option} {text!r} is not a number (or 'max')") from exc
    if value <= 0:
        raise DataError(f"{option} must be positive")
    return value


def _runtime_portfolio(
    portfolio: Path | None, strategy: str | None, symbol: str | None, timeframe: str, params: list[str],
    fee_bps: float, slippage_bps: float, fill: str, cash: float, max_position: float, no_breakers: bool,
    breaker_cooldown_bars: int | None = None,
) -> Any:
    from pipeline.portfolio import PortfolioConfig, load_portfolio

    if portfolio is not None:
        return load_portfolio(portfolio)
    if strategy is None or symbol is None:
        raise DataError("give --portfolio FILE, or --strategy NAME and --symbol SYMBOL")
    engine: dict[str, Any] = {"fee_bps": fee_bps, "slippage_bps": slippage_bps, "fill": fill,
                              "max_position": max_position, "breaker_cooldown_bars": breaker_cooldown_bars}
    if no_breakers:
        engine.update(max_drawdown=None, daily_loss=None, max_consecutive_losses=None, max_trades_per_day=None)
    Timeframe.parse(timeframe)
    return PortfolioConfig.model_validate(
        {"cash": cash, "strategies": [{"id": "main", "strategy": strategy, "symbols": [symbol],
                                       "timeframe": timeframe, "allocation": 1.0,
                                       "params": _parse_params(params), "engine": engine}]}
    )


def _runtime_bars(
    settings: Settings, config: Any, data: Path | None, venue: str | None, start: str | None, end: str | None
) -> tuple[dict[str, pd.DataFrame], dict[str, str], Timeframe]:
    from pipeline.portfolio import sleeves_of

    sleeves = sleeves_of(config)
    timeframes = {s.spec.timeframe for s in sleeves}
    if len(timeframes) != 1:
        raise DataError("a runtime portfolio must use one timeframe for every strategy")
    tf = Timeframe.parse(timeframes.pop())
    lo, hi = _timestamp(start, "--start"), _timestamp(end, "--end")
    frames: dict[str, pd.DataFrame] = {}
    feed_of: dict[str, str] = {}
    symbols = sorted({s.symbol for s in sleeves})
    if data is not None and len(symbols) != 1:
        raise DataError("--data replays one symbol; this portfolio trades " + ", ".join(symbols))
    for sleeve in sleeves:
        key = f"{venue or ('file' if data else 'lake')}:{sleeve.symbol}:{tf}"
        feed_of[sleeve.key] = key
        if key in frames:
            continue
        if data is not None:
            bars, _, _ = _backtest_bars(settings, data, None, str(tf), start, end, None)
        else:
            from pipeline.catalog import read_bars

            bars = read_bars(settings, sleeve.symbol, tf, lo, hi, venue)
        if bars.empty:
            raise DataError(f"no {sleeve.symbol} {tf} bars to replay in the selected range")
        frames[key] = bars
    return frames, feed_of, tf


@runtime_app.command("ctl")
def runtime_ctl(
    command: Annotated[Command, typer.Argument(help="pause, resume, flatten, reset-breaker or stop.")],
    sleeve: Annotated[str | None, typer.Option(help="Only this sleeve (default: all).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send a control command to the running runtime (through the state store)."""
    from pipeline.state import StateStore

    settings = _settings()
    store = StateStore(settings.state_url)
    if store.bot_state() is None:
        raise _fail(f"no runtime state in {settings.state_url}: is the runtime started?")
    name = command.value.replace("-", "_")
    number = store.add_command(name, "cli", sleeve=sleeve)
    store.close()
    document = {"id": number, "command": name, "sleeve": sleeve}
    table = _pairs([("queued", f"{escape(name)} (#{number}); applied within one loop of the runtime")])
    _emit(document, as_json, table)


@data_app.command("health")
def data_health(
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Only this timeframe.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Per series: rows, first, last, gaps, duplicates, quarantined, stale."""
    from pipeline.catalog import HealthStore
    from pipeline.lake import Lake

    settings = _settings()
    try:
        canonical = parse_symbol(symbol)[0] if symbol else None
        tf = str(Timeframe.parse(timeframe)) if timeframe else None
    except DataError as exc:
        raise _fail(str(exc)) from exc
    table_frame = HealthStore(settings).refresh_all(Lake(settings.lake_dir), SystemClock().now())
    if canonical:
        table_frame = table_frame.loc[table_frame["symbol"] == canonical]
    if tf:
        table_frame = table_frame.loc[table_frame["timeframe"] == tf]
    if (symbol or timeframe) and table_frame.empty:
        raise _fail(f"no series in the lake matches symbol={symbol!r} timeframe={timeframe!r}")
    records = [_jsonable(r) for r in table_frame.to_dict(orient="records")]
    table = Table(
        title="data health", caption="* sample: synthetic market data, not real prices", box=box.SIMPLE, pad_edge=False
    )
    for name in ("series", "rows", "first", "last", "gaps(bars)", "dup", "quar", "stale"):
        table.add_column(name, justify="right" if name in ("rows", "dup", "quar") else "left", no_wrap=True)
    for record in records:
        series = f"{record['venue']} {record['symbol']} {record['timeframe']}"
        table.add_row(
            f"[yellow]{escape(series)}*[/]" if record["sample"] else escape(series),
            f"{record['rows']:,}",
            _short_time(record["first"]),
            _short_time(record["last"]),
            f"{record['gaps']} ({record['missing_bars']:,})",
            str(record["duplicates"]),
            str(record["quarantined"]),
            "[red]yes[/]" if record["stale"] else "no",
        )
    _emit(records, as_json, table)


def _short_time(value: object) -> str:
    return "-" if value is None else pd.Timestamp(str(value)).strftime("%Y-%m-%d %H:%M")


@data_app.command("sql")
def data_sql(
    query: Annotated[str, typer.Argument(help="SQL over the views bars, health and quarantine.")],
    as_json: JsonFlag = False,
) -> None:
    """Run a DuckDB query over the lake (views: bars, health, quarantine)."""
    import duckdb

    from pipeline.catalog import open_duckdb

    settings = _settings()
    con = open_duckdb(settings)
    try:
        frame = con.execute(query).df()
    except duckdb.Error as exc:
        raise _fail(f"query failed: {exc}") from exc
    records = [_jsonable(r) for r in frame.to_dict(orient="records")]
    table = Table()
    for name in frame.columns:
        table.add_column(str(name))
    for record in records[:200]:
        table.add_row(*(escape(str(v)) for v in record.values()))
    _emit(records, as_json, table)


@app.command()
def up(
    bootstrap: Annotated[bool, typer.Option(help="On an empty lake, bootstrap the demo content first.")] = True,
    with_runtime: Annotated[bool, typer.Option("--runtime/--no-runtime", help="Start the paper runtime.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds each service may take to answer.")] = 180.0,
) -> None:
    """Bring the platform up on 127.0.0.1: Prefect (server + deployments), MLflow UI, dashboard, paper runtime.

    Ctrl-C stops everything cleanly. A second start reuses the lake, the registry and the runtime's state. Nothing
    started here outlives this process, however it ends; a start first ends what a killed ``up`` left running.
    """
    import os
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tradeforge_cli import up as platform
    from tradeforge_cli import up_guard

    settings = _settings()
    home = Path(__file__).resolve().parent.parent
    logs = settings.data_dir / "logs"

    def say(text: str) -> None:
        err.print(escape(text), highlight=False)

    instance = up_guard.new_instance()
    env = platform.base_env(settings, home, instance)
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "DO_NOT_TRACK",
                                           "MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED")})
    try:
        platform.clear_previous(settings, platform.GRACE_S, say)
        by_name = {s.name: s for s in platform.services(settings, home, platform.demo_runtime_args(settings))}
        taken = platform.taken_addresses(settings)
    except platform.UpError as exc:
        raise _fail(str(exc)) from exc
    if taken:
        raise _fail(f"{', '.join(taken)} already in use: is tradeforge already up? Stop it, or set "
                    "TRADEFORGE_PREFECT_API_URL / TRADEFORGE_MLFLOW_UI_URL / TRADEFORGE_DASHBOARD_URL to other ports")
    record = up_guard.UpRecord.new(platform.pid_file(settings), instance)
    guard = up_guard.start_guard(instance, record.path, platform.GRACE_S, logs / "guard.log")
    record.save()
    supervisor = platform.Supervisor(env, logs, say, on_spawn=record.add)
    code = 0
    with platform.stop_signals() as received:
        try:
            for name in ("prefect", "mlflow", "dashboard"):
                err.print(f"starting {name} …")
                supervisor.start(by_name[name], timeout)
                if received:
                    raise platform.UpError(f"stopped by {received[0]}")
            if bootstrap and platform.needs_bootstrap(settings):
                steps = platform.bootstrap_steps(settings)
                columns = (TextColumn("bootstrap"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                           TextColumn("{task.description}"), TimeElapsedColumn())
                with Progress(*columns, console=err) as progress:
                    task = progress.add_task("", total=len(steps))
                    for description, step in steps:
                        progress.update(task, description=description)
                        step()
                        progress.advance(task)
                        if received:
                            raise platform.UpError(f"stopped by {received[0]}")
            names = ["deployments", *(["runtime"] if with_runtime else [])]
            for name in names:
                err.print(f"starting {name} …")
                supervisor.start(by_name[name], timeout)
            rows = [(service.name, escape(service.url)) for service in supervisor.started]
            rows.append(("logs", escape(str(logs))))
            out.print(_pairs(rows, "tradeforge is up (Ctrl-C stops everything)"))
            while not received:
                dead = supervisor.dead()
                if dead:
                    raise platform.UpError(
                        ", ".join(f"{s.name} exited ({s.process.returncode if s.process else '?'})" for s in dead)
                        + f"; see {logs}")
                time.sleep(0.5)
            err.print(f"{received[0]}: stopping …")
        except platform.UpError as exc:
            err.print(f"[red]{escape(str(exc))}[/]")
            code = 1
        finally:
            supervisor.stop()
            record.remove()
            if guard.stdin is not None:
                guard.stdin.close()  # the guard ends at once whatever the services left running
    err.print("stopped")
    raise typer.Exit(code)


config_app = typer.Typer(help="Settings: current values and their documentation.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(as_json: JsonFlag = False) -> None:
    """The settings in effect (environment, .env, defaults); secrets are shown as set or not, never their value."""
    from pydantic import SecretStr

    settings = _settings()
    document: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            document[name] = "(set)" if value.get_secret_value() else None
        else:
            document[name] = value if isinstance(value, int | float | bool | list) or value is None else str(value)
    table = _pairs([(key, escape("" if value is None else str(value))) for key, value in document.items()])
    _emit(document, as_json, table)


@config_app.command("env-example")
def config_env_example() -> None:
    """Print the .env template (every setting, its meaning and default)."""
    from tradeforge_cli.config_doc import env_example

    typer.echo(env_example(), nl=False)


@config_app.command("table")
def config_table() -> None:
    """Print the README's settings table (Markdown)."""
    from tradeforge_cli.config_doc import markdown_table

    typer.echo(markdown_table(), nl=False)


@app.command()
def doctor(as_json: JsonFlag = False) -> None:
    """Check the install and the configuration; non-zero exit when something is broken."""
    from pipeline.doctor import Status, run_checks

    checks = run_checks(_settings())
    table = Table(title="tradeforge doctor")
    for name in ("check", "status", "detail", "what to do"):
        table.add_column(name)
    colours = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    for check in checks:
        table.add_row(
            check.name, f"[{colours[check.status]}]{check.status.value}[/]", escape(check.detail), escape(check.fix)
        )
    document = [{"check": c.name, "status": c.status.value, "detail": c.detail, "fix": c.fix} for c in checks]
    _emit(document, as_json, table)
    if any(c.status is Status.FAIL for c in checks):
        raise typer.Exit(1)


def _jsonable(record: dict[Any, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, pd.Timestamp):
            converted[str(key)] = value.isoformat()
        elif value is None or (isinstance(value, float) and value != value):
            converted[str(key)] = None
        elif hasattr(value, "item"):
            converted[str(key)] = value.item()
        else:
            converted[str(key)] = value
    return converted


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
