"""What every market-data source provides, and the rules all of them share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pandas as pd

from pipeline.domain import Instrument, Timeframe

ProgressCallback = Callable[[int], None]
"""Called with the number of rows just fetched, so a caller can drive a progress bar."""


class BarSource(Protocol):
    """A source of canonical bar frames (``pipeline.domain``) holding closed bars only."""

    name: str
    resumable: bool
    """True when a fetch can start after the last stored bar (a venue's history); False for inputs that are
    read whole (files), whose rows may also fill in history before the last stored bar."""

    def instrument(self, symbol: str) -> Instrument:
        """The instrument this source knows for ``symbol``; ``DataError`` when it does not know it."""
        ...

    def fetch(self, instrument: Instrument, timeframe: Timeframe, since: pd.Timestamp | None,
              progress: ProgressCallback | None = None) -> pd.DataFrame:
        """Closed bars with open time ``>= since`` (all available history when ``since`` is None)."""
        ...


def closed_only(bars: pd.DataFrame, timeframe: Timeframe, now: pd.Timestamp) -> pd.DataFrame:
    """Drop bars that have not closed at ``now`` (open time + timeframe > now)."""
    if bars.empty:
        return bars
    closed = bars["timestamp"] + timeframe.delta <= now
    return bars.loc[closed].reset_index(drop=True)
