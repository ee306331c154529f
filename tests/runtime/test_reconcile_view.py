"""What each venue broker reads for the reconciliation (``Broker.venue_view``), through its real client against the
fake venue: every fill from a time on, over several pages, once each, oldest first, with its order's client id;
the open orders whoever placed them; the holdings and the cash."""

from __future__ import annotations

from decimal import Decimal

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from pipeline.data.sources.ccxt_source import build_exchange
from runtime.brokers.alpaca import ACTIVITIES_PAGE, make_trading_client
from runtime.brokers.ccxt import TRADES_PAGE
from tests.runtime import venue_cases
from tests.runtime.reconcile_cases import cash_at
from tests.runtime.venue_cases import Alpaca, Binance, Venue

venue = venue_cases.venue


def _trade_by_hand(venue: Venue, count: int) -> list[str]:
    """``count`` small market orders (buy, then sell, in turn) with client ids of their own; returns the ids."""
    ids = [f"hand-{number}" for number in range(count)]
    if isinstance(venue, Binance):
        exchange = build_exchange(venue.settings, "binance")
        for number, client_id in enumerate(ids):
            exchange.create_order(venue.symbol, "market", "sell" if number % 2 else "buy", 0.001, None,
                                  {"newClientOrderId": client_id})
    else:
        assert isinstance(venue, Alpaca)
        client = make_trading_client(venue.settings)
        for number, client_id in enumerate(ids):
            client.submit_order(MarketOrderRequest(symbol=venue.symbol, qty=1, time_in_force=TimeInForce.DAY,
                                                   side=OrderSide.SELL if number % 2 else OrderSide.BUY,
                                                   client_order_id=client_id))
    return ids


def _venue_ids(venue: Venue) -> dict[str, str]:
    """The client id of each order at the venue, by venue order id."""
    if isinstance(venue, Binance):
        return {str(o.order_id): o.client_order_id for o in venue.server.orders}
    assert isinstance(venue, Alpaca)
    return {o.id: o.client_order_id for o in venue.server.orders}


def _lookups(venue: Venue) -> int:
    """Orders looked up by venue id so far."""
    if isinstance(venue, Binance):
        return len(venue.server.requests_to("order", "GET"))
    assert isinstance(venue, Alpaca)
    return len([r for r in venue.server.requests if r.method == "GET" and r.path.startswith("/v2/orders/")])


def test_every_fill_from_a_time_on_is_read_once_over_several_pages_with_its_client_id(venue: Venue) -> None:
    page = TRADES_PAGE if venue.name == "ccxt" else ACTIVITIES_PAGE
    ids = _trade_by_hand(venue, page + 7)
    known = dict(list(_venue_ids(venue).items())[:-5])  # the caller knows all but the last five orders
    broker = venue.broker()
    view = broker.venue_view([venue.symbol], {venue.symbol: 0}, known)
    assert [f.client_id for f in view.fills] == ids  # oldest first, each once, each with its order's client id
    assert _lookups(venue) == 5  # only the orders the caller did not know were asked for
    assert len({f.fill_id for f in view.fills}) == len(ids)
    assert [f.side for f in view.fills[:2]] == ["buy", "sell"]
    assert all(f.symbol == venue.symbol and f.price == Decimal(repr(venue.base)) for f in view.fills)
    assert view.steady and view.cash == {view.currency_of[venue.symbol]: cash_at(venue)}
    assert view.holdings == {venue.symbol: venue.held()} and venue.held() > 0

    since = view.fills[page].at_ms
    later = broker.venue_view([venue.symbol], {venue.symbol: since}, {})
    assert {f.fill_id for f in later.fills} >= {f.fill_id for f in view.fills if f.at_ms >= since}
    assert all(f.at_ms >= since - 1 for f in later.fills)  # Alpaca's times are finer than a millisecond
    assert len(later.fills) < len(view.fills)


def test_the_open_orders_of_the_symbols_are_read_whoever_placed_them(venue: Venue) -> None:
    price = round(venue.base * 0.9, 2)
    if isinstance(venue, Binance):
        exchange = build_exchange(venue.settings, "binance")
        exchange.create_order(venue.symbol, "limit", "buy", 0.01, price, {"newClientOrderId": "by-hand"})
        venue.server.set_price("ETH/USDT", Decimal(2000))
        exchange.create_order("ETH/USDT", "limit", "buy", 0.1, 1000.0)  # another symbol: not asked for
    else:
        assert isinstance(venue, Alpaca)
        venue.server.set_price("MSFT", Decimal(300))
        client = make_trading_client(venue.settings)
        client.submit_order(LimitOrderRequest(symbol=venue.symbol, qty=2, side=OrderSide.BUY,
                                              time_in_force=TimeInForce.GTC, limit_price=price,
                                              client_order_id="by-hand"))
        client.submit_order(LimitOrderRequest(symbol="MSFT", qty=1, side=OrderSide.BUY,
                                              time_in_force=TimeInForce.GTC, limit_price=250))
    [order] = venue.broker().venue_view([venue.symbol], {venue.symbol: 0}, {}).open_orders
    qty = Decimal("0.01") if venue.name == "ccxt" else Decimal(2)
    assert (order.client_id, order.symbol, order.side, order.qty, order.filled, order.price) == (
        "by-hand", venue.symbol, "buy", qty, 0, Decimal(str(price)))
    assert "limit" in order.kind
