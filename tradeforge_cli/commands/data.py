"""``ingest`` (bars into the lake through the quality gate) and ``data health|sql`` (inspect the lake)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from tradeforge_cli.commands.options import JsonFlag, group
from tradeforge_cli.commands.output import (
    emit,
    fail,
    jsonable,
    load_settings,
    one_line,
    pairs,
    progress,
    symbol_option,
    timeframe_option,
    timestamp,
)

if TYPE_CHECKING:
    from pipeline.data.sources.base import BarSource
    from pipeline.settings import Settings


class SourceName(StrEnum):
    sample = "sample"
    ccxt = "ccxt"
    alpaca = "alpaca"
    files = "files"


CRYPTO_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD")
"""Quote currencies whose pairs are written without '/' by some exchanges' own pages (BTCUSDT for BTC/USDT)."""


def check_ingest_options(source: SourceName, symbol: str, exchange: str | None, path: Path | None,
                         venue: str | None, columns: str | None) -> None:
    """The options of an ``ingest`` that cannot be honoured, refused before anything is read or fetched (a
    ``DataError`` naming the option and what is accepted)."""
    from pipeline.domain import AssetClass, DataError, parse_symbol

    canonical, asset_class = parse_symbol(symbol)
    if asset_class is AssetClass.STOCK:
        pair = next((f"{canonical[:-len(q)]}/{q}" for q in CRYPTO_QUOTES
                     if canonical.endswith(q) and len(canonical) > len(q)), None)
        if pair is not None:
            raise DataError(f"--symbol {symbol!r} reads as a US stock ticker; for the crypto pair write {pair} "
                            "(BASE/QUOTE)")
    if source is not SourceName.files:
        given = [name for name, value in (("--path", path), ("--venue", venue), ("--columns", columns)) if value]
        if given:
            raise DataError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} read only with --source files "
                            f"(this ingest reads --source {source.value})")
    elif path is not None and not path.exists():
        raise DataError(f"--path {str(path)!r} does not exist")
    if source is SourceName.ccxt and exchange is not None:
        import ccxt

        from pipeline.input_errors import did_you_mean

        if exchange not in ccxt.exchanges:
            raise DataError(f"--exchange {exchange!r} is not a ccxt exchange id (e.g. binance, kraken, coinbase)"
                            f"{did_you_mean(exchange, ccxt.exchanges)}")


def build_source(
    source: SourceName,
    settings: Settings,
    symbol: str,
    exchange: str | None,
    venue: str | None,
    path: Path | None,
    columns: str | None,
) -> BarSource:
    """The bar source an ``ingest`` names (a venue client is imported only when it is used)."""
    from pipeline.clock import SystemClock
    from pipeline.domain import DataError, parse_symbol

    clock = SystemClock()
    if source is SourceName.sample:
        from pipeline.data.sources.sample import SampleSource

        return SampleSource(clock, settings.sample_seed)
    if source is SourceName.ccxt:
        from pipeline.data.sources.ccxt_source import CcxtSource

        return CcxtSource(settings, clock, exchange_id=exchange)
    if source is SourceName.alpaca:
        from pipeline.data.sources.alpaca_source import AlpacaSource

        return AlpacaSource(settings, clock)
    from pipeline.data.sources.files import FileSource, parse_column_map

    if path is None:
        raise DataError("--source files needs --path FILE_OR_DIR")
    _, asset_class = parse_symbol(symbol)
    default_venue = exchange or (settings.ccxt_exchange if asset_class.value == "crypto" else "us")
    return FileSource(path, clock, venue or default_venue, parse_column_map(columns))


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
    from pipeline.clock import SystemClock
    from pipeline.data.ingest import ingest as run_ingest
    from pipeline.domain import DataError

    settings = load_settings()
    try:
        tf = timeframe_option(timeframe)
        symbol_option(symbol)
        start = timestamp(since, "--since")
        check_ingest_options(source, symbol, exchange, path, venue, columns)
        now = SystemClock().now()
        if start is not None and start > now:
            raise DataError(f"--since {since} is in the future (now is {now:%Y-%m-%d %H:%M} UTC)")
        bar_source = build_source(source, settings, symbol, exchange, venue, path, columns)
        with progress(f"ingest {symbol} {tf} from {source.value}") as advance:
            report = run_ingest(bar_source, symbol, tf, settings, SystemClock(), since=start, progress=advance)
    except DataError as exc:
        raise fail(str(exc)) from exc
    except RuntimeError as exc:
        raise fail(str(exc)) from exc
    document = report.to_json()
    table = pairs([(key, escape(str(value))) for key, value in document.items()],
                  f"ingest {report.venue} {report.symbol} {report.timeframe}", box.HEAVY_HEAD,
                  "SAMPLE DATA (synthetic market, not real prices)" if report.sample else None)
    emit(document, as_json, table)


def data_health(
    symbol: Annotated[str | None, typer.Option(help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Option(help="Only this timeframe.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Per series: rows, first, last, gaps, duplicates, quarantined, stale."""
    from pipeline.clock import SystemClock
    from pipeline.data.catalog import HealthStore
    from pipeline.data.lake import Lake
    from pipeline.domain import DataError

    settings = load_settings()
    try:
        canonical = symbol_option(symbol) if symbol else None
        tf = str(timeframe_option(timeframe)) if timeframe else None
    except DataError as exc:
        raise fail(str(exc)) from exc
    lake = Lake(settings.lake_dir)
    if symbol or timeframe:  # refused before the health table is refreshed
        held = sorted({(s.instrument.venue, s.instrument.symbol, str(s.timeframe)) for s in lake.series()})
        if not any((not canonical or held_symbol == canonical) and (not tf or held_tf == tf)
                   for _, held_symbol, held_tf in held):
            asked = " ".join(f"{option} {value}" for option, value in (("--symbol", canonical), ("--timeframe", tf))
                             if value)
            holds = ", ".join(" ".join(series) for series in held)
            raise fail(f"no series in the lake matches {asked}; "
                       + (f"the lake holds {holds}" if held else "the lake is empty"))
    table_frame = HealthStore(settings).refresh_all(lake, SystemClock().now())
    if canonical:
        table_frame = table_frame.loc[table_frame["symbol"] == canonical]
    if tf:
        table_frame = table_frame.loc[table_frame["timeframe"] == tf]
    records = [jsonable(r) for r in table_frame.to_dict(orient="records")]
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
    emit(records, as_json, table)


def _short_time(value: object) -> str:
    import pandas as pd

    return "-" if value is None else pd.Timestamp(str(value)).strftime("%Y-%m-%d %H:%M")


def data_sql(
    query: Annotated[str, typer.Argument(help="SQL over the views bars, health and quarantine.")],
    as_json: JsonFlag = False,
) -> None:
    """Run a read-only DuckDB query over the lake (views: bars, health, quarantine)."""
    import duckdb

    from pipeline.data.catalog import open_duckdb

    settings = load_settings()
    con = open_duckdb(settings)
    try:
        kinds = [statement.type for statement in con.extract_statements(query)]
        reads = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.MULTI)  # PIVOT
        writes = [kind.name for kind in kinds if kind not in reads]
        if writes:  # the lake is read here; COPY ... TO, CREATE, ATTACH and the like would write or change things
            raise fail(f"data sql only reads (SELECT, WITH ... SELECT, EXPLAIN): the query holds {', '.join(writes)}; "
                       "to keep a result, give --json and redirect it to a file")
        frame = con.execute(query).df()
    except duckdb.Error as exc:
        lines = [line for line in str(exc).splitlines() if line.strip().strip("^")]  # less the caret under LINE
        raise fail(f"query failed: {one_line(chr(10).join(lines))}") from exc
    records = [jsonable(r) for r in frame.to_dict(orient="records")]
    table = Table()
    for name in frame.columns:
        table.add_column(str(name))
    for record in records[:200]:
        table.add_row(*(escape(str(v)) for v in record.values()))
    emit(records, as_json, table)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    data_app = group("Inspect the market-data lake.")
    data_app.command("health")(data_health)
    data_app.command("sql")(data_sql)
    app.add_typer(data_app, name="data")
