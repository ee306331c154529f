"""The fake Binance's spot trading API, driven by the real ccxt.binance client with an API key and secret.

The client is pointed at the fake exactly as ``pipeline.data.sources.ccxt_source`` does it (spot catalogue only, the
spot host's REST URLs rewritten), so these tests also pin down how ccxt talks to Binance when it trades: which
endpoints it calls, what it sends and how it reads the answers and the errors.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pandas as pd
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


# --- account and market orders --------------------------------------------------------------------


def test_fetch_balance_reads_the_ledger_through_a_signed_request(server: FakeBinance, client: Any) -> None:
    balance = client.fetch_balance()

    assert balance["USDT"] == {"free": 100_000.0, "used": 0.0, "total": 100_000.0}
    assert balance["BTC"]["free"] == 0.5
    account = server.requests_to("account")
    assert len(account) == 1
    assert account[0].api_key == DEFAULT_API_KEY
    assert {"timestamp", "recvWindow", "signature"} <= set(account[0].params)
    # with fetchCurrencies off, loading markets with keys reads only the public exchangeInfo
    assert [r.endpoint for r in server.requests] == ["exchangeInfo", "account"]


def test_market_buy_fills_at_the_current_price_and_moves_the_balances(server: FakeBinance, client: Any) -> None:
    order = client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-1"})

    assert order["status"] == "closed"
    assert order["clientOrderId"] == "t-1"
    assert (order["filled"], order["amount"], order["remaining"]) == (0.01, 0.01, 0.0)
    assert order["average"] == pytest.approx(30_000)
    assert order["cost"] == pytest.approx(300)
    assert order["fee"] == {"currency": "USDT", "cost": pytest.approx(0.3)}
    assert len(order["trades"]) == 1 and order["trades"][0]["price"] == 30_000
    placed = server.requests_to("order", "POST")
    assert len(placed) == 1
    sent = placed[0].params
    assert (sent["symbol"], sent["side"], sent["type"], sent["quantity"]) == ("BTCUSDT", "BUY", "MARKET", "0.01")
    assert (sent["newClientOrderId"], sent["newOrderRespType"]) == ("t-1", "FULL")
    assert usdt(server) == Balance(START_USDT - Decimal(300) - Decimal("0.3"))
    assert btc(server) == Balance(START_BTC + Decimal("0.01"))
    [venue_order] = server.orders
    assert (venue_order.client_order_id, venue_order.status) == ("t-1", "FILLED")
    assert venue_order.executed_qty == Decimal("0.01")


def test_market_sell_receives_the_proceeds_less_commission(server: FakeBinance, client: Any) -> None:
    order = client.create_order(BTC_USDT, "market", "sell", 0.1)

    assert order["status"] == "closed"
    assert order["clientOrderId"].startswith("x-")  # ccxt sends a generated newClientOrderId when none is given
    assert btc(server) == Balance(START_BTC - Decimal("0.1"))
    assert usdt(server) == Balance(START_USDT + Decimal(3_000) - Decimal(3))
    [trade] = server.trades
    assert (trade.side, trade.commission, trade.commission_asset, trade.is_maker) == (
        "SELL",
        Decimal(3),
        "USDT",
        False,
    )


def test_market_order_with_a_price_spends_amount_times_price_of_quote(server: FakeBinance, client: Any) -> None:
    """ccxt quirk: a price on a spot market order turns it into a quoteOrderQty (cost) order."""
    order = client.create_order(BTC_USDT, "market", "buy", 0.01, 29_000)

    sent = server.requests_to("order", "POST")[0].params
    assert "quantity" not in sent
    assert sent["quoteOrderQty"] == "290"
    assert order["filled"] == pytest.approx(0.00966)  # 290 / 30 000, down to the 0.00001 step
    assert order["average"] == pytest.approx(30_000)


def test_the_default_price_is_the_close_of_the_last_served_bar(server: FakeBinance, client: Any) -> None:
    stamps = pd.date_range("2024-03-01", periods=3, freq="1min", tz="UTC")
    bars = pd.DataFrame(
        {"timestamp": stamps, "open": 1.0, "high": 2.0, "low": 0.5, "close": [2000.5, 2001.25, 2002.75], "volume": 3.0}
    )
    server.serve_bars("ETH/USDT", "1m", bars)
    try:
        assert server.price("ETH/USDT") == Decimal("2002.75")
        server.set_now(stamps[1] + pd.Timedelta(seconds=10))
        assert server.price("ETH/USDT") == Decimal("2001.25")

        order = client.create_order("ETH/USDT", "market", "buy", 0.01)
    finally:
        server.serve_bars("ETH/USDT", "1m", bars.iloc[:0])

    assert order["average"] == pytest.approx(2001.25)
    assert server.trades[0].time_ms == int(stamps[1].timestamp() * 1000) + 10_000  # the venue's clock


# --- queries --------------------------------------------------------------------------------------


def test_fetch_order_by_id_and_by_client_id(server: FakeBinance, client: Any) -> None:
    placed = client.create_order(BTC_USDT, "market", "buy", 0.01, params={"newClientOrderId": "t-1"})

    by_id = client.fetch_order(placed["id"], BTC_USDT)
    by_client_id = client.fetch_order(None, BTC_USDT, {"clientOrderId": "t-1"})

    for fetched in (by_id, by_client_id):
        assert (fetched["id"], fetched["clientOrderId"], fetched["status"]) == (placed["id"], "t-1", "closed")
        assert fetched["filled"] == 0.01 and fetched["cost"] == pytest.approx(300)
    queries = server.requests_to("order", "GET")
    assert "orderId" in queries[0].params and "origClientOrderId" not in queries[0].params
    assert queries[1].params["origClientOrderId"] == "t-1" and "orderId" not in queries[1].params
    with pytest.raises(ccxt.OrderNotFound, match="Order does not exist"):
        client.fetch_order("999999", BTC_USDT)
    with pytest.raises(ccxt.OrderNotFound):
        client.fetch_order(None, BTC_USDT, {"clientOrderId": "never-sent"})


def test_fetch_my_trades_with_since_limit_and_from_id(server: FakeBinance, client: Any) -> None:
    first = client.create_order(BTC_USDT, "market", "buy", 0.01)
    server.set_price(BTC_USDT, "31000")
    second = client.create_order(BTC_USDT, "market", "sell", 0.02)

    trades = client.fetch_my_trades(BTC_USDT)

    assert [t["order"] for t in trades] == [first["id"], second["id"]]
    buy, sell = trades
    assert (buy["side"], buy["price"], buy["amount"], buy["cost"]) == ("buy", 30_000, 0.01, 300)
    assert buy["fee"] == {"currency": "USDT", "cost": pytest.approx(0.3)}
    assert buy["takerOrMaker"] == "taker"
    assert (sell["side"], sell["price"], sell["amount"], sell["cost"]) == ("sell", 31_000, 0.02, 620)
    assert sell["timestamp"] >= buy["timestamp"]
    assert [t["id"] for t in client.fetch_my_trades(BTC_USDT, limit=1)] == [sell["id"]]
    assert [t["id"] for t in client.fetch_my_trades(BTC_USDT, params={"fromId": sell["id"]})] == [sell["id"]]
    assert len(client.fetch_my_trades(BTC_USDT, since=buy["timestamp"])) == 2
    assert client.fetch_my_trades(BTC_USDT, since=sell["timestamp"] + 1) == []
    assert server.requests_to("myTrades")[-2].params["startTime"] == str(buy["timestamp"])


# --- limit orders ---------------------------------------------------------------------------------


def test_limit_buy_rests_then_fills_at_its_price_when_the_price_crosses(server: FakeBinance, client: Any) -> None:
    order = client.create_order(BTC_USDT, "limit", "buy", 0.01, 29_000, params={"newClientOrderId": "t-limit"})

    assert order["status"] == "open" and order["filled"] == 0
    sent = server.requests_to("order", "POST")[0].params
    assert (sent["type"], sent["price"], sent["timeInForce"]) == ("LIMIT", "29000", "GTC")
    assert [o["clientOrderId"] for o in client.fetch_open_orders(BTC_USDT)] == ["t-limit"]
    assert usdt(server) == Balance(START_USDT - Decimal("290.29"), Decimal("290.29"))  # qty*price + commission

    server.set_price(BTC_USDT, "29500")
    assert client.fetch_order(order["id"], BTC_USDT)["status"] == "open"

    server.set_price(BTC_USDT, "28900")
    filled = client.fetch_order(order["id"], BTC_USDT)

    assert filled["status"] == "closed"
    assert filled["average"] == pytest.approx(29_000)
    assert client.fetch_open_orders(BTC_USDT) == []
    assert usdt(server) == Balance(START_USDT - Decimal("290.29"))
    assert btc(server) == Balance(START_BTC + Decimal("0.01"))
    [trade] = client.fetch_my_trades(BTC_USDT)
    assert (trade["price"], trade["takerOrMaker"]) == (29_000, "maker")


def test_limit_sell_locks_the_base_until_it_fills(server: FakeBinance, client: Any) -> None:
    order = client.create_order(BTC_USDT, "limit", "sell", 0.2, 31_000)

    assert btc(server) == Balance(START_BTC - Decimal("0.2"), Decimal("0.2"))
    server.set_price(BTC_USDT, "31000")

    assert client.fetch_order(order["id"], BTC_USDT)["status"] == "closed"
    assert btc(server) == Balance(START_BTC - Decimal("0.2"))
    assert usdt(server) == Balance(START_USDT + Decimal(6_200) - Decimal("6.2"))


def test_marketable_limit_fills_at_once_at_the_current_price(server: FakeBinance, client: Any) -> None:
    order = client.create_order(BTC_USDT, "limit", "buy", 0.01, 30_500)

    assert order["status"] == "closed"
    assert order["average"] == pytest.approx(30_000)
    assert server.trades[0].is_maker is False


def test_cancel_releases_the_locked_funds(server: FakeBinance, client: Any) -> None:
    order = client.create_order(BTC_USDT, "limit", "buy", 0.01, 29_000, params={"newClientOrderId": "t-cancel"})

    cancelled = client.cancel_order(order["id"], BTC_USDT)

    assert cancelled["status"] == "canceled"
    assert cancelled["id"] == order["id"]
    # Binance quirk kept by the fake: clientOrderId is the cancel request's own id; the order's is origClientOrderId
    assert cancelled["info"]["origClientOrderId"] == "t-cancel"
    assert cancelled["clientOrderId"] != "t-cancel"
    assert client.fetch_open_orders(BTC_USDT) == []
    assert usdt(server) == Balance(START_USDT)
    venue_order = server.order("t-cancel")
    assert venue_order is not None and venue_order.status == "CANCELED"
    with pytest.raises(ccxt.OrderNotFound, match="Unknown order sent"):
        client.cancel_order(order["id"], BTC_USDT)


def test_cancel_all_and_the_order_history(server: FakeBinance, client: Any) -> None:
    client.create_order(BTC_USDT, "limit", "buy", 0.01, 29_000)
    client.create_order(BTC_USDT, "limit", "buy", 0.01, 28_000)
    client.create_order(BTC_USDT, "market", "buy", 0.01)

    cancelled = client.cancel_all_orders(BTC_USDT)

    assert [o["status"] for o in cancelled] == ["canceled", "canceled"]
    assert [o["status"] for o in client.fetch_orders(BTC_USDT)] == ["canceled", "canceled", "closed"]
    assert usdt(server).locked == 0


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
