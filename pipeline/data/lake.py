"""The Parquet lake: one folder per series, one file per period, atomic writes, DuckDB views.

Layout under ``<data_dir>/lake``::

    <venue>/<SYMBOL-KEY>/<timeframe>/_series.json      instrument metadata (venue, symbol, calendar, ...)
    <venue>/<SYMBOL-KEY>/<timeframe>/<period>.parquet  bars of one period: YYYY-MM (intraday) or YYYY (daily)

Every file is written to a hidden temporary name in the same folder, flushed to disk and renamed over the
target, so a reader sees the old file or the new one, never a partial one. Readers only look at
``*.parquet``; leftovers of an interrupted write (``.*.tmp``) are ignored and removed by the next write.
Stored bars are never changed by an ingest: a new bar with the timestamp of a stored one is either identical
(skipped) or a conflict (returned to the caller, who quarantines it).

The lake writes only into a folder of its own: one that is absent or empty, or holds nothing but the files of
the layout above (hidden files, such as leftovers of interrupted writes, aside). A lake folder holding anything
else belongs to someone else; the first write through a :class:`Lake` refuses it with a ``DataError`` naming the
folder and what is in it, and nothing is written.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.domain import (
    BAR_COLUMNS,
    TIMESTAMP_DTYPE,
    VALUE_COLUMNS,
    DataError,
    Instrument,
    Timeframe,
    canonical_bars,
    empty_bars,
    epoch_ms,
    parse_symbol,
)

SERIES_FILE = "_series.json"
_PERIOD_FILE = re.compile(r"\d{4}(-\d{2})?\.parquet")
BAR_SCHEMA = pa.schema(
    [pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in VALUE_COLUMNS]
)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see either the old or the complete new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """Write a Parquet table atomically (temporary file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def period_of(timestamps: pd.Series, timeframe: Timeframe) -> pd.Series:
    """The partition period of each timestamp: ``YYYY`` for daily series, ``YYYY-MM`` otherwise."""
    years = timestamps.dt.year.to_numpy()
    codes = years if timeframe.is_daily else years * 100 + timestamps.dt.month.to_numpy()
    unique, inverse = np.unique(codes, return_inverse=True)
    names = [f"{c:04d}" if timeframe.is_daily else f"{c // 100:04d}-{c % 100:02d}" for c in unique]
    return pd.Series(np.asarray(names, dtype=object)[inverse], index=timestamps.index)


@dataclass(frozen=True)
class Series:
    """One stored series: an instrument at a timeframe, plus where its data came from."""

    instrument: Instrument
    timeframe: Timeframe
    source: str
    sample: bool
    folder: Path

    def period_files(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet"))

    def to_dict(self) -> dict[str, object]:
        return {
            **self.instrument.to_dict(),
            "timeframe": str(self.timeframe),
            "source": self.source,
            "sample": self.sample,
        }


@dataclass(frozen=True)
class WriteResult:
    rows_written: int
    conflicts: pd.DataFrame
    """New rows whose timestamp is stored with different values; they were not written."""
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    """First and last bar actually written."""


def bars_to_table(bars: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(bars[list(BAR_COLUMNS)], schema=BAR_SCHEMA, preserve_index=False)


def read_bar_file(path: Path) -> pd.DataFrame:
    """Read one period file into a canonical bar frame."""
    table = pq.read_table(path, schema=BAR_SCHEMA)
    frame: pd.DataFrame = table.to_pandas()
    frame["timestamp"] = frame["timestamp"].astype(TIMESTAMP_DTYPE)
    return frame


class Lake:
    """The partitioned Parquet store of bars."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._claimed = False

    # ----------------------------------------------------------------- ownership
    def foreign_files(self, limit: int = 5) -> list[Path]:
        """Up to ``limit`` files in the lake folder that are not of the lake's layout (module documentation);
        empty for the lake's own folder. A lake path that is a file is itself foreign."""
        if self.root.exists() and not self.root.is_dir():
            return [self.root]
        found: list[Path] = []
        for folder, folders, files in os.walk(self.root):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            depth = len(Path(folder).relative_to(self.root).parts)
            for name in sorted(files):
                ours = depth == 3 and (name == SERIES_FILE or _PERIOD_FILE.fullmatch(name) is not None)
                if not ours and not name.startswith("."):
                    found.append(Path(folder) / name)
                    if len(found) >= limit:
                        return found
        return found

    def claim(self) -> None:
        """Raise ``DataError`` unless the lake folder is the lake's own (module documentation)."""
        if self._claimed:
            return
        foreign = self.foreign_files()
        if foreign == [self.root]:
            raise DataError(f"the lake folder {self.root} is a file, not a folder: nothing was written into it; "
                            "set TRADEFORGE_DATA_DIR to a folder of tradeforge's own")
        if foreign:
            shown = ", ".join(str(p.relative_to(self.root)) for p in foreign)
            raise DataError(f"the lake folder {self.root} holds files tradeforge did not write ({shown}"
                            f"{', ...' if len(foreign) >= 5 else ''}): nothing was written into it; move them out, "
                            "or set TRADEFORGE_DATA_DIR to a folder of tradeforge's own")
        self._claimed = True

    # ----------------------------------------------------------------- catalogue
    def series_folder(self, instrument: Instrument, timeframe: Timeframe) -> Path:
        return self.root / instrument.venue / instrument.key / str(timeframe)

    def series(self) -> list[Series]:
        """Every stored series, in a stable order."""
        found: list[Series] = []
        for meta in sorted(self.root.glob(f"*/*/*/{SERIES_FILE}")):
            found.append(self._load_series(meta))
        return found

    def _load_series(self, meta_path: Path) -> Series:
        data = json.loads(meta_path.read_text())
        instrument = Instrument.from_dict(data)
        return Series(
            instrument,
            Timeframe.parse(data["timeframe"]),
            str(data.get("source", "unknown")),
            bool(data.get("sample", False)),
            meta_path.parent,
        )

    def find(
        self, symbol: str, timeframe: Timeframe | None = None, venue: str | None = None
    ) -> list[Series]:
        canonical, _ = parse_symbol(symbol)
        return [
            s
            for s in self.series()
            if s.instrument.symbol == canonical
            and (timeframe is None or s.timeframe == timeframe)
            and (venue is None or s.instrument.venue == venue.lower())
        ]

    def get(self, instrument: Instrument, timeframe: Timeframe) -> Series | None:
        meta = self.series_folder(instrument, timeframe) / SERIES_FILE
        return self._load_series(meta) if meta.exists() else None

    def register(self, instrument: Instrument, timeframe: Timeframe, source: str, sample: bool) -> Series:
        """Create the series folder and its metadata; an existing series keeps its metadata."""
        self.claim()
        existing = self.get(instrument, timeframe)
        if existing is not None:
            if existing.sample != sample:
                kind = "sample" if existing.sample else "real"
                raise DataError(
                    f"{instrument.venue} {instrument.symbol} {timeframe} holds {kind} data; "
                    "sample and real bars are never mixed in one series"
                )
            return existing
        folder = self.series_folder(instrument, timeframe)
        series = Series(instrument, timeframe, source, sample, folder)
        atomic_write_bytes(folder / SERIES_FILE, json.dumps(series.to_dict(), indent=2).encode())
        return series

    # ----------------------------------------------------------------- reading
    def read(
        self,
        series: Series,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Bars of ``series`` with ``start <= timestamp < end`` (either bound may be open)."""
        files = series.period_files()
        if start is not None or end is not None:
            files = [f for f in files if _period_overlaps(f.stem, series.timeframe, start, end)]
        if not files:
            return empty_bars()
        frame = pd.concat([read_bar_file(f) for f in files], ignore_index=True)
        mask = np.ones(len(frame), dtype=bool)
        if start is not None:
            mask &= (frame["timestamp"] >= start).to_numpy()
        if end is not None:
            mask &= (frame["timestamp"] < end).to_numpy()
        return frame.loc[mask].reset_index(drop=True)

    def last_timestamp(self, series: Series) -> pd.Timestamp | None:
        files = series.period_files()
        if not files:
            return None
        last = read_bar_file(files[-1])
        return None if last.empty else pd.Timestamp(last["timestamp"].iloc[-1])

    def tail(self, series: Series, rows: int) -> pd.DataFrame:
        """The last ``rows`` stored bars (fewer when the series is shorter)."""
        parts: list[pd.DataFrame] = []
        count = 0
        for path in reversed(series.period_files()):
            part = read_bar_file(path)
            parts.append(part)
            count += len(part)
            if count >= rows:
                break
        if not parts:
            return empty_bars()
        frame = pd.concat(list(reversed(parts)), ignore_index=True)
        return frame.iloc[-rows:].reset_index(drop=True)

    # ----------------------------------------------------------------- writing
    def write(self, series: Series, bars: pd.DataFrame) -> WriteResult:
        """Add ``bars`` (canonical, sorted, unique, quality-checked) to ``series``.

        Rows already stored with identical values are skipped, rows that conflict with stored values are
        returned and not written, and nothing stored is changed.
        """
        self.claim()
        self._sweep_temporaries(series.folder)
        if bars.empty:
            return WriteResult(0, empty_bars())
        bars = canonical_bars(bars)
        periods = period_of(bars["timestamp"], series.timeframe)
        written = 0
        conflicts: list[pd.DataFrame] = []
        fresh_stamps: list[pd.Timestamp] = []
        for period, new_rows in bars.groupby(periods.to_numpy(), sort=True):
            path = series.folder / f"{period}.parquet"
            if path.exists():
                stored = read_bar_file(path)
                fresh, clashing = _split_against_stored(new_rows, stored)
                conflicts.append(clashing)
                if fresh.empty:
                    continue
                merged = pd.concat([stored, fresh], ignore_index=True)
                merged = merged.sort_values("timestamp", kind="stable").reset_index(drop=True)
            else:
                fresh = new_rows
                merged = new_rows.reset_index(drop=True)
            atomic_write_table(path, bars_to_table(merged))
            written += len(fresh)
            fresh_stamps += [fresh["timestamp"].min(), fresh["timestamp"].max()]
        conflict_frame = pd.concat(conflicts, ignore_index=True) if conflicts else empty_bars()
        if not fresh_stamps:
            return WriteResult(written, conflict_frame)
        return WriteResult(written, conflict_frame, min(fresh_stamps), max(fresh_stamps))

    def _sweep_temporaries(self, folder: Path) -> None:
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


def _split_against_stored(new_rows: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split new rows into (not stored yet, conflicting with a stored bar); identical rows are dropped."""
    stored_ts = epoch_ms(stored["timestamp"])
    new_ts = epoch_ms(new_rows["timestamp"])
    present = np.isin(new_ts, stored_ts)
    fresh = new_rows.loc[~present]
    overlap = new_rows.loc[present]
    if overlap.empty:
        return fresh, empty_bars()
    aligned = stored.set_index("timestamp").loc[overlap["timestamp"]]
    same = np.ones(len(overlap), dtype=bool)
    for name in VALUE_COLUMNS:
        same &= overlap[name].to_numpy() == aligned[name].to_numpy()
    return fresh, overlap.loc[~same].reset_index(drop=True)


def _period_overlaps(
    period: str, timeframe: Timeframe, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> bool:
    try:
        first = pd.Timestamp(f"{period}-01-01" if timeframe.is_daily else f"{period}-01", tz="UTC")
    except ValueError:
        return False
    after = first + (pd.DateOffset(years=1) if timeframe.is_daily else pd.DateOffset(months=1))
    if start is not None and after <= start:
        return False
    return not (end is not None and first >= end)

