"""The vocabulary of tradeforge, imported by everything else and importing nothing of it.

* :mod:`pipeline.domain.market` — instruments, timeframes and the canonical bar frame (re-exported here);
* :mod:`pipeline.domain.values` — exact money and UTC time: the checks every entity applies and the column
  types that store them exactly, and :class:`~pipeline.domain.values.Entity`, the frozen base of every entity;
* :mod:`pipeline.domain.trading` — sides, order statuses, and the trading entities: ``Order``, ``Fill``,
  ``Position`` and ``Trade``. The state's tables extend them (SQLModel's base-model + table-model pattern), so
  each entity's fields are declared once.
"""

from pipeline.domain.market import (
    BAR_COLUMNS,
    CALENDAR_24_7,
    PRICE_COLUMNS,
    SAMPLE_VENUE,
    STOCK_CALENDAR,
    TIMESTAMP_DTYPE,
    VALUE_COLUMNS,
    AssetClass,
    DataError,
    Instrument,
    Timeframe,
    bars_equal,
    canonical_bars,
    empty_bars,
    epoch_ms,
    parse_symbol,
    parse_utc,
    symbol_key,
    to_utc_ms,
    utc_from_ms,
)

__all__ = [
    "BAR_COLUMNS", "CALENDAR_24_7", "PRICE_COLUMNS", "SAMPLE_VENUE", "STOCK_CALENDAR", "TIMESTAMP_DTYPE",
    "VALUE_COLUMNS", "AssetClass", "DataError", "Instrument", "Timeframe", "bars_equal", "canonical_bars",
    "empty_bars", "epoch_ms", "parse_symbol", "parse_utc", "symbol_key", "to_utc_ms", "utc_from_ms",
]
