"""Whether an ingest that wrote no bar should have written some.

A series fed by a venue (a ccxt exchange, Alpaca, the sample market: sources that resume after the last stored
bar) *should* get bars when it is stale once the ingest is done, by the same rule as the data-health table: its
last bar is more than ``stale_after_bars`` bars old, counted on its market's calendar (24/7 for crypto; only
sessions for stocks, so a weekend or a holiday never counts). When the venue then sent no new bar, the ingest's
job did not happen. An up-to-date series that got no new bar (none has closed since the last run) is fine, and so
is a file import that holds nothing new: a file holds what it holds.
"""

from __future__ import annotations

import pandas as pd

from pipeline.data.catalog import HealthStore
from pipeline.data.ingest import IngestReport
from pipeline.data.universe import FILE, SeriesSpec
from pipeline.settings import Settings


def missing_bars(spec: SeriesSpec, report: IngestReport, settings: Settings) -> str | None:
    """Why the ingest of ``spec`` (which produced ``report``) should have written bars and did not; None when it
    wrote some, or did not need to (module documentation)."""
    if report.rows_written > 0 or spec.source == FILE:
        return None
    if report.series_last is None:
        return (f"{spec.text}: the venue sent no bar ({report.rows_fetched} fetched, {report.rows_quarantined} "
                "quarantined) and the lake holds none of this series")
    health = HealthStore(settings).load()
    row = health.loc[(health["venue"] == report.venue) & (health["symbol"] == report.symbol)
                     & (health["timeframe"] == report.timeframe)]
    if row.empty or not bool(row["stale"].iloc[-1]):
        return None
    checked = pd.Timestamp(row["checked_at"].iloc[-1])
    last = pd.Timestamp(report.series_last)
    return (f"{spec.text}: the venue sent no new bar ({report.rows_fetched} fetched, {report.rows_quarantined} "
            f"quarantined) and the last stored bar opened at {last.isoformat()}, {_age(checked - last)} before this "
            f"ingest: more than {settings.stale_after_bars} {report.timeframe} bars behind "
            "(TRADEFORGE_STALE_AFTER_BARS)")


def _age(delta: pd.Timedelta) -> str:
    hours = delta / pd.Timedelta(hours=1)
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
