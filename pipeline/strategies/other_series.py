"""Another symbol a strategy reads as a series: ``OtherSeries`` declares it, ``align`` lines its bars up with the
strategy's rows causally, and the drivers add its columns to the strategy's frame.

A strategy declares what it reads in an optional attribute ``series`` (a tuple of ``OtherSeries``; absent means
none), for example BTC/USDT 1h as a regime filter for ETH/USDT 5m::

    series = (OtherSeries(symbol="BTC/USDT", timeframe="1h", prefix="btc_"),)

Its frame then holds, on every row, the last bar of that series *closed* by the row's close: ``btc_timestamp``
(that bar's open time) and ``btc_open``, ``btc_high``, ``btc_low``, ``btc_close``, ``btc_volume``; NaN (NaT)
before the first one. A bar closes at its open time plus its timeframe, and a row sees every bar whose close is
at or before its own close (equal close times are visible: the 10:00 hour is seen by the 5m row of 10:55).

The drivers bring the bars: a backtest reads them from the lake over the same span as the strategy's own bars
(``pipeline.backtest.series``; the venue is the main series' unless ``venue`` names another), the runtime from the
same kind of feed as the strategy's own bars. ``align`` over a whole history and ``SeriesCursor`` (the runtime's
form: rows fed a few at a time with the bars closed since, carrying only the last visible bar) give the same
values, so a backtest, a paper replay and live trading read the same bar at the same row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, field_validator

from pipeline.domain import TIMESTAMP_DTYPE, DataError, Timeframe, epoch_ms, parse_symbol
from pipeline.features.streaming import pack, unpack

COLUMNS = ("open", "high", "low", "close", "volume")
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*$")


class OtherSeries(BaseModel):
    """Another symbol's bars at a timeframe, delivered as columns named ``prefix`` + timestamp/open/.../volume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    timeframe: str
    venue: str | None = None
    """The venue to read it from; None: the venue of the strategy's own bars."""
    prefix: str

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return parse_symbol(value)[0]

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        return str(Timeframe.parse(value))

    @field_validator("venue")
    @classmethod
    def _venue(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a venue (or be left out for the strategy's own venue)")
        return None if value is None else value.strip().lower()

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError(f"{value!r} is not a column prefix: use lower-case letters, digits and _ (e.g. 'btc_')")
        return value

    @property
    def frame(self) -> Timeframe:
        return Timeframe.parse(self.timeframe)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns it adds to a frame: ``prefix`` + timestamp, open, high, low, close, volume."""
        return tuple(self.prefix + name for name in ("timestamp", *COLUMNS))

    def text(self, venue: str | None = None) -> str:
        """``BTC/USDT 1h`` (with ``on venue 'binance'`` when a venue is known), for messages."""
        where = self.venue or venue
        return f"{self.symbol} {self.timeframe}" + (f" on venue {where!r}" if where else "")


def series_of(strategy: object) -> tuple[OtherSeries, ...]:
    """The other series ``strategy`` reads (its ``series`` attribute; none when it has none), checked."""
    declared = getattr(strategy, "series", ())
    name = getattr(strategy, "name", type(strategy).__name__)
    if not isinstance(declared, tuple | list) or not all(isinstance(s, OtherSeries) for s in declared):
        raise DataError(f"strategy {name!r}: 'series' must be a tuple of OtherSeries, got {declared!r}")
    columns = [column for spec in declared for column in spec.columns]
    if len(set(columns)) != len(columns):
        raise DataError(f"strategy {name!r}: two of its series share a column prefix; give each its own prefix")
    return tuple(declared)


def check_series(strategy: object, frame: pd.DataFrame) -> None:
    """Refuse a frame that lacks a column of an other series the strategy reads, naming the series."""
    for spec in series_of(strategy):
        missing = [column for column in spec.columns if column not in frame.columns]
        if missing:
            name = getattr(strategy, "name", type(strategy).__name__)
            raise DataError(
                f"strategy {name!r} reads {spec.text()} as columns {', '.join(spec.columns)}, but its frame "
                f"lacks {', '.join(missing)}: a backtest reads that series from the lake and the runtime from its "
                "feed; a frame given by hand must hold them (pipeline.strategies.other_series.with_series)")


def align(rows: pd.DataFrame, rows_timeframe: Timeframe, other: pd.DataFrame,
          other_timeframe: Timeframe) -> pd.DataFrame:
    """For each of ``rows`` (a bar frame at ``rows_timeframe``), the last bar of ``other`` (a bar frame at
    ``other_timeframe``) whose close is at or before the row's close: ``timestamp`` (its open time) and its
    values, NaN (NaT) where none has closed yet. Indexed like ``rows``."""
    row_close = _ms(rows) + rows_timeframe.millis
    other_close = _ms(other) + other_timeframe.millis
    if len(other_close) > 1 and not bool((np.diff(other_close) > 0).all()):
        raise DataError("the other series' bars must be sorted by time with unique timestamps")
    index = np.searchsorted(other_close, row_close, side="right") - 1
    seen = index >= 0
    taken = np.where(seen, index, 0)
    opened = np.full(len(rows), np.nan)  # epoch ms as float64 (exact below 2**53), NaN before the first bar
    values = np.full((len(rows), len(COLUMNS)), np.nan)
    if len(other):
        opened[seen] = (other_close - other_timeframe.millis)[taken[seen]]
        values[seen] = other[list(COLUMNS)].to_numpy(dtype=np.float64)[taken[seen]]
    stamps = pd.Series(pd.to_datetime(opened, unit="ms", utc=True), index=rows.index).astype(TIMESTAMP_DTYPE)
    return pd.DataFrame({"timestamp": stamps, **{name: values[:, j] for j, name in enumerate(COLUMNS)}},
                        index=rows.index)


def with_series(rows: pd.DataFrame, rows_timeframe: Timeframe,
                bars: Mapping[OtherSeries, pd.DataFrame]) -> pd.DataFrame:
    """``rows`` plus the aligned columns of each series in ``bars`` (series → its bar frame)."""
    added: dict[str, pd.Series] = {}
    for spec, other in bars.items():
        aligned = align(rows, rows_timeframe, other, spec.frame)
        added.update({spec.prefix + name: aligned[name] for name in aligned.columns})
    return rows.assign(**added) if added else rows


def empty_columns(strategy: object, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus every other-series column the strategy reads, empty (NaN, NaT): for a run on no bars."""
    added: dict[str, Any] = {}
    for spec in series_of(strategy):
        added[spec.prefix + "timestamp"] = pd.Series(pd.NaT, index=frame.index, dtype=TIMESTAMP_DTYPE)
        added.update({spec.prefix + name: np.nan for name in COLUMNS})
    return frame.assign(**added) if added else frame


class SeriesCursor:
    """``align`` as a stream: given the strategy's next rows and the other series' bars that closed since, the
    aligned columns (prefixed) of those rows; it carries only the last bar it made visible.

    ``wanted(close_ms)`` says which bars the next rows need: open time after ``after`` (None: from the first)
    and close at or before ``close_ms``. Bars given beyond those are ignored (asked for again later), so a
    caller may hand over whatever it has.
    """

    def __init__(self, series: OtherSeries, rows_timeframe: Timeframe) -> None:
        self.series = series
        self.rows_timeframe = rows_timeframe
        self.after: int | None = None
        """Open time (epoch ms) of the last bar taken; None before the first."""
        self._values = np.full(len(COLUMNS), np.nan)

    def update(self, rows: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
        """The aligned, prefixed columns of ``rows`` (indexed like them), from the carried bar and ``bars``."""
        tf = self.series.frame
        last_close = int(_ms(rows)[-1]) + self.rows_timeframe.millis if len(rows) else np.iinfo(np.int64).min
        ms = _ms(bars)
        keep = ms + tf.millis <= last_close
        if self.after is not None:
            keep &= ms > self.after
        fresh = bars.loc[keep]
        if self.after is not None:
            carried = pd.DataFrame({"timestamp": pd.Series([pd.Timestamp(self.after, unit="ms", tz="UTC")],
                                                           dtype=TIMESTAMP_DTYPE),
                                    **{name: [self._values[j]] for j, name in enumerate(COLUMNS)}})
            fresh = pd.concat([carried, fresh[["timestamp", *COLUMNS]]], ignore_index=True)
        aligned = align(rows, self.rows_timeframe, fresh, tf)
        if len(fresh):
            self.after = int(_ms(fresh)[-1])
            self._values = fresh[list(COLUMNS)].to_numpy(dtype=np.float64)[-1].copy()
        return aligned.rename(columns={name: self.series.prefix + name for name in aligned.columns})

    def wanted(self, close_ms: int) -> tuple[int | None, int]:
        """(open time after which, last open time through which) the bars for rows closing by ``close_ms``."""
        return self.after, close_ms - self.series.frame.millis

    def state(self) -> dict[str, Any]:
        return {"series": self.series.model_dump(), "after": self.after, "values": pack(self._values)}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("series") != self.series.model_dump():
            raise DataError(f"saved series cursor belongs to {state.get('series')!r}, not to {self.series.text()}")
        after = state.get("after")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
            raise DataError(f"saved series cursor of {self.series.text()} has no valid open time: {after!r}")
        values = unpack(state.get("values"), len(COLUMNS), f"series cursor of {self.series.text()}")
        self.after, self._values = after, values


def _ms(frame: pd.DataFrame) -> np.ndarray:
    return epoch_ms(frame["timestamp"]) if len(frame) else np.empty(0, dtype=np.int64)

