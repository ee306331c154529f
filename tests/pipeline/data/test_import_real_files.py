"""Every real OHLCV file of shared/data imports exactly, and importing it again writes nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.catalog import read_bars
from pipeline.data.ingest import ingest
from pipeline.data.sources.files import FileSource
from pipeline.domain import Timeframe, bars_equal
from pipeline.settings import Settings
from tests.conftest import shared_file

# file, symbol, venue, timeframe
REAL_FILES = [
    ("binance_BTC-USDT_1m.parquet", "BTC/USDT", "binance", "1m"),
    ("binance_BTC-USDT_5m.parquet", "BTC/USDT", "binance", "5m"),
    ("binance_BTC-USDT_1h.parquet", "BTC/USDT", "binance", "1h"),
    ("binance_BTC-USDT_1d.parquet", "BTC/USDT", "binance", "1d"),
    ("binance_ETH-USDT_1h.parquet", "ETH/USDT", "binance", "1h"),
    ("binance_ETH-USDT_1d.parquet", "ETH/USDT", "binance", "1d"),
    ("binance_BTC-USDT-PERP_5m.parquet", "BTC/USDT:USDT", "binance", "5m"),
    ("binance_BTC-USDT-PERP_1h.parquet", "BTC/USDT:USDT", "binance", "1h"),
    ("binance_ETH-BTC_5m.parquet", "ETH/BTC", "binance", "5m"),
    ("binance_XRP-ETH_1m.parquet", "XRP/ETH", "binance", "1m"),
    ("binance_XRP-ETH_5m.parquet", "XRP/ETH", "binance", "5m"),
    ("quandlwiki_AAPL_1d.parquet", "AAPL", "us", "1d"),
    ("quandlwiki_MSFT_1d.parquet", "MSFT", "us", "1d"),
    ("quandlwiki_IBM_1d.parquet", "IBM", "us", "1d"),
    ("quandlwiki_GOOGL_1d.parquet", "GOOGL", "us", "1d"),
    ("index_GSPC_1d.parquet", "GSPC", "index", "1d"),
    ("index_IXIC_1d.parquet", "IXIC", "index", "1d"),
    ("backtrader_NVDA_1d.parquet", "NVDA", "us", "1d"),
]


@pytest.mark.slow  # every real file of shared/data through the whole ingest, twice
@pytest.mark.parametrize(("name", "symbol", "venue", "timeframe"), REAL_FILES, ids=[f[0] for f in REAL_FILES])
def test_real_file_round_trips_exactly_and_reimport_writes_nothing(
    name: str, symbol: str, venue: str, timeframe: str, settings: Settings, clock: FixedClock
) -> None:
    path = shared_file(name)
    original = pd.read_parquet(path)
    source = FileSource(path, clock, venue)
    tf = Timeframe.parse(timeframe)

    first = ingest(source, symbol, tf, settings, clock)
    assert first.rows_quarantined == 0, first.quarantine_reasons
    assert first.rows_written == len(original)
    assert first.first == original["timestamp"].iloc[0]
    assert first.last == original["timestamp"].iloc[-1]

    stored = read_bars(settings, symbol, tf)
    assert bars_equal(stored, original)

    again = ingest(source, symbol, tf, settings, clock)
    assert again.rows_written == 0
    assert again.rows_quarantined == 0
    assert again.series_rows == len(original)
