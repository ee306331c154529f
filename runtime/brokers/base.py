"""The broker protocol: how fills decided by the engine become orders and fills on record."""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from pipeline.state import FillRecord, OrderRecord


class Broker(Protocol):
    """Where a sleeve's orders go and where its fills come from."""

    name: str

    def settle(self, sleeve: str, symbol: str, fills: pd.DataFrame) -> tuple[list[OrderRecord], list[FillRecord]]:
        """Orders and fills for the engine fills of one step (columns as ``EngineResult.fills``)."""
        ...
