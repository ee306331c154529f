"""The fake Binance's spot trading API through the real ccxt client: the account, orders and their queries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import pandas as pd
import pytest

from tests.contract import binance_trading_helpers
from tests.contract.binance_trading_helpers import (
    BTC_USDT,
    START_BTC,
    START_USDT,
    btc,
    usdt,
)
from tests.fakes.binance_server import DEFAULT_API_KEY, Balance, FakeBinance

exchange = binance_trading_helpers.exchange  # the fake (one per module), reset for each test, and a client on it
server = binance_trading_helpers.server
client = binance_trading_helpers.client


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
