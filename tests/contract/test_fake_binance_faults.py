"""The fake Binance's faults through the real ccxt client: partial fills, lost answers, transient failures."""

from __future__ import annotations

from decimal import Decimal
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
    usdt,
)
from tests.fakes.binance_server import Balance, FakeBinance

exchange = binance_trading_helpers.exchange  # the fake (one per module), reset for each test, and a client on it
server = binance_trading_helpers.server
client = binance_trading_helpers.client


# --- partial fills and lost responses -------------------------------------------------------------


def test_partial_fill_stays_open_until_completed(server: FakeBinance, client: Any) -> None:
    server.partial_fill_next(0.5)

    order = client.create_order(BTC_USDT, "market", "buy", 0.02, params={"newClientOrderId": "t-part"})

    assert order["status"] == "open"
    assert (order["filled"], order["remaining"]) == (0.01, 0.01)
    assert [o["id"] for o in client.fetch_open_orders(BTC_USDT)] == [order["id"]]
    assert usdt(server).locked == Decimal("300.3")  # the remainder's cost at 30 000, commission included

    done = server.complete_partial("t-part")

    assert done.status == "FILLED"
    fetched = client.fetch_order(order["id"], BTC_USDT)
    assert (fetched["status"], fetched["filled"]) == ("closed", 0.02)
    assert usdt(server) == Balance(START_USDT - Decimal("600.6"))
    assert len(client.fetch_my_trades(BTC_USDT)) == 2


def test_partial_fill_remainder_fills_on_the_next_price(server: FakeBinance, client: Any) -> None:
    server.partial_fill_next("0.25")
    order = client.create_order(BTC_USDT, "market", "sell", 0.4)
    assert order["filled"] == pytest.approx(0.1)

    server.set_price(BTC_USDT, "30100")

    fetched = client.fetch_order(order["id"], BTC_USDT)
    assert (fetched["status"], fetched["filled"]) == ("closed", 0.4)
    assert [t.price for t in server.trades] == [Decimal(30_000), Decimal(30_100)]
    assert btc(server) == Balance(START_BTC - Decimal("0.4"))


def test_lost_response_the_order_is_placed_once_and_found_by_client_id(server: FakeBinance, client: Any) -> None:
    server.lose_response_next()

    with pytest.raises(ccxt.NetworkError) as raised:
        client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-lost"})

    assert not isinstance(raised.value, ccxt.ExchangeError)
    found = client.fetch_order(None, BTC_USDT, {"clientOrderId": "t-lost"})
    assert (found["clientOrderId"], found["status"], found["filled"]) == ("t-lost", "closed", 0.01)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):  # a blind resend is refused
        client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-lost"})
    assert [o.client_order_id for o in server.orders] == ["t-lost"]
    posts = server.requests_to("order", "POST")
    assert [(r.status, r.dropped) for r in posts] == [(200, True), (400, False)]
    assert btc(server) == Balance(START_BTC + Decimal("0.01"))


def test_dropped_connection_places_nothing(server: FakeBinance, client: Any) -> None:
    server.fail_next(drop=True, endpoint="order", method="POST")

    with pytest.raises(ccxt.NetworkError):
        client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-drop"})

    assert server.orders == []
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(None, BTC_USDT, {"clientOrderId": "t-drop"})
    assert client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-drop"})["filled"] == 0.01


# --- transient failures ---------------------------------------------------------------------------


def test_rate_limit_is_ddos_protection_and_places_nothing(server: FakeBinance, client: Any) -> None:
    server.fail_next(429, endpoint="order", method="POST")

    with pytest.raises(ccxt.DDoSProtection, match="429"):
        client.create_order(BTC_USDT, "market", "buy", 0.01)

    assert server.orders == []
    assert client.create_order(BTC_USDT, "market", "buy", 0.01)["status"] == "closed"


@pytest.mark.parametrize(
    ("status", "seen_as"),
    [(500, ccxt.OperationFailed), (502, ccxt.ExchangeNotAvailable), (503, ccxt.ExchangeNotAvailable)],
)
def test_server_errors(server: FakeBinance, client: Any, status: int, seen_as: type[Exception]) -> None:
    server.fail_next(status, endpoint="*", method="POST")

    with pytest.raises(seen_as) as raised:
        client.create_order(BTC_USDT, "market", "buy", 0.01)

    if status == 500:  # Binance's -1001 body: a bare OperationFailed, not a NetworkError
        assert not isinstance(raised.value, ccxt.NetworkError)
    assert server.orders == []
    assert client.fetch_balance()["USDT"]["free"] == 100_000


def test_slow_answer_is_a_request_timeout(server: FakeBinance) -> None:
    impatient = make_client(server, timeout_ms=300)
    impatient.load_markets()
    server.fail_next(delay_s=1.0, endpoint="account")

    with pytest.raises(ccxt.RequestTimeout):
        impatient.fetch_balance()
    assert impatient.fetch_balance()["BTC"]["free"] == 0.5


def test_slow_order_answer_times_out_after_the_order_is_placed(server: FakeBinance) -> None:
    impatient = make_client(server, timeout_ms=300)
    impatient.load_markets()
    server.fail_next(delay_s=1.0, endpoint="order", method="POST")

    with pytest.raises(ccxt.RequestTimeout):
        impatient.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-slow"})

    assert impatient.fetch_order(None, BTC_USDT, {"clientOrderId": "t-slow"})["status"] == "closed"
    assert len(server.orders) == 1


def test_reset_restores_the_starting_ledger(server: FakeBinance, client: Any) -> None:
    client.create_order(BTC_USDT, "limit", "buy", 0.01, 29_000)
    server.partial_fill_next(0.5)

    server.reset()

    assert (server.orders, server.trades, server.requests) == ([], [], [])
    assert usdt(server) == Balance(START_USDT)
    assert server.price(BTC_USDT) is None
