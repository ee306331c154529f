"""The backtest's door for what a user types: engine parameters and a date range, checked once, before anything
runs, and refused in the user's words.

* ``engine_config``: the engine's parameters (``EngineConfig``) from options, a form or a portfolio file's
  ``engine`` table; a value the engine cannot honour is refused with the range or the values it accepts, both
  generated from ``EngineConfig`` itself (``pipeline.accepted``), under the name the user gave it.
* ``date_range``: a start and an end (end exclusive), each a date or a timestamp; an end not after the start is
  refused naming both.
* ``no_bars``: the refusal for a selection of the lake that holds no bars, with the span it does hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from pydantic import ValidationError

from pipeline.accepted import Location, explain
from pipeline.data.catalog import read_bars
from pipeline.domain import DataError, Timeframe, parse_utc
from pipeline.engine import EngineConfig
from pipeline.settings import Settings

__all__ = ["cli_option", "date_range", "engine_config", "no_bars"]


def cli_option(loc: Location) -> str:
    """The command-line option of an engine field: ``max_position`` → ``--max-position``."""
    return "--" + "-".join(str(part) for part in loc).replace("_", "-")


def engine_config(values: Mapping[str, Any], name: Callable[[Location], str] = cli_option) -> EngineConfig:
    """``values`` as the engine's parameters; a ``DataError`` naming (by ``name``) each one refused, with what
    is accepted."""
    try:
        return EngineConfig.model_validate(dict(values))
    except ValidationError as exc:
        raise DataError("; ".join(explain(exc, EngineConfig, name))) from None


def date_range(start: str | None, end: str | None, names: tuple[str, str] = ("--start", "--end"),
               ) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``start`` and ``end`` as UTC timestamps (None: open); a ``DataError`` naming the one that is not a date,
    or both when the end is not after the start (the end is exclusive: equal bounds select nothing)."""
    lo, hi = parse_utc(start, names[0]), parse_utc(end, names[1])
    if lo is not None and hi is not None and hi <= lo:
        relation = "is the same time as" if hi == lo else "is after"
        raise DataError(f"{names[0]} {start} {relation} {names[1]} {end}: the range is empty ({names[1]} is "
                        f"exclusive and must be after {names[0]})")
    return lo, hi


def no_bars(settings: Settings, symbol: str, timeframe: Timeframe, venue: str | None, start: pd.Timestamp | None,
            end: pd.Timestamp | None) -> DataError:
    """The refusal of a range of the lake that holds none of ``symbol``'s bars, with the span it holds."""
    held = read_bars(settings, symbol, timeframe, None, None, venue)
    asked = " and ".join(part for part in (f"--start {start.isoformat()}" if start is not None else "",
                                           f"--end {end.isoformat()}" if end is not None else "") if part)
    where = f"within {asked}" if asked else "at all"
    if held.empty:
        return DataError(f"the lake holds no {symbol} {timeframe} bars {where}")
    span = f"{held['timestamp'].iloc[0].isoformat()} to {held['timestamp'].iloc[-1].isoformat()}"
    return DataError(f"the lake holds no {symbol} {timeframe} bars {where}: the range is empty; its bars run "
                     f"from {span}")
