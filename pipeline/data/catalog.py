"""Querying the lake: ``read_bars``, the quarantine and health stores, and DuckDB views over all of it.

DuckDB views (``open_duckdb``):

* ``bars`` — every stored bar with ``venue, symbol, timeframe, sample`` columns;
* ``health`` — one row per series: rows, first, last, gaps, missing_bars, duplicates, quarantined, stale, ...;
* ``quarantine`` — every quarantined row with its reason, source and time of ingest.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.domain import TIMESTAMP_DTYPE, DataError, Instrument, Timeframe, parse_symbol
from pipeline.data.lake import Lake, Series, atomic_write_table
from pipeline.data.quality import Health, series_health
from pipeline.data.resample import resample_bars
from pipeline.settings import Settings

HEALTH_COLUMNS = (
    "venue",
    "symbol",
    "timeframe",
    "asset_class",
    "sample",
    "source",
    "rows",
    "first",
    "last",
    "gaps",
    "missing_bars",
    "duplicates",
    "quarantined",
    "stale",
    "checked_at",
)
DUPLICATE_REASONS = ("duplicate timestamp", "conflicting duplicate")


class QuarantineStore:
    """Rows held back by the quality gate: ``<dir>/<venue>/<SYMBOL-KEY>/<tf>/<time>-<source>.parquet``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, instrument: Instrument, timeframe: Timeframe) -> Path:
        return self.root / instrument.venue / instrument.key / str(timeframe)

    def add(
        self, instrument: Instrument, timeframe: Timeframe, rows: pd.DataFrame, source: str, at: pd.Timestamp
    ) -> Path:
        frame = rows.copy()
        frame["timestamp"] = frame["timestamp"].astype(TIMESTAMP_DTYPE)
        frame["venue"] = instrument.venue
        frame["symbol"] = instrument.symbol
        frame["timeframe"] = str(timeframe)
        frame["source"] = source
        frame["ingested_at"] = pd.Series([at] * len(frame), dtype=TIMESTAMP_DTYPE)
        name = f"{at.strftime('%Y%m%dT%H%M%S%f')}-{source}.parquet"
        path = self.folder(instrument, timeframe) / name
        atomic_write_table(path, pa.Table.from_pandas(frame, preserve_index=False))
        return path

    def files(self) -> list[Path]:
        return sorted(self.root.glob("*/*/*/*.parquet"))

    def counts(self, instrument: Instrument, timeframe: Timeframe) -> tuple[int, int]:
        """(quarantined rows, of which duplicates) for one series."""
        total = duplicates = 0
        for path in sorted(self.folder(instrument, timeframe).glob("*.parquet")):
            reasons = pq.read_table(path, columns=["reason"]).column("reason").to_pylist()
            total += len(reasons)
            duplicates += sum(1 for r in reasons if r in DUPLICATE_REASONS)
        return total, duplicates


class HealthStore:
    """The data-health table: ``<data_dir>/quality/health.parquet``, one row per series."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.health_path

    def load(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=list(HEALTH_COLUMNS))
        table: pd.DataFrame = pq.read_table(self.path).to_pandas()
        return table

    def refresh(self, lake: Lake, series: Series, now: pd.Timestamp) -> Health:
        """Recompute the row of ``series`` and store it."""
        health, row = self._row(lake, series, now)
        table = self.load()
        key = (table["venue"] == row["venue"]) & (table["symbol"] == row["symbol"]) & (
            table["timeframe"] == row["timeframe"]
        )
        updated = pd.concat([table.loc[~key], pd.DataFrame([row])], ignore_index=True)
        self._save(updated)
        return health

    def refresh_all(self, lake: Lake, now: pd.Timestamp) -> pd.DataFrame:
        rows = [self._row(lake, series, now)[1] for series in lake.series()]
        table = pd.DataFrame(rows, columns=list(HEALTH_COLUMNS))
        self._save(table)
        return table

    def _row(self, lake: Lake, series: Series, now: pd.Timestamp) -> tuple[Health, dict[str, object]]:
        bars = lake.read(series)
        health = series_health(bars, series.instrument, series.timeframe, now, self.settings.stale_after_bars)
        quarantined, duplicates = QuarantineStore(self.settings.quarantine_dir).counts(
            series.instrument, series.timeframe
        )
        row: dict[str, object] = {
            "venue": series.instrument.venue,
            "symbol": series.instrument.symbol,
            "timeframe": str(series.timeframe),
            "asset_class": series.instrument.asset_class.value,
            "sample": series.sample,
            "source": series.source,
            **{k: v for k, v in asdict(health).items()},
            "duplicates": duplicates,
            "quarantined": quarantined,
            "checked_at": now,
        }
        return health, {name: row[name] for name in HEALTH_COLUMNS}

    def _save(self, table: pd.DataFrame) -> None:
        frame = table.copy()
        for name in ("first", "last", "checked_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True).astype(TIMESTAMP_DTYPE)
        frame = frame.sort_values(["venue", "symbol", "timeframe"]).reset_index(drop=True)
        atomic_write_table(self.path, pa.Table.from_pandas(frame, preserve_index=False))


def _letters(symbol: str) -> str:
    """A symbol without its separators: ``BTC/USDT``, ``BTC-USDT`` and ``BTCUSDT`` are one symbol written three ways."""
    return "".join(char for char in symbol.upper() if char.isalnum())


def read_bars(
    settings: Settings,
    symbol: str,
    timeframe: str | Timeframe,
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    venue: str | None = None,
) -> pd.DataFrame:
    """Bars of ``symbol`` with ``start <= timestamp < end`` from the lake.

    When the timeframe is not stored, it is resampled from the finest stored timeframe that divides it
    (complete buckets only). With several venues holding the symbol, ``venue`` must say which one.
    """
    tf = timeframe if isinstance(timeframe, Timeframe) else Timeframe.parse(timeframe)
    lake = Lake(settings.lake_dir)
    candidates = lake.find(symbol, venue=venue)
    canonical, _ = parse_symbol(symbol)
    if not candidates:
        where = f" on venue {venue!r}" if venue else ""
        in_lake = lake.series()
        held = ", ".join(sorted({f"{s.instrument.symbol} ({s.instrument.venue})" for s in in_lake}))
        same = sorted({s.instrument.symbol for s in in_lake if _letters(s.instrument.symbol) == _letters(canonical)})
        hint = f"did you mean {same[0]!r}? " if same else ""
        raise DataError(f"symbol {canonical!r}{where} is not in the lake; {hint}"
                        + (f"the lake holds {held}; " if held else "the lake is empty; ")
                        + "ingest it first (tradeforge ingest)")
    venues = sorted({s.instrument.venue for s in candidates})
    if len(venues) > 1:
        raise DataError(f"symbol {canonical!r} is stored for several venues ({', '.join(venues)}); name one")
    lo = _utc(start)
    hi = _utc(end)
    exact = [s for s in candidates if s.timeframe == tf]
    if exact:
        return lake.read(exact[0], lo, hi)
    finer = sorted(
        (s for s in candidates if s.timeframe < tf and tf.seconds % s.timeframe.seconds == 0),
        key=lambda s: s.timeframe,
        reverse=True,
    )
    if not finer:
        stored = ", ".join(str(s.timeframe) for s in candidates)
        raise DataError(f"{canonical} has no {tf} bars and none of its stored timeframes ({stored}) divides {tf}")
    base = finer[0]
    bucket_lo = None if lo is None else lo.floor(tf.pandas_freq)
    raw = lake.read(base, bucket_lo, hi)
    bars = resample_bars(raw, base.timeframe, tf, base.instrument.asset_class)
    if lo is not None:
        bars = bars.loc[bars["timestamp"] >= lo]
    if hi is not None:
        bars = bars.loc[bars["timestamp"] + tf.delta <= hi]
    return bars.reset_index(drop=True)


def _utc(value: pd.Timestamp | str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise DataError(f"time {value!r} is not a valid date or timestamp") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def open_duckdb(settings: Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the ``bars``, ``health`` and ``quarantine`` views."""
    con = duckdb.connect()
    lake = Lake(settings.lake_dir)
    selects = []
    for series in lake.series():
        if not series.period_files():
            continue
        pattern = (series.folder / "*.parquet").as_posix()
        selects.append(
            f"SELECT {_sql_text(series.instrument.venue)} AS venue, {_sql_text(series.instrument.symbol)} AS symbol, "
            f"{_sql_text(str(series.timeframe))} AS timeframe, {str(series.sample).upper()} AS sample, "
            f"timestamp, open, high, low, close, volume FROM read_parquet({_sql_text(pattern)})"
        )
    if selects:
        con.execute("CREATE VIEW bars AS " + " UNION ALL ".join(selects))
    else:
        con.execute(
            "CREATE VIEW bars AS SELECT NULL::VARCHAR AS venue, NULL::VARCHAR AS symbol, NULL::VARCHAR AS timeframe, "
            "NULL::BOOLEAN AS sample, NULL::TIMESTAMPTZ AS timestamp, NULL::DOUBLE AS open, NULL::DOUBLE AS high, "
            "NULL::DOUBLE AS low, NULL::DOUBLE AS close, NULL::DOUBLE AS volume WHERE FALSE"
        )
    health = settings.health_path
    if health.exists():
        con.execute(f"CREATE VIEW health AS SELECT * FROM read_parquet({_sql_text(health.as_posix())})")
    else:
        con.execute(
            "CREATE VIEW health AS SELECT NULL::VARCHAR AS venue, NULL::VARCHAR AS symbol, "
            "NULL::VARCHAR AS timeframe, NULL::BIGINT AS rows WHERE FALSE"
        )
    quarantine_files = QuarantineStore(settings.quarantine_dir).files()
    if quarantine_files:
        listing = ", ".join(_sql_text(p.as_posix()) for p in quarantine_files)
        con.execute(f"CREATE VIEW quarantine AS SELECT * FROM read_parquet([{listing}], union_by_name=true)")
    else:
        con.execute(
            "CREATE VIEW quarantine AS SELECT NULL::VARCHAR AS venue, NULL::VARCHAR AS symbol, "
            "NULL::VARCHAR AS reason WHERE FALSE"
        )
    return con
