"""Data-quality gates run on every ingest, and the health figures of a stored series.

Row checks (a failing row goes to quarantine with its reason and never into the lake):

* ``missing timestamp``, ``not closed yet`` (open time + timeframe after now), ``not aligned to <tf> grid``
  (crypto: open time a multiple of the timeframe since the epoch; daily bars at 00:00 UTC),
  ``not a <calendar> session`` (daily stock bars on a date the exchange was closed);
* ``non-finite <column>`` (NaN or ±inf), ``non-positive <column>`` (prices ≤ 0), ``negative volume``;
* ``OHLC inconsistent`` (high below open/close/low, or low above open/close);
* ``duplicate timestamp`` (later identical copies) and ``conflicting duplicate`` (every copy, when the copies
  disagree: which one is right cannot be known);
* ``out of order`` (a timestamp earlier than one before it in the input);
* ``price spike``: a bad print whose neighbours disagree with it. With r_in the log return from the previous
  close to the bar's close, r_out the log jump from the bar's close to the *next bar's open*, and s the robust
  scale (1.4826 × median |close-to-close log return| over the previous 100 bars, floored at a quarter of the
  input's median), a bar is a spike when |r_in| / s and |r_out| / s both exceed ``spike_z``, they have
  opposite signs and r_out undoes at least half of r_in. A real move is kept: the market opens the next bar
  where the move closed. The last bar of an input cannot be judged yet.
* ``conflicts with stored bar`` (decided by the lake on write).

Series figures (``health``): rows, first and last bar, gaps (missing runs) and missing bars against the
instrument's calendar (24/7 for crypto; exchange sessions via exchange_calendars for stocks), duplicates and
quarantined rows seen so far, and staleness of the last bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from pipeline.domain import (
    BAR_COLUMNS,
    CALENDAR_24_7,
    PRICE_COLUMNS,
    VALUE_COLUMNS,
    Instrument,
    Timeframe,
    epoch_ms,
)

SPIKE_WINDOW = 100
CALENDAR_START = "1990-01-01"


@dataclass(frozen=True)
class Checked:
    """The outcome of the gate: rows fit for the lake, and rows held back with a ``reason`` column."""

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    duplicates: int
    out_of_order: int


@lru_cache(maxsize=8)
def exchange_calendar(name: str) -> xcals.ExchangeCalendar:
    """An exchange_calendars calendar covering 1990 to its default end."""
    return xcals.get_calendar(name, start=CALENDAR_START)


def check_bars(
    raw: pd.DataFrame,
    instrument: Instrument,
    timeframe: Timeframe,
    now: pd.Timestamp,
    spike_z: float,
    context: pd.DataFrame | None = None,
) -> Checked:
    """Run the row checks on ``raw`` (canonical columns, input order) given the stored ``context`` before it."""
    frame = raw.reset_index(drop=True)
    reasons, duplicates, out_of_order = _judge(frame, instrument, timeframe, now, spike_z, context)
    bad = reasons.flagged
    clean = frame.loc[~bad].sort_values("timestamp", kind="stable").reset_index(drop=True)
    quarantined = frame.loc[bad].copy()
    quarantined["reason"] = pd.Series(reasons.text[bad], dtype="str").to_numpy()
    return Checked(clean, quarantined.reset_index(drop=True), duplicates, out_of_order)


def row_reasons(
    raw: pd.DataFrame,
    instrument: Instrument,
    timeframe: Timeframe,
    now: pd.Timestamp,
    spike_z: float,
) -> np.ndarray:
    """The reason ``check_bars`` would quarantine each row of ``raw`` for, by input position (``""``: clean)."""
    reasons, _, _ = _judge(raw.reset_index(drop=True), instrument, timeframe, now, spike_z, None)
    return np.asarray(reasons.text, dtype=object)


def _judge(
    frame: pd.DataFrame,
    instrument: Instrument,
    timeframe: Timeframe,
    now: pd.Timestamp,
    spike_z: float,
    context: pd.DataFrame | None,
) -> tuple[_Reasons, int, int]:
    """Every row check on ``frame`` (positional index): the reasons found, duplicates and rows out of order."""
    reasons = _Reasons(len(frame))
    flag = reasons.flag

    stamps = frame["timestamp"]
    flag(stamps.isna().to_numpy(), "missing timestamp")
    for name in VALUE_COLUMNS:
        flag(~np.isfinite(frame[name].to_numpy()), f"non-finite {name}")
    for name in PRICE_COLUMNS:
        flag(frame[name].to_numpy() <= 0, f"non-positive {name}")
    flag(frame["volume"].to_numpy() < 0, "negative volume")
    o, h, low, c = (frame[n].to_numpy() for n in PRICE_COLUMNS)
    flag((h < np.maximum.reduce([o, c, low])) | (low > np.minimum(o, c)), "OHLC inconsistent")
    valid_ts = stamps.notna().to_numpy()
    flag(valid_ts & (stamps + timeframe.delta > now).fillna(False).to_numpy(), "not closed yet")
    flag(valid_ts & ~_aligned(stamps, instrument, timeframe), f"not aligned to {timeframe} grid")
    if instrument.calendar != CALENDAR_24_7 and timeframe.is_daily:
        sessions = exchange_calendar(instrument.calendar).sessions
        dates = pd.DatetimeIndex(stamps.dt.tz_localize(None))
        flag(valid_ts & ~dates.isin(sessions), f"not a {instrument.calendar} session")

    duplicates = _flag_duplicates(frame, reasons)
    out_of_order = _flag_out_of_order(frame, reasons)
    _flag_spikes(frame, reasons, spike_z, context)
    return reasons, duplicates, out_of_order


def _aligned(stamps: pd.Series, instrument: Instrument, timeframe: Timeframe) -> np.ndarray:
    ms = epoch_ms(stamps)
    if instrument.calendar == CALENDAR_24_7 or timeframe.is_daily:
        return np.asarray(ms % timeframe.millis == 0)
    return np.asarray(ms % 60_000 == 0)


class _Reasons:
    """The first reason found against each row; a row with a reason is quarantined."""

    def __init__(self, rows: int) -> None:
        self.flagged = np.zeros(rows, dtype=bool)
        self.text = np.full(rows, "", dtype=object)

    def flag(self, mask: np.ndarray | pd.Series, reason: str) -> None:
        hit = np.asarray(mask, dtype=bool) & ~self.flagged
        self.text[hit] = reason
        self.flagged |= hit

    def force(self, mask: np.ndarray, reason: str) -> None:
        self.text[mask] = reason
        self.flagged |= mask


def _flag_duplicates(frame: pd.DataFrame, reasons: _Reasons) -> int:
    live = ~reasons.flagged
    stamps = frame["timestamp"]
    dup_ts = stamps.duplicated(keep=False).to_numpy() & live
    if not dup_ts.any():
        return 0
    dups = frame.loc[dup_ts]
    distinct = dups.drop_duplicates(subset=list(BAR_COLUMNS)).groupby("timestamp").size()
    conflicting_ts = distinct[distinct > 1].index
    conflicting = dup_ts & stamps.isin(conflicting_ts).to_numpy()
    reasons.force(conflicting, "conflicting duplicate")
    later_copies = stamps.duplicated(keep="first").to_numpy() & live & ~conflicting
    reasons.force(later_copies, "duplicate timestamp")
    return int(conflicting.sum() + later_copies.sum())


def _flag_out_of_order(frame: pd.DataFrame, reasons: _Reasons) -> int:
    live = ~reasons.flagged
    ms = epoch_ms(frame["timestamp"])
    ms = np.where(live, ms, np.iinfo(np.int64).min)
    previous_max = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], ms[:-1]]))
    late = live & (ms < previous_max)
    reasons.force(late, "out of order")
    return int(late.sum())


def _flag_spikes(
    frame: pd.DataFrame, reasons: _Reasons, spike_z: float, context: pd.DataFrame | None
) -> None:
    live_idx = np.flatnonzero(~reasons.flagged)
    if len(live_idx) < 2:
        return
    live = frame.iloc[live_idx]
    order = np.argsort(epoch_ms(live["timestamp"]), kind="stable")
    positions = live_idx[order]
    prior = context.iloc[-SPIKE_WINDOW - 1 :] if context is not None else frame.iloc[:0]
    closes = np.concatenate([prior["close"].to_numpy(), live["close"].to_numpy()[order]])
    opens = np.concatenate([prior["open"].to_numpy(), live["open"].to_numpy()[order]])
    offset = len(prior)
    if len(closes) < 3:
        return
    log_close = np.log(closes)
    returns = np.diff(log_close)  # returns[i]: close[i] -> close[i + 1]
    magnitude = pd.Series(np.abs(returns))
    rolling = magnitude.rolling(SPIKE_WINDOW, min_periods=10).median().shift(1).to_numpy()
    nonzero = magnitude[magnitude > 0]
    floor = float(nonzero.median()) / 4 if len(nonzero) else 1e-12
    scale = np.fmax(1.4826 * np.nan_to_num(rolling, nan=np.inf), floor)
    r_in = returns[:-1]  # into bar i + 1
    r_out = np.log(opens[2:]) - log_close[1:-1]  # from bar i + 1's close to the next bar's open
    spikes = (
        (np.abs(r_in) / scale[:-1] > spike_z)
        & (np.abs(r_out) / scale[:-1] > spike_z)
        & (np.sign(r_in) != np.sign(r_out))
        & (np.abs(r_in + r_out) <= 0.5 * np.abs(r_in))
    )
    bar_index = np.flatnonzero(spikes) + 1 - offset
    bar_index = bar_index[(bar_index >= 0) & (bar_index < len(positions))]
    spike_rows = np.zeros(len(reasons.flagged), dtype=bool)
    spike_rows[positions[bar_index]] = True
    reasons.flag(spike_rows, "price spike")


@dataclass(frozen=True)
class Health:
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    gaps: int
    missing_bars: int
    stale: bool


def series_health(
    bars: pd.DataFrame, instrument: Instrument, timeframe: Timeframe, now: pd.Timestamp, stale_after_bars: int
) -> Health:
    """Coverage figures of a stored series (canonical, sorted, unique bars)."""
    if bars.empty:
        return Health(0, None, None, 0, 0, True)
    stamps = bars["timestamp"]
    first, last = pd.Timestamp(stamps.iloc[0]), pd.Timestamp(stamps.iloc[-1])
    present = epoch_ms(stamps)
    if instrument.calendar == CALENDAR_24_7:
        expected = None
        steps = np.diff(present) // timeframe.millis
        gaps = int((steps > 1).sum())
        missing = int((steps[steps > 1] - 1).sum())
    else:
        expected = _expected_stock_bars(instrument.calendar, timeframe, first, last)
        absent = ~np.isin(expected, present)
        gaps = int(np.count_nonzero(np.diff(np.concatenate([[0], absent.astype(np.int8)])) == 1))
        missing = int(absent.sum())
    stale = _is_stale(instrument, timeframe, last, now, stale_after_bars, expected)
    return Health(len(bars), first, last, gaps, missing, stale)


def _expected_stock_bars(calendar: str, timeframe: Timeframe, first: pd.Timestamp, last: pd.Timestamp) -> np.ndarray:
    cal = exchange_calendar(calendar)
    if timeframe.is_daily:
        sessions = cal.sessions_in_range(first.tz_localize(None), last.tz_localize(None))
        return np.asarray(sessions.tz_localize("UTC").as_unit("ms").asi8)
    minutes = cal.minutes_in_range(first, last + timeframe.delta - pd.Timedelta(minutes=1))
    ms = minutes.as_unit("ms").asi8
    return np.unique((ms // timeframe.millis) * timeframe.millis)


def _is_stale(
    instrument: Instrument,
    timeframe: Timeframe,
    last: pd.Timestamp,
    now: pd.Timestamp,
    stale_after_bars: int,
    expected: np.ndarray | None,
) -> bool:
    """Whether bars that should exist by now are missing at the end of the series."""
    if instrument.calendar == CALENDAR_24_7:
        return bool(now - (last + timeframe.delta) > stale_after_bars * timeframe.delta)
    cal = exchange_calendar(instrument.calendar)
    if now <= last:
        return False
    if timeframe.is_daily:
        first = last.tz_localize(None).normalize() + pd.Timedelta(days=1)
        through = min(now.tz_localize(None).normalize(), cal.last_session)
        if first > through:
            return False
        sessions = cal.sessions_in_range(first, through)
        closed = [s for s in sessions if cal.session_close(s) <= now]
        return len(closed) >= stale_after_bars
    minutes = cal.minutes_in_range(last + timeframe.delta, now) if last + timeframe.delta < now else []
    return len(minutes) >= stale_after_bars * timeframe.seconds // 60

