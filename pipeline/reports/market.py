"""Read-only queries over the market-data lake: the catalogue, chart data and data health.

Chart data is down-sampled for long ranges: when the requested range holds more than ``max_bars`` bars, the
bars are resampled to the finest coarser timeframe that brings the count under the limit (the result says so,
and which timeframe it used). The SMA is computed on the requested timeframe and sampled at the close of each
shown bar, so down-sampling does not change its value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow.parquet as pq

from pipeline.data.catalog import QuarantineStore, open_duckdb, read_bars
from pipeline.data.lake import Lake, read_bar_file
from pipeline.data.quality import series_health
from pipeline.data.resample import resample_bars
from pipeline.domain import DataError, Timeframe, epoch_ms
from pipeline.settings import Settings

DISPLAY_TIMEFRAMES = tuple(Timeframe.parse(t) for t in ("1m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"))
SMA_WINDOW = 50


def catalog(settings: Settings) -> pd.DataFrame:
    """Every stored series: venue, symbol, timeframe, asset class, source, sample flag, first and last bar, and
    how many bars it holds."""
    lake = Lake(settings.lake_dir)
    rows = []
    for s in lake.series():
        files = s.period_files()
        first = read_bar_file(files[0])["timestamp"].min() if files else None
        bars = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
        rows.append((s.instrument.venue, s.instrument.symbol, str(s.timeframe), s.timeframe.seconds,
                     s.instrument.asset_class.value, s.source, s.sample, first, lake.last_timestamp(s), bars))
    columns = ["venue", "symbol", "timeframe", "seconds", "asset_class", "source", "sample", "first", "last", "bars"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["venue", "symbol", "seconds"]).reset_index(drop=True)


def chart_timeframes(catalog_frame: pd.DataFrame, venue: str, symbol: str) -> list[str]:
    """Timeframes a chart of ``symbol`` on ``venue`` can show: the stored ones, and the standard coarser ones
    that the finest stored timeframe resamples to."""
    mine = catalog_frame.loc[(catalog_frame["venue"] == venue) & (catalog_frame["symbol"] == symbol)]
    if mine.empty:
        raise DataError(f"{symbol} on {venue} is not in the lake")
    stored = [Timeframe(int(seconds)) for seconds in mine["seconds"]]
    finest = min(stored)
    derived = [t for t in DISPLAY_TIMEFRAMES if t > finest and t.seconds % finest.seconds == 0]
    return [str(t) for t in sorted(set(stored) | set(derived))]


def series_span(catalog_frame: pd.DataFrame, venue: str, symbol: str,
                timeframe: str | Timeframe) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last bar of the stored series that serves ``timeframe`` (as ``read_bars`` chooses it: the
    series of that timeframe, else the coarsest stored one that divides it)."""
    tf = timeframe if isinstance(timeframe, Timeframe) else Timeframe.parse(timeframe)
    mine = catalog_frame.loc[(catalog_frame["venue"] == venue) & (catalog_frame["symbol"] == symbol)]
    serving = mine.loc[(mine["seconds"] <= tf.seconds) & (tf.seconds % mine["seconds"] == 0)]
    if serving.empty:
        raise DataError(f"{symbol} on {venue} has no stored timeframe that gives {tf} bars")
    row = serving.sort_values("seconds").iloc[-1]
    if pd.isna(row["first"]) or pd.isna(row["last"]):
        raise DataError(f"{symbol} {row['timeframe']} on {venue} holds no bars")
    return pd.Timestamp(row["first"]), pd.Timestamp(row["last"])


@dataclass(frozen=True)
class ChartData:
    """Bars to draw, their SMA, trade markers and (when a production model exists) its probability."""

    venue: str
    symbol: str
    timeframe: Timeframe
    """The requested timeframe."""
    shown_timeframe: Timeframe
    """The timeframe drawn: coarser than ``timeframe`` when the range was down-sampled."""
    source_bars: int
    """Bars of the requested timeframe in the range."""
    bars: pd.DataFrame
    """timestamp, open, high, low, close, volume and ``sma`` (NaN until the window is full)."""
    entries: pd.DataFrame
    """timestamp, price, side, sleeve, reason of trade entries inside the shown range."""
    exits: pd.DataFrame
    """timestamp, price, pnl, sleeve, reason of trade exits inside the shown range."""

    @property
    def downsampled(self) -> bool:
        return self.shown_timeframe != self.timeframe


def display_timeframe(timeframe: Timeframe, bars: int, max_bars: int) -> Timeframe:
    """The finest timeframe, at least ``timeframe`` and a multiple of it, that shows ``bars`` bars of
    ``timeframe`` in at most ``max_bars`` bars (the coarsest display timeframe when none does)."""
    if max_bars < 10:
        raise DataError(f"max_bars {max_bars} is not valid: give at least 10")
    if bars <= max_bars:
        return timeframe
    candidates = [t for t in DISPLAY_TIMEFRAMES if t > timeframe and t.seconds % timeframe.seconds == 0]
    for candidate in candidates:
        if bars * timeframe.seconds / candidate.seconds <= max_bars:
            return candidate
    return candidates[-1] if candidates else timeframe


def chart_data(
    settings: Settings,
    venue: str,
    symbol: str,
    timeframe: str | Timeframe,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    trades: pd.DataFrame | None = None,
    max_bars: int = 2000,
) -> ChartData:
    """Bars of one series in ``[start, end)`` for a chart, down-sampled above ``max_bars``, with an SMA 50
    and the entries and exits of ``trades`` (a frame from :func:`pipeline.reports.trades`) on this symbol."""
    tf = timeframe if isinstance(timeframe, Timeframe) else Timeframe.parse(timeframe)
    lookback = None if start is None else start - tf.delta * (SMA_WINDOW - 1)
    raw = read_bars(settings, symbol, tf, lookback, end, venue)
    raw = raw.assign(sma=raw["close"].rolling(SMA_WINDOW, min_periods=SMA_WINDOW).mean())
    if start is not None:
        raw = raw.loc[raw["timestamp"] >= start].reset_index(drop=True)
    shown_tf = display_timeframe(tf, len(raw), max_bars)
    bars = raw
    if shown_tf != tf and len(raw):
        series = Lake(settings.lake_dir).find(symbol, venue=venue)
        asset_class = series[0].instrument.asset_class
        bars = resample_bars(raw, tf, shown_tf, asset_class, complete_only=False)
        keys = (epoch_ms(raw["timestamp"]) // shown_tf.millis) * shown_tf.millis
        last_sma = raw.groupby(keys)["sma"].last()
        bars = bars.assign(sma=last_sma.reindex(epoch_ms(bars["timestamp"])).to_numpy())
    entries, exits = _markers(trades, symbol, bars, shown_tf)
    return ChartData(venue=venue, symbol=symbol, timeframe=tf, shown_timeframe=shown_tf, source_bars=len(raw),
                     bars=bars.reset_index(drop=True), entries=entries, exits=exits)


def _markers(trades: pd.DataFrame | None, symbol: str, bars: pd.DataFrame,
             tf: Timeframe) -> tuple[pd.DataFrame, pd.DataFrame]:
    entry_columns = ["timestamp", "price", "side", "sleeve", "reason"]
    exit_columns = ["timestamp", "price", "pnl", "sleeve", "reason"]
    if trades is None or trades.empty or bars.empty:
        return pd.DataFrame(columns=entry_columns), pd.DataFrame(columns=exit_columns)
    lo = bars["timestamp"].iloc[0]
    hi = bars["timestamp"].iloc[-1] + tf.delta
    mine = trades.loc[trades["symbol"] == symbol]
    inside_in = mine.loc[(mine["entry_time"] >= lo) & (mine["entry_time"] < hi)]
    inside_out = mine.loc[(mine["exit_time"] >= lo) & (mine["exit_time"] < hi)]
    entries = pd.DataFrame({"timestamp": inside_in["entry_time"], "price": inside_in["entry_price"],
                            "side": inside_in["side"], "sleeve": inside_in["sleeve"],
                            "reason": inside_in["entry_reason"]}, columns=entry_columns)
    exits = pd.DataFrame({"timestamp": inside_out["exit_time"], "price": inside_out["exit_price"],
                          "pnl": inside_out["pnl"], "sleeve": inside_out["sleeve"],
                          "reason": inside_out["exit_reason"]}, columns=exit_columns)
    return (entries.sort_values("timestamp", ignore_index=True),
            exits.sort_values("timestamp", ignore_index=True))


def data_health(settings: Settings, now: pd.Timestamp) -> pd.DataFrame:
    """Coverage per stored series, computed from the lake (nothing is written): rows, first, last, gaps,
    missing bars, quarantined rows (of which duplicates) and staleness against ``now``."""
    quarantine = QuarantineStore(settings.quarantine_dir)
    lake = Lake(settings.lake_dir)
    rows = []
    for series in lake.series():
        bars = lake.read(series)
        health = series_health(bars, series.instrument, series.timeframe, now, settings.stale_after_bars)
        quarantined, duplicates = quarantine.counts(series.instrument, series.timeframe)
        expected = health.rows + health.missing_bars
        rows.append((series.instrument.venue, series.instrument.symbol, str(series.timeframe), series.sample,
                     health.rows, health.first, health.last, health.gaps, health.missing_bars,
                     health.rows / expected if expected else None, quarantined, duplicates, health.stale))
    return pd.DataFrame(rows, columns=["venue", "symbol", "timeframe", "sample", "rows", "first", "last", "gaps",
                                       "missing_bars", "coverage", "quarantined", "duplicates", "stale"])


def quarantine_rows(settings: Settings, limit: int = 500) -> pd.DataFrame:
    """The most recently quarantined rows (newest ingest first), with their reason and source."""
    if limit < 1:
        raise DataError(f"limit {limit} is not valid: give at least 1")
    columns = ["venue", "symbol", "timeframe", "timestamp", "reason", "source", "ingested_at"]
    if not QuarantineStore(settings.quarantine_dir).files():
        return pd.DataFrame(columns=columns)
    con = open_duckdb(settings)
    try:
        frame: pd.DataFrame = con.sql(
            f"SELECT {', '.join(columns)} FROM quarantine ORDER BY ingested_at DESC, timestamp LIMIT {int(limit)}"
        ).to_arrow_table().to_pandas()
    finally:
        con.close()
    return frame


def quarantine_reasons(settings: Settings) -> pd.DataFrame:
    """Quarantined rows counted per series and reason."""
    columns = ["venue", "symbol", "timeframe", "reason", "rows"]
    if not QuarantineStore(settings.quarantine_dir).files():
        return pd.DataFrame(columns=columns)
    con = open_duckdb(settings)
    try:
        frame: pd.DataFrame = con.sql(
            "SELECT venue, symbol, timeframe, reason, count(*) AS rows FROM quarantine "
            "GROUP BY ALL ORDER BY venue, symbol, timeframe, rows DESC"
        ).to_arrow_table().to_pandas()
    finally:
        con.close()
    return frame

