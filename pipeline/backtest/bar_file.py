"""A file of bars to backtest (``--data``), let in only through the quality gate ingestion uses.

The file is read as ``tradeforge ingest --source files`` reads it (Parquet, CSV, Binance klines; columns found by
name or mapped), its timeframe given or guessed from the gaps between its bars, and every row judged by the same
checks as an ingest (``pipeline.data.quality``): a missing or unparsable timestamp, NaN or infinite values, prices
at or below zero, a negative volume, high below low (or below open/close), duplicate, conflicting or out-of-order
timestamps, bars not on the timeframe's grid, not yet closed or on a closed market's day, price spikes. A file with
any such row is refused before anything runs, naming the file, how many rows fail for which reasons, and the first
of them (row number counted from 1 in the file's order, with its timestamp); ingesting it instead quarantines those
rows and keeps the rest. Bars closer together than the timeframe given, and a range that holds none of the file's
bars, are refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.quality import row_reasons
from pipeline.data.sources.files import SUPPORTED_SUFFIXES, read_bar_file_any
from pipeline.domain import CALENDAR_24_7, AssetClass, DataError, Instrument, Timeframe, canonical_bars, epoch_ms

__all__ = ["UNNAMED", "read_checked_bars"]

UNNAMED = Instrument("file", "bars", AssetClass.CRYPTO, Decimal("0.01"), Decimal("0.00000001"), CALENDAR_24_7)
"""The instrument a file of bars is judged as when no symbol is given: any time of day, every day (24/7)."""


def read_checked_bars(
    path: Path,
    timeframe: Timeframe | None,
    instrument: Instrument | None,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
    now: pd.Timestamp,
    spike_z: float,
    column_map: Mapping[str, str] | None = None,
    option: str = "--data",
) -> tuple[pd.DataFrame, Timeframe]:
    """The bars of the file at ``path`` with ``start <= open < end`` and their timeframe (``timeframe``, or the
    one its bar gaps show), once every row has passed the quality gate; else a ``DataError`` naming ``option``
    and the file. ``instrument`` (its calendar) decides which days are sessions; ``now`` which bars are closed."""
    label = f"{option} {str(path)!r}"
    raw = _read(path, label, column_map)
    tf = _timeframe(raw, timeframe, label)
    reasons = row_reasons(raw, instrument or UNNAMED, tf, now, spike_z)
    if (reasons != "").any():
        raise DataError(_refusal(label, path, raw, reasons))
    bars = raw.sort_values("timestamp", kind="stable").reset_index(drop=True)
    chosen = bars
    if start is not None:
        chosen = chosen.loc[chosen["timestamp"] >= start]
    if end is not None:
        chosen = chosen.loc[chosen["timestamp"] < end]
    if chosen.empty:
        span = f"from {_when(bars['timestamp'].iloc[0])} to {_when(bars['timestamp'].iloc[-1])}"
        asked = " and ".join(part for part in (f"--start {_when(start)}" if start is not None else "",
                                               f"--end {_when(end)}" if end is not None else "") if part)
        raise DataError(f"{label} holds no bars within {asked}: the range is empty; its bars run {span}")
    return chosen.reset_index(drop=True), tf


def _read(path: Path, label: str, column_map: Mapping[str, str] | None) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{label} does not exist")
    if path.is_dir():
        raise DataError(f"{label} is a folder: give one file of bars ({', '.join(SUPPORTED_SUFFIXES)})")
    try:
        return canonical_bars(read_bar_file_any(path, column_map))
    except DataError as exc:
        said, named = str(exc), f"file {str(path)!r}"
        raise DataError(label + said.removeprefix(named) if said.startswith(named) else f"{label}: {said}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{label} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def _timeframe(raw: pd.DataFrame, given: Timeframe | None, label: str) -> Timeframe:
    """``given``, unless the file's bars are typically closer together; else the one the bar gaps show."""
    stamps = np.unique(epoch_ms(raw["timestamp"].dropna()))
    step = pd.Timedelta(milliseconds=float(np.median(np.diff(stamps)))) if len(stamps) >= 2 else None
    if given is not None:
        if step is not None and len(stamps) >= 3 and step < given.delta:
            raise DataError(f"{label} holds bars {_duration(step)} apart, closer than --timeframe {given}: give its "
                            "own timeframe (or ingest it and read it resampled from the lake)")
        return given
    if step is None:
        raise DataError(f"{label} holds fewer than 2 bars with a timestamp: its timeframe cannot be told")
    try:
        return Timeframe.parse(f"{int(step.total_seconds() // 60)}m")
    except DataError:
        raise DataError(f"{label} holds bars {_duration(step)} apart, which is not a timeframe tradeforge "
                        "trades (1m to 1d, dividing a day evenly)") from None


def _refusal(label: str, path: Path, raw: pd.DataFrame, reasons: np.ndarray) -> str:
    bad = np.flatnonzero(reasons != "")
    counts = pd.Series(reasons[bad]).value_counts()
    tally = ", ".join(f"{reason}: {count}" for reason, count in counts.items())
    first = int(bad[0])
    row = raw.iloc[first]
    rows = "1 row fails" if len(bad) == 1 else f"{len(bad)} rows fail"
    return (f"{label} fails the quality gate: {rows} ({tally}); the first is row {first + 1} "
            f"({_when(row['timestamp'])}, open {row['open']:g}, high {row['high']:g}, low {row['low']:g}, "
            f"close {row['close']:g}): {reasons[first]}. Fix the file, or ingest it (tradeforge ingest --source "
            f"files --path {path} ...), which quarantines those rows, and read the rest from the lake (--symbol, "
            "--timeframe)")


def _when(stamp: object) -> str:
    if stamp is None or pd.isna(stamp):  # type: ignore[call-overload]
        return "no timestamp"
    return pd.Timestamp(stamp).isoformat()  # type: ignore[arg-type]


def _duration(step: pd.Timedelta) -> str:
    minutes = step.total_seconds() / 60
    count, unit = (minutes, "minute") if minutes < 120 else (minutes / 60, "hour")
    return f"{count:g} {unit}{'' if count == 1 else 's'}"
