"""The fake Binance through the real ccxt client: the commission charged in the asset a fill gives (Binance's rule
when the fee is not paid in BNB), what ``myTrades`` accepts (Binance's documented combinations and 24-hour window),
and something done at the venue while a client reads it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pandas as pd
import pytest

from tests.contract.binance_trading_helpers import BTC_USDT, PRICE, START_BTC, START_USDT, btc, make_client, usdt
from tests.fakes.binance_server import Balance, FakeBinance

DAY_MS = 86_400_000


@pytest.fixture
def received() -> Iterator[FakeBinance]:
    """A fake that charges the commission in the asset each fill gives, BTC/USDT at 30 000."""
    with FakeBinance(balances={"USDT": START_USDT, "BTC": START_BTC}, commission_asset="received") as server:
        server.set_price(BTC_USDT, PRICE)
        yield server


def test_a_buy_pays_its_commission_in_the_base_asset_it_receives(received: FakeBinance) -> None:
    client = make_client(received)
    order = client.create_order(BTC_USDT, "market", "buy", 0.01)
    assert order["status"] == "closed" and order["filled"] == 0.01  # the order's quantity, commission included
    assert order["trades"][0]["fee"] == {"currency": "BTC", "cost": pytest.approx(0.00001)}
    assert usdt(received) == Balance(START_USDT - Decimal(300))  # the quote amount, nothing more
    assert btc(received) == Balance(START_BTC + Decimal("0.01") - Decimal("0.00001"))
    [trade] = client.fetch_my_trades(BTC_USDT)
    assert (trade["amount"], trade["fee"]["currency"], trade["fee"]["cost"]) == (0.01, "BTC", pytest.approx(1e-5))


def test_a_sell_pays_its_commission_in_the_quote_asset_it_receives(received: FakeBinance) -> None:
    client = make_client(received)
    order = client.create_order(BTC_USDT, "market", "sell", 0.01)
    assert order["trades"][0]["fee"] == {"currency": "USDT", "cost": pytest.approx(0.3)}
    assert usdt(received) == Balance(START_USDT + Decimal(300) - Decimal("0.3"))
    assert btc(received) == Balance(START_BTC - Decimal("0.01"))


def test_a_resting_buy_locks_the_quote_amount_only_when_the_commission_is_taken_from_the_base(
        received: FakeBinance) -> None:
    client = make_client(received)
    client.create_order(BTC_USDT, "limit", "buy", 0.01, 29_000)
    assert usdt(received) == Balance(START_USDT - Decimal(290), Decimal(290))
    received.set_price(BTC_USDT, Decimal(28_900))
    assert usdt(received) == Balance(START_USDT - Decimal(290))
    assert btc(received) == Balance(START_BTC + Decimal("0.00999"))


def test_the_commission_asset_must_be_known() -> None:
    with pytest.raises(ValueError, match="commission_asset 'bnb' is not valid"):
        FakeBinance(commission_asset="bnb")  # type: ignore[arg-type]


def _trades_at(server: FakeBinance, client: Any, times: list[pd.Timestamp]) -> None:
    for at in times:
        server.set_now(at)
        client.create_order(BTC_USDT, "market", "buy", 0.001)


def test_my_trades_reads_from_a_start_time_on_without_a_window(received: FakeBinance) -> None:
    client = make_client(received)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    _trades_at(received, client, [start, start + pd.Timedelta(days=3), start + pd.Timedelta(days=9)])
    since = int(start.value // 1_000_000)
    assert len(client.fetch_my_trades(BTC_USDT, since)) == 3  # startTime alone: every later trade, up to limit
    [sent] = received.requests_to("myTrades")
    assert "startTime" in sent.params and "endTime" not in sent.params  # what ccxt sends for a spot market
    assert len(client.fetch_my_trades(BTC_USDT, since, None, {"endTime": since + DAY_MS})) == 1
    page = client.fetch_my_trades(BTC_USDT, None, 2, {"fromId": 5001})
    assert [int(t["id"]) for t in page] == [5001, 5002]


@pytest.mark.parametrize(("params", "error"), [
    ({"startTime": 0, "endTime": DAY_MS + 1}, "More than 24 hours between startTime and endTime"),
    ({"startTime": 0, "fromId": 1}, "Combination of optional parameters invalid"),
    ({"orderId": 1, "startTime": 0}, "Combination of optional parameters invalid"),
])
def test_my_trades_refuses_what_binance_refuses(received: FakeBinance, params: dict[str, int], error: str) -> None:
    client = make_client(received)
    with pytest.raises(ccxt.BadRequest, match=error):
        client.fetch_my_trades(BTC_USDT, None, None, params)


def test_something_done_at_the_venue_before_an_answer_is_in_that_answer(received: FakeBinance) -> None:
    client, other = make_client(received), make_client(received)
    received.before_next("openOrders", lambda: other.create_order(BTC_USDT, "limit", "buy", 0.01, 29_000))
    [order] = client.fetch_open_orders(BTC_USDT)
    assert order["price"] == 29_000
    assert received.pending_faults == 0
    assert len(client.fetch_open_orders(BTC_USDT)) == 1  # once: the next answer is as usual
    assert len(received.orders) == 1
