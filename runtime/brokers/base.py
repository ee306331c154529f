"""The broker protocol: how fills decided by the engine become orders and fills on record."""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from pipeline.engine.core import Engine
from pipeline.state import FillRecord, OrderRecord


class Broker(Protocol):
    """Where a sleeve's orders go and where its fills come from."""

    name: str
    external_fills: bool
    """True when fills come from a venue (the engine then sends intents instead of simulating fills)."""

    def route(self, sleeve: str, symbol: str, engine: Engine, bar_ms: int) -> tuple[list[OrderRecord],
                                                                                    list[FillRecord]]:
        """After each bar: send the engine's new orders, book the venue's fills in it; returns the records."""
        ...

    def settle(self, sleeve: str, symbol: str, fills: pd.DataFrame) -> tuple[list[OrderRecord], list[FillRecord]]:
        """Orders and fills for the engine fills of one step (columns as ``EngineResult.fills``)."""
        ...
