"""What a study searches over, read from the lake: one symbol's bars at a timeframe (with the other series its
strategy reads), made ready for the sweep (``pipeline.research.sweep.Market``), with the timeframe and the
instrument. The ``optimize`` flow reads its inputs here, as ``tradeforge optimize --symbol`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.backtest.series import lake_venue, with_lake_series
from pipeline.data.catalog import read_bars
from pipeline.data.lake import Lake
from pipeline.domain import DataError, Instrument, Timeframe, parse_utc
from pipeline.engine import EngineConfig
from pipeline.research.optimise import Request
from pipeline.research.sweep import Market
from pipeline.settings import Settings


@dataclass(frozen=True)
class LakeInputs:
    """The bars of a study from the lake, ready for the sweep, with their timeframe and instrument."""

    market: Market
    timeframe: Timeframe
    instrument: Instrument | None


def lake_inputs(settings: Settings, request: Request, config: EngineConfig, symbol: str, timeframe: str,
                venue: str | None = None, start: str | None = None, end: str | None = None) -> LakeInputs:
    """``symbol``'s ``timeframe`` bars from the lake over ``start``..``end`` (ISO times, UTC), with the other
    series the request's strategy reads over the same span (a ``DataError`` when there are none)."""
    tf = Timeframe.parse(timeframe)
    first, last = parse_utc(start, "start"), parse_utc(end, "end")
    bars = read_bars(settings, symbol, tf, first, last, venue)
    if bars.empty:
        raise DataError(f"no {symbol} {tf} bars in the lake between {start or 'the first'} and {end or 'the last'}")
    series = Lake(settings.lake_dir).find(symbol, venue=venue)
    instrument = series[0].instrument if series else None
    sample = request.space.spec.build(request.space.example(request.grid))
    frame = with_lake_series(settings, sample, bars, tf, lake_venue(settings, symbol, venue), first, last)
    return LakeInputs(Market.of(bars, config, tf, instrument, frame), tf, instrument)
