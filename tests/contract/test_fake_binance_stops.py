"""The fake Binance's stop-market (``STOP_LOSS``) orders and resting partial fills through the real ccxt client.

They pin down what ccxt sends for a unified stop-market order on a spot market (a ``market`` order with a
``triggerPrice`` or ``stopPrice`` param becomes ``STOP_LOSS`` with ``stopPrice``, no price, no time in force)
and how it reads the answers back.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import pytest

from tests.contract import binance_trading_helpers
from tests.contract.binance_trading_helpers import BTC_USDT, START_BTC, START_USDT, btc, usdt
from tests.fakes.binance_server import Balance, FakeBinance

exchange = binance_trading_helpers.exchange  # the fake (one per module), reset for each test, and a client on it
server = binance_trading_helpers.server
client = binance_trading_helpers.client


@pytest.mark.parametrize("param", ["triggerPrice", "stopPrice"])
def test_a_stop_market_order_is_sent_as_stop_loss_and_rests_with_its_base_locked(
        server: FakeBinance, client: Any, param: str) -> None:
    order = client.create_order(BTC_USDT, "market", "sell", 0.1, None, {param: 29_000, "newClientOrderId": "s-1"})

    assert (order["status"], order["filled"], order["triggerPrice"]) == ("open", 0.0, 29_000)
    sent = server.requests_to("order", "POST")[0].params
    assert (sent["type"], sent["side"], sent["quantity"], sent["stopPrice"]) == ("STOP_LOSS", "SELL", "0.1", "29000")
    assert "price" not in sent and "timeInForce" not in sent and sent["newOrderRespType"] == "FULL"
    assert btc(server) == Balance(START_BTC - Decimal("0.1"), Decimal("0.1"))
    [listed] = client.fetch_open_orders(BTC_USDT)
    assert (listed["clientOrderId"], listed["type"], listed["stopPrice"]) == ("s-1", "market", 29_000)
    assert listed["info"]["type"] == "STOP_LOSS" and listed["info"]["isWorking"] is False
    server.set_price(BTC_USDT, "29500")  # above the trigger: nothing happens
    assert server.trades == []


def test_a_stop_triggers_when_the_price_reaches_it_and_fills_there_as_taker(server: FakeBinance, client: Any) -> None:
    client.create_order(BTC_USDT, "market", "sell", 0.1, None, {"triggerPrice": 29_000, "newClientOrderId": "s-1"})

    server.set_price(BTC_USDT, "28950")  # gapped through the trigger: filled at the price reached

    fetched = client.fetch_order(None, BTC_USDT, {"origClientOrderId": "s-1"})
    assert (fetched["status"], fetched["filled"], fetched["average"]) == ("closed", 0.1, 28_950)
    [trade] = server.trades
    assert (trade.side, trade.price, trade.qty, trade.is_maker) == ("SELL", Decimal(28_950), Decimal("0.1"), False)
    assert btc(server) == Balance(START_BTC - Decimal("0.1"))
    assert usdt(server) == Balance(START_USDT + Decimal("2895") - Decimal("2.895"))
    assert [t["order"] for t in client.fetch_my_trades(BTC_USDT)] == [fetched["id"]]


def test_a_buy_stop_triggers_on_the_way_up_and_locks_quote_at_its_trigger(server: FakeBinance, client: Any) -> None:
    client.create_order(BTC_USDT, "market", "buy", 0.1, None, {"triggerPrice": 31_000})
    assert usdt(server) == Balance(START_USDT - Decimal("3103.1"), Decimal("3103.1"))  # 3 100 + commission

    server.set_price(BTC_USDT, "31000")

    assert [(t.side, t.price) for t in server.trades] == [("BUY", Decimal(31_000))]
    assert btc(server) == Balance(START_BTC + Decimal("0.1"))
    assert usdt(server).locked == 0


def test_a_stop_the_price_has_already_reached_is_refused(server: FakeBinance, client: Any) -> None:
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="Stop price would trigger immediately"):
        client.create_order(BTC_USDT, "market", "sell", 0.1, None, {"triggerPrice": 30_000})
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        client.create_order(BTC_USDT, "market", "buy", 0.1, None, {"triggerPrice": 29_999})
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(BTC_USDT, "market", "sell", 0.6, None, {"triggerPrice": 29_000})

    assert server.orders == [] and btc(server) == Balance(START_BTC)


def test_a_cancelled_stop_gives_its_base_back_and_never_fills(server: FakeBinance, client: Any) -> None:
    placed = client.create_order(BTC_USDT, "market", "sell", 0.1, None, {"triggerPrice": 29_000})

    cancelled = client.cancel_order(placed["id"], BTC_USDT)
    server.set_price(BTC_USDT, "28000")

    assert cancelled["status"] == "canceled"
    assert btc(server) == Balance(START_BTC)
    assert server.trades == [] and client.fetch_open_orders(BTC_USDT) == []
    with pytest.raises(ccxt.OrderNotFound):
        client.cancel_order(placed["id"], BTC_USDT)


def test_a_triggered_stop_can_fill_in_part_and_its_rest_fills_at_the_next_price(
        server: FakeBinance, client: Any) -> None:
    client.create_order(BTC_USDT, "market", "sell", 0.1, None, {"triggerPrice": 29_000, "newClientOrderId": "s-1"})
    server.partial_fill_resting_next("0.4")

    server.set_price(BTC_USDT, "29000")
    part = client.fetch_order(None, BTC_USDT, {"origClientOrderId": "s-1"})
    server.set_price(BTC_USDT, "29100")  # a triggered stop is a market order: its rest fills at any price
    done = client.fetch_order(None, BTC_USDT, {"origClientOrderId": "s-1"})

    assert (part["status"], part["filled"], part["info"]["isWorking"]) == ("open", 0.04, True)
    assert (done["status"], done["filled"]) == ("closed", 0.1)
    assert [(t.price, t.qty) for t in server.trades] == [(Decimal(29_000), Decimal("0.04")),
                                                          (Decimal(29_100), Decimal("0.06"))]
    assert btc(server) == Balance(START_BTC - Decimal("0.1"))


def test_a_resting_limit_can_fill_in_part_and_its_rest_waits_for_its_price_again(
        server: FakeBinance, client: Any) -> None:
    placed = client.create_order(BTC_USDT, "limit", "buy", 0.1, 29_000)
    server.partial_fill_resting_next("0.25")

    server.set_price(BTC_USDT, "28900")
    server.set_price(BTC_USDT, "29500")  # away from the limit: the rest waits
    waiting = client.fetch_order(placed["id"], BTC_USDT)
    server.set_price(BTC_USDT, "28990")

    assert (waiting["status"], waiting["filled"], waiting["remaining"]) == ("open", 0.025, 0.075)
    assert [(t.price, t.qty, t.is_maker) for t in server.trades] == [(Decimal(29_000), Decimal("0.025"), True),
                                                                      (Decimal(29_000), Decimal("0.075"), True)]
    assert client.fetch_order(placed["id"], BTC_USDT)["status"] == "closed"
    assert usdt(server).locked == 0
