"""The only reader of wall time. Everything else receives a ``Clock`` and asks it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

import pandas as pd


class Clock(Protocol):
    def now(self) -> pd.Timestamp:
        """The current time, tz-aware UTC."""
        ...


class SystemClock:
    """Wall time."""

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(datetime.now(UTC))


class FixedClock:
    """A clock that says what it is told: for replays and tests."""

    def __init__(self, at: pd.Timestamp | str) -> None:
        stamp = pd.Timestamp(at)
        self._now = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

    def now(self) -> pd.Timestamp:
        return self._now

    def set(self, at: pd.Timestamp) -> None:
        self._now = at.tz_convert("UTC")
