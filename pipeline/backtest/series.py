"""The other series a strategy reads (``pipeline.strategies.other_series``), read from the lake for a backtest and
for a replay: the same bars in both, so a paper replay trades as the backtest did.

Each series is read over the same span as the strategy's own bars (``start <= open < end``, either bound open),
from the venue it names or else the venue of the strategy's own bars, resampled from a finer stored timeframe
when its own is not stored (as ``read_bars`` does). A series the lake does not hold is a ``DataError`` naming the
strategy, the symbol, the timeframe and the venue, with the ``tradeforge ingest`` command that brings it in.
"""

from __future__ import annotations

import pandas as pd

from pipeline.backtest.portfolio import SeriesLoader, Sleeve
from pipeline.data.catalog import read_bars
from pipeline.data.lake import Lake
from pipeline.domain import SAMPLE_VENUE, AssetClass, DataError, Timeframe, parse_symbol
from pipeline.settings import Settings
from pipeline.strategies import Strategy
from pipeline.strategies.other_series import OtherSeries, series_of, with_series

__all__ = ["ingest_hint", "lake_series_loader", "lake_venue", "read_series", "with_lake_series"]


def lake_venue(settings: Settings, symbol: str, venue: str | None) -> str | None:
    """The venue the lake holds ``symbol`` under: ``venue`` when given, else the only one (None: none or several)."""
    if venue is not None:
        return venue.lower()
    venues = {s.instrument.venue for s in Lake(settings.lake_dir).find(symbol)}
    return venues.pop() if len(venues) == 1 else None


def ingest_hint(symbol: str, timeframe: str, venue: str | None, since: pd.Timestamp | None = None) -> str:
    """The ``tradeforge ingest`` command that brings ``symbol`` at ``timeframe`` from ``venue`` into the lake."""
    tail = f"--symbol {symbol} --timeframe {timeframe}" + (f" --since {since.date()}" if since is not None else "")
    if venue == SAMPLE_VENUE:
        return f"tradeforge ingest --source sample {tail}"
    if parse_symbol(symbol)[1] is AssetClass.STOCK and venue in (None, "us"):
        return f"tradeforge ingest --source alpaca {tail}"
    if parse_symbol(symbol)[1] is AssetClass.CRYPTO:
        exchange = f" --exchange {venue}" if venue else ""
        return (f"tradeforge ingest --source ccxt{exchange} {tail} (or --source files --path FILE"
                f"{' --venue ' + venue if venue else ''})")
    return f"tradeforge ingest --source files --path FILE --venue {venue} {tail}"


def read_series(settings: Settings, reader: str, series: OtherSeries, venue: str | None,
                start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The bars of ``series`` from the lake over ``start <= open < end`` (``venue``: the strategy's own venue,
    used unless the series names one); a ``DataError`` naming ``reader`` (``strategy 'x'``, ``sleeve 'y'``) when
    the lake lacks it or holds none of it in the span."""
    where = series.venue or venue
    what = f"{reader} reads {series.text(where)}"
    hint = ingest_hint(series.symbol, series.timeframe, where, start)
    if not Lake(settings.lake_dir).find(series.symbol, venue=where):
        raise DataError(f"{what}, which is not in the lake: ingest it first: {hint}")
    try:
        bars = read_bars(settings, series.symbol, series.frame, start, end, where)
    except DataError as exc:
        raise DataError(f"{what}: {exc}; ingest it: {hint}") from exc
    if bars.empty:
        span = f"between {start or 'the first bar'} and {end or 'the last bar'}"
        raise DataError(f"{what}, but the lake holds none of its bars {span}: ingest them: {hint}")
    return bars


def with_lake_series(settings: Settings, strategy: Strategy, bars: pd.DataFrame, timeframe: Timeframe,
                     venue: str | None, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """``bars`` (the strategy's own, at ``timeframe``, from ``venue``) plus the aligned columns of every other
    series the strategy reads, each read from the lake over ``start``..``end``; ``bars`` itself when it reads
    none."""
    specs = series_of(strategy)
    if not specs:
        return bars
    loaded = {spec: read_series(settings, f"strategy {strategy.name!r}", spec, venue, start, end) for spec in specs}
    return with_series(bars, timeframe, loaded)


def lake_series_loader(settings: Settings, venue: str | None, start: pd.Timestamp | None,
                       end: pd.Timestamp | None) -> SeriesLoader:
    """For ``run_portfolio``: the other series of a sleeve from the lake over ``start``..``end``, from the
    venue of the sleeve's own symbol (``venue``, or where the lake holds it) unless the series names one."""
    def load(series: OtherSeries, sleeve: Sleeve) -> pd.DataFrame:
        return read_series(settings, f"sleeve {sleeve.key!r} ({sleeve.strategy.name})", series,
                           lake_venue(settings, sleeve.symbol, venue), start, end)

    return load
