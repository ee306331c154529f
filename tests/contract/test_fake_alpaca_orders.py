"""The fake Alpaca's stop and limit orders (GTC and DAY), resting partial fills, cancels and the session's end,
through alpaca-py's real ``TradingClient`` and its ``StopOrderRequest`` / ``LimitOrderRequest``."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, StopOrderRequest

from tests.fakes.alpaca_server import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, AlpacaServer

CASH = Decimal(50_000)


@pytest.fixture
def venue() -> Iterator[AlpacaServer]:
    with AlpacaServer(cash=CASH) as server:
        server.set_price("AAPL", Decimal(100))
        yield server


@pytest.fixture
def client(venue: AlpacaServer) -> TradingClient:
    return TradingClient(DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, url_override=venue.url)


def _hold(client: TradingClient, qty: float) -> None:
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))


def _stop(client: TradingClient, stop: float, *, qty: float = 10, side: OrderSide = OrderSide.SELL,
          tif: TimeInForce = TimeInForce.GTC, client_id: str = "s-1") -> object:
    return client.submit_order(StopOrderRequest(symbol="AAPL", qty=qty, stop_price=stop, side=side,
                                                time_in_force=tif, client_order_id=client_id))


def test_a_stop_rests_until_the_price_reaches_it_then_fills_there(venue: AlpacaServer,
                                                                  client: TradingClient) -> None:
    _hold(client, 10)
    placed = _stop(client, 95.5)

    assert (placed.status, placed.type, placed.stop_price, placed.time_in_force) == (
        OrderStatus.NEW, OrderType.STOP, "95.5", TimeInForce.GTC)
    body = venue.requests_to("orders", "POST")[-1].body
    assert body == {"symbol": "AAPL", "qty": 10.0, "side": "sell", "type": "stop", "time_in_force": "gtc",
                    "client_order_id": "s-1", "stop_price": 95.5}
    venue.set_price("AAPL", Decimal("96"))
    assert client.get_order_by_client_id("s-1").status == OrderStatus.NEW
    venue.set_price("AAPL", Decimal("95.2"))  # through the trigger: filled at the price reached

    done = client.get_order_by_client_id("s-1")
    assert (done.status, done.filled_qty, done.filled_avg_price) == (OrderStatus.FILLED, "10", "95.2")
    assert venue.positions == {}
    assert venue.cash == CASH - 1000 + Decimal("952")


def test_a_stop_the_price_has_already_reached_and_prices_off_the_grid_are_refused(
        venue: AlpacaServer, client: TradingClient) -> None:
    _hold(client, 10)
    for stop, side, message in ((100, OrderSide.SELL, "stop price must be less than current price"),
                                (99.99, OrderSide.BUY, "stop price must be greater than current price"),
                                (95.505, OrderSide.SELL, "sub-penny increment")):
        with pytest.raises(APIError) as refused:
            _stop(client, stop, side=side, client_id=f"s-{stop}")
        assert refused.value.status_code == 422 and message in refused.value.message
    with pytest.raises(APIError) as fractional:
        _stop(client, 95, qty=1.5)
    assert "fractional orders must be DAY orders" in fractional.value.message
    with pytest.raises(APIError) as too_many:
        _stop(client, 95, qty=11)
    assert too_many.value.status_code == 403 and "insufficient qty available" in too_many.value.message
    assert len(venue.orders) == 1  # only the market buy


def test_a_resting_sell_stop_holds_its_shares_and_a_buy_stop_its_buying_power(
        venue: AlpacaServer, client: TradingClient) -> None:
    _hold(client, 10)
    _stop(client, 95)
    with pytest.raises(APIError) as held:
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.SELL,
                                               time_in_force=TimeInForce.DAY))
    assert held.value.status_code == 403
    _stop(client, 105, qty=400, side=OrderSide.BUY, client_id="b-1")  # reserves 400 x 105 = 42 000
    assert Decimal(str(client.get_account().buying_power)) == CASH - 1000 - 400 * 105
    with pytest.raises(APIError) as power:
        _stop(client, 105, qty=67, side=OrderSide.BUY, client_id="b-2")  # 7 035 > the 7 000 left
    assert power.value.status_code == 403 and power.value.message == "insufficient buying power"


def test_a_cancelled_stop_never_fills_and_cannot_be_cancelled_twice(venue: AlpacaServer,
                                                                     client: TradingClient) -> None:
    _hold(client, 10)
    placed = _stop(client, 95)

    client.cancel_order_by_id(placed.id)
    venue.set_price("AAPL", Decimal(90))

    assert client.get_order_by_id(placed.id).status == OrderStatus.CANCELED
    assert venue.positions == {"AAPL": Decimal(10)}
    with pytest.raises(APIError) as again:
        client.cancel_order_by_id(placed.id)
    assert again.value.status_code == 422


def test_a_triggered_stop_and_a_resting_limit_can_fill_in_part(venue: AlpacaServer, client: TradingClient) -> None:
    _hold(client, 10)
    _stop(client, 95)
    venue.partial_fill_resting_next("0.3")
    venue.set_price("AAPL", Decimal(95))
    part = client.get_order_by_client_id("s-1")
    venue.set_price("AAPL", Decimal(94))  # triggered: the rest is a market order now
    done = client.get_order_by_client_id("s-1")

    assert (part.status, part.filled_qty, part.filled_avg_price) == (OrderStatus.PARTIALLY_FILLED, "3", "95")
    assert (done.status, done.filled_qty, done.filled_avg_price) == (OrderStatus.FILLED, "10", "94.3")

    limit = client.submit_order(LimitOrderRequest(symbol="AAPL", qty=4, limit_price=90, side=OrderSide.BUY,
                                                  time_in_force=TimeInForce.GTC))
    venue.partial_fill_resting_next("0.5")
    venue.set_price("AAPL", Decimal("89.5"))
    venue.set_price("AAPL", Decimal(92))  # away from the limit: the rest waits
    waiting = client.get_order_by_id(limit.id)
    venue.set_price("AAPL", Decimal(90))
    assert (waiting.status, waiting.filled_qty, waiting.filled_avg_price) == (OrderStatus.PARTIALLY_FILLED, "2", "90")
    assert client.get_order_by_id(limit.id).status == OrderStatus.FILLED
    assert venue.positions == {"AAPL": Decimal(4)}


def test_the_sessions_end_expires_day_orders_and_keeps_gtc_ones(venue: AlpacaServer, client: TradingClient) -> None:
    _hold(client, 10)
    day = client.submit_order(LimitOrderRequest(symbol="AAPL", qty=1.5, limit_price=99, side=OrderSide.BUY,
                                                time_in_force=TimeInForce.DAY))
    gtc = _stop(client, 95)
    venue.partial_fill_resting_next("0.5")
    venue.set_price("AAPL", Decimal(99))

    venue.expire_day_orders()

    expired = client.get_order_by_id(day.id)
    assert (expired.status, expired.filled_qty) == (OrderStatus.EXPIRED, "0.75")
    assert expired.expired_at is not None
    assert client.get_order_by_id(gtc.id).status == OrderStatus.NEW
    assert venue.positions == {"AAPL": Decimal("10.75")}
