"""The fake Binance trading tests' setup: the fake with balances, a real ccxt client on it, raw signed requests."""

# The client is pointed at the fake exactly as ``pipeline.data.sources.ccxt_source`` does it (spot catalogue only,
# the spot host's REST URLs rewritten), so these tests also pin down how ccxt talks to Binance when it trades: which
# endpoints it calls, what it sends and how it reads the answers and the errors.

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
import requests

from pipeline.data.sources.ccxt_source import _point_at, _spot_markets_only
from tests.fakes.binance_server import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    Balance,
    FakeBinance,
)

BTC_USDT = "BTC/USDT"
PRICE = Decimal(30_000)
START_USDT = Decimal(100_000)
START_BTC = Decimal("0.5")


@pytest.fixture(scope="module")
def exchange() -> Iterator[FakeBinance]:
    with FakeBinance(balances={"USDT": START_USDT, "BTC": START_BTC}) as server:
        yield server


@pytest.fixture
def server(exchange: FakeBinance) -> Iterator[FakeBinance]:
    """The fake with its starting balances, no orders, no faults, and BTC/USDT at 30 000."""
    exchange.reset()
    exchange.set_price(BTC_USDT, PRICE)
    yield exchange
    exchange.reset()


def make_client(
    server: FakeBinance, *, secret: str = DEFAULT_API_SECRET, api_key: str = DEFAULT_API_KEY, timeout_ms: int = 3_000
) -> Any:
    """A real ccxt.binance client with credentials, pointed at ``server`` as CcxtSource points it."""
    client = ccxt.binance({"apiKey": api_key, "secret": secret, "timeout": timeout_ms, "enableRateLimit": False})
    _spot_markets_only(client)
    _point_at(client, server.url)
    return client


@pytest.fixture
def client(server: FakeBinance) -> Iterator[Any]:
    made = make_client(server)
    yield made
    made.session.close()


def usdt(server: FakeBinance) -> Balance:
    return server.balances()["USDT"]


def btc(server: FakeBinance) -> Balance:
    return server.balances()["BTC"]


def signed_get(
    server: FakeBinance, endpoint: str, query: str, *, api_key: str | None = DEFAULT_API_KEY
) -> tuple[int, Any]:
    """A raw GET to the fake, ``query`` sent as is (sign it yourself); returns (status, JSON body)."""
    headers = {} if api_key is None else {"X-MBX-APIKEY": api_key}
    response = requests.get(f"{server.url}/api/v3/{endpoint}?{query}", headers=headers, timeout=3)
    return response.status_code, response.json()


def sign(query: str, secret: str = DEFAULT_API_SECRET) -> str:
    return query + "&signature=" + hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
