"""Resampling bars to a higher timeframe with correct OHLCV aggregation.

A target bar takes the first ``open``, the highest ``high``, the lowest ``low``, the last ``close`` and the
sum of ``volume`` of the source bars inside it. Buckets are aligned to the UTC epoch (so 5m bars open at
:00, :05, ...; daily bars at 00:00 UTC). For stocks resampled to 1d, the bucket is the New York session
date, stamped 00:00 UTC of that date (the convention of daily stock bars).

By default only *complete* buckets are returned (every source bar inside the bucket is present): a bar built
from part of its interval is a different bar from the one the venue reports. ``complete_only=False`` keeps
partial buckets. The completeness rule is not applied to stock sessions, whose length varies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, DataError, Timeframe, empty_bars, epoch_ms


def resample_bars(
    bars: pd.DataFrame,
    source: Timeframe,
    target: Timeframe,
    asset_class: AssetClass = AssetClass.CRYPTO,
    complete_only: bool = True,
) -> pd.DataFrame:
    """Aggregate canonical ``bars`` of timeframe ``source`` into bars of timeframe ``target``."""
    if target.seconds % source.seconds != 0 or target.seconds < source.seconds:
        raise DataError(f"cannot resample {source} bars to {target}: {target} is not a multiple of {source}")
    if bars.empty:
        return empty_bars()
    if target == source:
        return bars.reset_index(drop=True)
    stamps = bars["timestamp"]
    ms = epoch_ms(stamps)
    if asset_class is AssetClass.STOCK and target.is_daily:
        local = stamps.dt.tz_convert("America/New_York").dt.tz_localize(None).dt.normalize()
        keys = epoch_ms(local)
        complete_only = False
    else:
        keys = (ms // target.millis) * target.millis
    if np.any(np.diff(ms) <= 0):
        raise DataError("bars to resample must be sorted by timestamp with unique timestamps")
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    out = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(keys[starts], unit="ms", utc=True).astype(TIMESTAMP_DTYPE),
            "open": bars["open"].to_numpy()[starts],
            "high": np.maximum.reduceat(bars["high"].to_numpy(), starts),
            "low": np.minimum.reduceat(bars["low"].to_numpy(), starts),
            "close": bars["close"].to_numpy()[np.r_[starts[1:], len(keys)] - 1],
            "volume": np.add.reduceat(bars["volume"].to_numpy(), starts),
        }
    )
    if complete_only:
        out = out.loc[counts == target.seconds // source.seconds]
    return out.reset_index(drop=True)
