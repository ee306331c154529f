"""Ingest: source → quality gate → lake (+ quarantine) → health, incremental and idempotent.

Network sources resume after the last stored bar; file imports read the whole input, and rows already stored
are skipped, so running the same ingest twice writes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.data.catalog import HealthStore, QuarantineStore
from pipeline.clock import Clock
from pipeline.domain import SAMPLE_VENUE, DataError, Timeframe
from pipeline.data.lake import Lake
from pipeline.data.quality import SPIKE_WINDOW, check_bars
from pipeline.settings import Settings
from pipeline.data.sources.base import BarSource, ProgressCallback


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did; ``first``/``last`` are the first and last bar written (None when none)."""

    source: str
    venue: str
    symbol: str
    timeframe: str
    sample: bool
    rows_fetched: int
    rows_written: int
    rows_quarantined: int
    duplicates: int
    out_of_order: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    series_rows: int
    series_last: pd.Timestamp | None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        def iso(value: pd.Timestamp | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "source": self.source,
            "venue": self.venue,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "sample": self.sample,
            "rows_fetched": self.rows_fetched,
            "rows_written": self.rows_written,
            "rows_quarantined": self.rows_quarantined,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "first": iso(self.first),
            "last": iso(self.last),
            "series_rows": self.series_rows,
            "series_last": iso(self.series_last),
            "quarantine_reasons": self.quarantine_reasons,
        }


def ingest(
    source: BarSource,
    symbol: str,
    timeframe: Timeframe,
    settings: Settings,
    clock: Clock,
    since: pd.Timestamp | None = None,
    progress: ProgressCallback | None = None,
) -> IngestReport:
    """Fetch ``symbol`` at ``timeframe`` from ``source`` and add its good bars to the lake."""
    instrument = source.instrument(symbol)
    sample = source.name == SAMPLE_VENUE
    if (instrument.venue == SAMPLE_VENUE) != sample:
        raise DataError(
            f"venue {SAMPLE_VENUE!r} is reserved for the synthetic sample market; "
            f"{source.name} data is real: file it under another venue"
        )
    lake = Lake(settings.lake_dir)
    existing = lake.get(instrument, timeframe)
    start = since
    if existing is not None and source.resumable:
        stored_last = lake.last_timestamp(existing)
        if stored_last is not None:
            resume = stored_last + timeframe.delta
            start = resume if start is None else max(start, resume)
    raw = source.fetch(instrument, timeframe, start, progress)
    now = clock.now()
    context = lake.tail(existing, SPIKE_WINDOW + 1) if existing is not None else None
    if context is not None and not raw.empty and raw["timestamp"].notna().any():
        context = context.loc[context["timestamp"] < raw["timestamp"].min()]
    checked = check_bars(raw, instrument, timeframe, now, settings.spike_z, context)
    quarantined = checked.quarantined
    series = existing
    written = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    if not checked.clean.empty:
        series = lake.register(instrument, timeframe, source.name, sample)
        result = lake.write(series, checked.clean)
        written, first, last = result.rows_written, result.first, result.last
        if not result.conflicts.empty:
            clash = result.conflicts.assign(reason="conflicts with stored bar")
            quarantined = pd.concat([quarantined, clash], ignore_index=True)
    if not quarantined.empty:
        QuarantineStore(settings.quarantine_dir).add(instrument, timeframe, quarantined, source.name, now)
    health = None
    if series is not None:
        health = HealthStore(settings).refresh(lake, series, now)
    return IngestReport(
        source=source.name,
        venue=instrument.venue,
        symbol=instrument.symbol,
        timeframe=str(timeframe),
        sample=sample,
        rows_fetched=len(raw),
        rows_written=written,
        rows_quarantined=len(quarantined),
        duplicates=checked.duplicates,
        out_of_order=checked.out_of_order,
        first=first,
        last=last,
        series_rows=health.rows if health else 0,
        series_last=health.last if health else None,
        quarantine_reasons={str(k): int(v) for k, v in quarantined["reason"].value_counts().items()}
        if not quarantined.empty
        else {},
    )
