"""A fake of Coins.ph's spot REST API (ccxt ``coinsph``) on 127.0.0.1: the fake Binance under Coins.ph's paths.

Coins.ph runs on Binance's exchange software: its public market data is Binance's (``exchangeInfo``, ``time``,
``klines``, the same parameters and answers) under ``/openapi/...`` instead of ``/api/v3/...``. ccxt.pro streams
no Coins.ph candles, which makes it the exchange to run a websocket-less live feed against. Everything else
(bars, the venue's clock, faults, recorded requests) is ``FakeBinance``'s.
"""

from __future__ import annotations

from typing import Final

from tests.fakes.binance_http import Reply
from tests.fakes.binance_server import API_PREFIX, FakeBinance

PATHS: Final = {
    "/openapi/v1/exchangeInfo": "exchangeInfo",
    "/openapi/v1/time": "time",
    "/openapi/quote/v1/klines": "klines",
}
"""Coins.ph's public market-data paths and the Binance endpoint each one is."""


class FakeCoinsph(FakeBinance):
    """The fake Binance answering Coins.ph's market-data paths; point ccxt's ``coinsph`` at ``url``."""

    thread_name = "fake-coinsph"

    def answer(self, method: str, path: str, params: dict[str, str], *, raw_query: str = "", raw_body: str = "",
               api_key: str | None = None) -> Reply:
        endpoint = PATHS.get(path)
        served = path if endpoint is None else API_PREFIX + endpoint
        return super().answer(method, served, params, raw_query=raw_query, raw_body=raw_body, api_key=api_key)
