"""The bar-frame helpers every feed shares: canonical frames, epoch-ms times, feed keys and row look-ups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.clock import Clock
from pipeline.domain import DataError, Timeframe, canonical_bars, empty_bars


def bars_of(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a canonical bar frame, sorted by open time with unique times (the last one wins)."""
    if frame.empty:
        return empty_bars()
    bars = canonical_bars(frame)
    bars = bars.sort_values("timestamp", kind="stable").drop_duplicates("timestamp", keep="last")
    return bars.reset_index(drop=True)


def floor_ms(ms: int, step_ms: int) -> int:
    """``ms`` rounded down to a multiple of ``step_ms``."""
    return ms - ms % step_ms


def now_ms(clock: Clock) -> int:
    """The clock's now in epoch milliseconds."""
    return int(clock.now().value // 1_000_000)


def stamp(ms: int | None) -> str:
    """An epoch-ms time for messages."""
    return "none" if ms is None else pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()


def rows_of(ms: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each of ``times``, its row in the ascending ``ms`` (-1 where absent)."""
    if len(ms) == 0:
        return np.full(len(times), -1, dtype=np.int64)
    index = np.searchsorted(ms, times)
    found = (index < len(ms)) & (ms[np.minimum(index, len(ms) - 1)] == times)
    return np.where(found, index, -1).astype(np.int64)


def check_key(key: str, timeframe: Timeframe) -> None:
    """A feed key ``venue:SYMBOL:tf`` whose timeframe, when it names one, is the feed's."""
    parts = key.rsplit(":", 1)
    if not key.strip() or len(parts) != 2 or not parts[1]:
        raise DataError(f"feed key {key!r} is not valid: use venue:SYMBOL:timeframe (e.g. binance:BTC/USDT:1m)")
    if Timeframe.parse(parts[1]) != timeframe:
        raise DataError(f"feed key {key!r} names timeframe {parts[1]!r}, but this feed delivers {timeframe} bars")


def key_timeframe(key: str, default: Timeframe) -> Timeframe:
    """The timeframe a feed key ``venue:SYMBOL:tf`` names (``default`` when it names none)."""
    parts = key.rsplit(":", 1)
    try:
        return Timeframe.parse(parts[1]) if len(parts) == 2 and parts[1] else default
    except DataError:
        return default
