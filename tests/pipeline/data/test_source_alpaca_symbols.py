"""The symbols the Alpaca source takes (US stocks on the NYSE calendar) and the ones it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.domain import AssetClass, DataError, Instrument
from tests.fakes.alpaca_server import AlpacaServer
from tests.pipeline.data import alpaca_source_helpers
from tests.pipeline.data.alpaca_source_helpers import DAILY, fetch_aapl, make_source

_no_outside_config = alpaca_source_helpers._no_outside_config  # settings from the test alone (autouse)
aapl = alpaca_source_helpers.aapl  # the real AAPL daily bars, served by the Alpaca stand-in
server = alpaca_source_helpers.server


# -- symbols -------------------------------------------------------------------------------------------------


def test_instrument_is_a_us_stock_on_the_nyse_calendar(tmp_path: Path, server: AlpacaServer) -> None:
    source, _ = make_source(tmp_path, server)

    instrument = source.instrument(" aapl ")

    assert instrument == Instrument.of("alpaca", "AAPL")
    assert instrument.asset_class is AssetClass.STOCK and instrument.calendar == "XNYS"
    assert source.name == "alpaca"


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/USDT:USDT"])
def test_crypto_symbols_are_refused(tmp_path: Path, server: AlpacaServer, symbol: str) -> None:
    source, _ = make_source(tmp_path, server)

    with pytest.raises(DataError, match=symbol):
        source.instrument(symbol)
    with pytest.raises(DataError, match="US stock"):
        source.fetch(Instrument.of("binance", symbol), DAILY, None)
    assert server.bar_requests() == []


def test_malformed_symbol_is_refused(tmp_path: Path, server: AlpacaServer) -> None:
    source, _ = make_source(tmp_path, server)

    with pytest.raises(DataError, match="AA PL"):
        source.instrument("AA PL")


def test_unknown_symbol_is_a_data_error_naming_it(tmp_path: Path, server: AlpacaServer) -> None:
    source, sleeps = make_source(tmp_path, server)

    with pytest.raises(DataError, match="ZZZZQ"):
        source.fetch(source.instrument("ZZZZQ"), DAILY, None)
    assert len(server.bar_requests()) == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [400, 404, 422])
def test_symbol_rejected_by_alpaca_is_a_data_error_naming_it(
    tmp_path: Path, server: AlpacaServer, status: int
) -> None:
    server.fail_next(status=status)
    source, sleeps = make_source(tmp_path, server)

    with pytest.raises(DataError, match=f"'AAPL'.*HTTP {status}"):
        fetch_aapl(source)
    assert sleeps == []
