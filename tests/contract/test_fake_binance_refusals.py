"""The fake Binance's refusals through the real ccxt client: rejected orders and failed authentication."""

from __future__ import annotations

import time
from typing import Any

import ccxt
import pytest

from tests.contract import binance_trading_helpers
from tests.contract.binance_trading_helpers import (
    BTC_USDT,
    START_BTC,
    START_USDT,
    btc,
    make_client,
    sign,
    signed_get,
    usdt,
)
from tests.fakes.binance_server import DEFAULT_API_KEY, Balance, FakeBinance

exchange = binance_trading_helpers.exchange  # the fake (one per module), reset for each test, and a client on it
server = binance_trading_helpers.server
client = binance_trading_helpers.client


# --- rejections -----------------------------------------------------------------------------------


def test_insufficient_funds(server: FakeBinance, client: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        client.create_order(BTC_USDT, "market", "buy", 4)  # 120 000 USDT
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(BTC_USDT, "market", "sell", 0.6)
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(BTC_USDT, "limit", "buy", 3.34, 29_950)  # 100 033 USDT + commission

    assert server.orders == []
    assert (usdt(server), btc(server)) == (Balance(START_USDT), Balance(START_BTC))


def test_lot_size_filter_failures_are_invalid_orders(server: FakeBinance, client: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="Filter failure: LOT_SIZE"):
        client.create_order("ETH/USDT", "limit", "buy", 9_001, 0.01)  # above LOT_SIZE maxQty
    with pytest.raises(ccxt.InvalidOrder, match="Filter failure: MARKET_LOT_SIZE"):
        client.create_order(BTC_USDT, "market", "buy", 101)  # checked before the balance

    assert server.orders == []


def test_notional_filter_failure_is_a_bad_request(server: FakeBinance, client: Any) -> None:
    """ccxt quirk: Binance's -1013 maps to BadRequest; only bodies naming a LOT_SIZE/PRICE_FILTER are InvalidOrder."""
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL") as raised:
        client.create_order(BTC_USDT, "market", "buy", 0.0001)  # 3 USDT < 5

    assert not isinstance(raised.value, ccxt.InvalidOrder)
    assert server.orders == []


def test_duplicate_client_order_id_is_refused(server: FakeBinance, client: Any) -> None:
    client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-dup"})

    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-dup"})

    assert len(server.orders) == 1


def test_rejection_scripted_with_reject_next(server: FakeBinance, client: Any) -> None:
    server.reject_next(-1013, "Market is closed.")

    with pytest.raises(ccxt.MarketClosed):
        client.create_order(BTC_USDT, "market", "buy", 0.01)
    assert server.orders == []
    assert client.create_order(BTC_USDT, "market", "buy", 0.01)["status"] == "closed"


# --- authentication -------------------------------------------------------------------------------


def test_bad_signature_is_an_authentication_error(server: FakeBinance) -> None:
    wrong = make_client(server, secret="not-the-secret")

    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        wrong.fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        wrong.create_order(BTC_USDT, "market", "buy", 0.01)
    assert server.orders == []


def test_unknown_api_key_is_an_authentication_error(server: FakeBinance) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        make_client(server, api_key="someone-else").fetch_balance()
    assert server.requests_to("account")[0].status == 401


def test_a_key_rejected_after_a_success_is_taken_for_a_ban(server: FakeBinance, client: Any) -> None:
    """ccxt quirk: once a private call succeeded, -2015 raises DDoSProtection (retryable), not an auth error."""
    client.fetch_balance()
    server.api_key = "rotated"
    try:
        with pytest.raises(ccxt.DDoSProtection, match="-2015"):
            client.fetch_balance()
    finally:
        server.api_key = DEFAULT_API_KEY


def test_signed_endpoints_check_key_timestamp_and_signature(server: FakeBinance) -> None:
    now = int(time.time() * 1000)

    assert signed_get(server, "account", sign(f"timestamp={now}"), api_key=None) == (
        401,
        {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
    )
    assert signed_get(server, "account", f"timestamp={now}")[1]["code"] == -1102  # no signature
    assert signed_get(server, "account", sign("recvWindow=5000"))[1]["code"] == -1102  # no timestamp
    assert signed_get(server, "account", sign(f"timestamp={now - 60_000}"))[1]["code"] == -1021
    assert signed_get(server, "account", sign(f"timestamp={now}", "other"))[1]["code"] == -1022
    status, body = signed_get(server, "account", sign(f"timestamp={now}&omitZeroBalances=true"))
    assert status == 200
    assert {b["asset"] for b in body["balances"]} == {"USDT", "BTC"}
