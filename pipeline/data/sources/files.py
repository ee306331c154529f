"""Bars from files: Parquet, CSV, and Binance public-data kline files (zip or CSV).

Recognised inputs (a folder imports every file in it, in name order):

* **Parquet** with the canonical columns (``timestamp, open, high, low, close, volume``) or mapped ones.
* **Binance kline files** (``BTCUSDT-1m-2024-01.zip`` or ``.csv``): 12 columns ``open_time, open, high, low,
  close, volume, close_time, quote_volume, count, taker_buy_base, taker_buy_quote, ignore``, with or without
  a header row; open times in milliseconds or microseconds (Binance spot files use microseconds from 2025).
* **Generic CSV**: columns found by name (case-insensitive: ``timestamp|time|date|datetime|open_time``,
  ``open``, ``high``, ``low``, ``close``, ``volume``) or given by a mapping such as
  ``{"timestamp": "Date", "close": "Adj Close"}``. Numeric timestamps are epoch seconds, milliseconds or
  microseconds (told apart by magnitude); text timestamps with an offset are converted to UTC and text
  without one is taken as UTC. Mixing offset and naive text is an error.

The frame returned keeps the input's row order: ordering, duplicates and bad values are the quality gate's
business, so that each bad row is quarantined with its reason rather than silently fixed.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.clock import Clock
from pipeline.domain import (
    BAR_COLUMNS,
    SAMPLE_VENUE,
    TIMESTAMP_DTYPE,
    DataError,
    Instrument,
    Timeframe,
    canonical_bars,
    empty_bars,
    epoch_ms,
    to_utc_ms,
)
from pipeline.data.sources.base import ProgressCallback

SUPPORTED_SUFFIXES = (".parquet", ".pq", ".csv", ".zip", ".txt")
BINANCE_KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)
TIMESTAMP_ALIASES = ("timestamp", "time", "date", "datetime", "open_time", "opentime", "ts")


def parse_column_map(text: str | None) -> dict[str, str]:
    """Parse ``timestamp=Date,close=Adj Close`` into a mapping from canonical to file column names."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if "=" not in item:
            raise DataError(f"column mapping item {item!r} is not of the form canonical=file_column")
        key, value = (part.strip() for part in item.split("=", 1))
        if key not in BAR_COLUMNS:
            raise DataError(f"column mapping names {key!r}, which is not one of {', '.join(BAR_COLUMNS)}")
        if not value:
            raise DataError(f"column mapping for {key!r} has an empty file column name")
        mapping[key] = value
    return mapping


class FileSource:
    """Imports bars from a file or a folder of files."""

    name = "files"
    resumable = False

    def __init__(
        self,
        path: Path,
        clock: Clock,
        venue: str,
        column_map: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.venue = venue
        self.column_map = dict(column_map or {})

    def instrument(self, symbol: str) -> Instrument:
        if self.venue.strip().lower() == SAMPLE_VENUE:
            raise DataError(
                f"venue {SAMPLE_VENUE!r} is reserved for the synthetic sample market; "
                "imported files are real data: choose another --venue"
            )
        return Instrument.of(self.venue, symbol)

    def files(self) -> list[Path]:
        if not self.path.exists():
            raise DataError(f"path {str(self.path)!r} does not exist")
        if self.path.is_dir():
            found = sorted(p for p in self.path.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise DataError(
                    f"folder {str(self.path)!r} holds no importable files ({', '.join(SUPPORTED_SUFFIXES)})"
                )
            return found
        return [self.path]

    def fetch(self, instrument: Instrument, timeframe: Timeframe, since: pd.Timestamp | None,
              progress: ProgressCallback | None = None) -> pd.DataFrame:
        """Every bar in the file(s) with open time ``>= since``, in file order (no filtering of bad rows)."""
        parts = []
        for path in self.files():
            part = read_bar_file_any(path, self.column_map)
            check_spacing(part, timeframe, str(path))
            parts.append(part)
            if progress is not None:
                progress(len(part))
        frame = pd.concat(parts, ignore_index=True) if parts else empty_bars()
        if since is not None:
            frame = frame.loc[frame["timestamp"].isna() | (frame["timestamp"] >= since)]
        return frame.reset_index(drop=True)


def check_spacing(bars: pd.DataFrame, timeframe: Timeframe, label: str) -> None:
    """Refuse a file whose bars are typically closer together than ``timeframe`` (wrong ``--timeframe``).

    The median step between consecutive distinct timestamps is used, so a few stray rows still reach the
    quality gate (and its quarantine) instead of failing the whole file.
    """
    stamps = np.unique(epoch_ms(bars["timestamp"].dropna()))
    if len(stamps) < 3:
        return
    step_ms = float(np.median(np.diff(stamps)))
    if step_ms < timeframe.millis:
        step = pd.Timedelta(milliseconds=step_ms)
        raise DataError(
            f"file {label!r} holds bars {step} apart, shorter than the timeframe {timeframe}: "
            "import it with its own --timeframe (resampling to higher timeframes happens on read)"
        )


def read_bar_file_any(path: Path, column_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read one file of any supported kind into canonical columns (input row order kept)."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"file {str(path)!r} has an unsupported type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise DataError(f"file {str(path)!r} is empty")
    try:
        if suffix in (".parquet", ".pq"):
            return _from_table(_read_parquet(path), path, column_map)
        if suffix == ".zip":
            return _read_zip(path, column_map)
        return _read_csv_bytes(path.read_bytes(), str(path), column_map)
    except DataError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"file {str(path)!r} could not be read as bars: {exc}") from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"file {str(path)!r} is not a readable Parquet file ({exc})") from exc
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _read_zip(path: Path, column_map: Mapping[str, str] | None) -> pd.DataFrame:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"file {str(path)!r} is not a valid zip archive") from exc
    with archive:
        members = [m for m in archive.namelist() if m.lower().endswith((".csv", ".txt")) and not m.endswith("/")]
        if not members:
            raise DataError(f"zip {str(path)!r} contains no CSV file")
        parts = [
            _read_csv_bytes(archive.read(member), f"{path}!{member}", column_map) for member in sorted(members)
        ]
    return pd.concat(parts, ignore_index=True)


def _read_csv_bytes(payload: bytes, label: str, column_map: Mapping[str, str] | None) -> pd.DataFrame:
    text = payload.decode("utf-8-sig", errors="strict") if payload else ""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"file {label!r} is empty")
    first = next(csv.reader([lines[0]]))
    headerless = _looks_numeric(first[0])
    if headerless:
        if len(first) == len(BINANCE_KLINE_COLUMNS) and not column_map:
            frame = pd.read_csv(io.StringIO(text), header=None, names=list(BINANCE_KLINE_COLUMNS))
            frame = frame.rename(columns={"open_time": "timestamp"})
            return _from_table(frame, label, None)
        raise DataError(
            f"file {label!r} has no header row and {len(first)} columns; only Binance kline files "
            f"({len(BINANCE_KLINE_COLUMNS)} columns) may omit the header"
        )
    frame = pd.read_csv(io.StringIO(text), dtype={0: str})
    return _from_table(frame, label, column_map)


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _from_table(frame: pd.DataFrame, label: str | Path, column_map: Mapping[str, str] | None) -> pd.DataFrame:
    """Pick and convert the bar columns of a raw table."""
    label = str(label)
    if frame.empty:
        raise DataError(f"file {label!r} holds no rows")
    chosen = _choose_columns(list(map(str, frame.columns)), label, column_map)
    picked = pd.DataFrame({canon: frame[source].reset_index(drop=True) for canon, source in chosen.items()})
    picked["timestamp"] = _parse_timestamps(picked["timestamp"], label)
    try:
        return canonical_bars(picked)
    except DataError as exc:
        raise DataError(f"file {label!r}: {exc}") from exc


def _choose_columns(columns: list[str], label: str, column_map: Mapping[str, str] | None) -> dict[str, str]:
    lowered = {c.strip().lower(): c for c in columns}
    chosen: dict[str, str] = {}
    for canon in BAR_COLUMNS:
        if column_map and canon in column_map:
            if column_map[canon] not in columns:
                raise DataError(
                    f"file {label!r} has no column {column_map[canon]!r} (mapped to {canon}); "
                    f"its columns are {', '.join(columns)}"
                )
            chosen[canon] = column_map[canon]
            continue
        aliases = TIMESTAMP_ALIASES if canon == "timestamp" else (canon,)
        match = next((lowered[a] for a in aliases if a in lowered), None)
        if match is None:
            raise DataError(
                f"file {label!r} lacks a {canon!r} column (columns: {', '.join(columns)}); "
                "map it with --columns, e.g. --columns timestamp=Date"
            )
        chosen[canon] = match
    return chosen


def _parse_timestamps(values: pd.Series, label: str) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
        return to_utc_ms(values)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return _epoch_to_utc(numeric.to_numpy(dtype="float64"), label)
    text = values.astype("string").str.strip()
    has_offset = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
    if has_offset.any() and not has_offset[text.notna()].all():
        raise DataError(f"file {label!r} mixes timestamps with and without a UTC offset (mixed timezones)")
    try:
        parsed = pd.to_datetime(text, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataError(f"file {label!r} has timestamps that cannot be parsed: {exc}") from exc
    return parsed.astype(TIMESTAMP_DTYPE)


def _epoch_to_utc(raw: np.ndarray, label: str) -> pd.Series:
    """Epoch numbers to UTC: < 1e11 seconds, < 1e14 milliseconds, otherwise microseconds (per value)."""
    if not np.isfinite(raw).all():
        raise DataError(f"file {label!r} has missing or non-numeric timestamps")
    scale = np.where(raw < 1e11, 1000.0, np.where(raw < 1e14, 1.0, 0.001))
    millis = np.round(raw * scale).astype(np.int64)
    return pd.Series(pd.to_datetime(millis, unit="ms", utc=True)).astype(TIMESTAMP_DTYPE)



def infer_timeframe(bars: pd.DataFrame, label: str) -> Timeframe:
    """The timeframe of a bar frame, guessed from the median gap between consecutive bars (in whole minutes)."""
    if len(bars) < 2:
        raise DataError(f"{label} holds fewer than 2 bars")
    step = pd.Timedelta(bars["timestamp"].diff().median())
    return Timeframe.parse(f"{int(step.total_seconds() // 60)}m")


def read_bar_series(
    path: Path, timeframe: Timeframe | None = None, start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, Timeframe]:
    """The bars of one file to backtest or replay as they are, from ``start`` to ``end`` (exclusive).

    The file must already be clean (sorted, unique timestamps; ingest it to pass it through the quality gate).
    Without ``timeframe`` it is guessed from the gaps between bars.
    """
    label = f"--data {str(path)!r}"
    if not path.exists():
        raise DataError(f"{label} does not exist")
    bars = canonical_bars(read_bar_file_any(path))
    if not bars["timestamp"].is_monotonic_increasing or not bars["timestamp"].is_unique:
        raise DataError(f"{label}: timestamps must be sorted and unique (ingest it to clean it)")
    tf = timeframe if timeframe is not None else infer_timeframe(bars, label)
    if start is not None:
        bars = bars.loc[bars["timestamp"] >= start]
    if end is not None:
        bars = bars.loc[bars["timestamp"] < end]
    return bars.reset_index(drop=True), tf
