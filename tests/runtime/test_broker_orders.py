"""Limit, day and stop orders, and the protective stop, routed by both venue brokers through the real ccxt and
alpaca-py clients against the fake venues (``tests.runtime.venue_cases``): the engine decides, ``route`` sends,
the fake fills as its price moves, and the ledger must end equal to the venue's."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest

from pipeline.domain import utc_from_ms
from pipeline.domain.orders import order_table
from pipeline.engine import Engine
from runtime.brokers.routing import VenueRouting
from tests.runtime import venue_cases
from tests.runtime.venue_cases import MINUTE, NEXT_DAY, SLEEVE, T0, Venue, at, bar, engine_for

venue = venue_cases.venue  # each test runs on the fake Binance (ccxt) and the fake Alpaca


def _route(broker: VenueRouting, engine: Engine, venue: Venue, ms: int) -> tuple[list, list]:  # type: ignore[type-arg]
    return broker.route(SLEEVE, venue.symbol, engine, ms)


def _assert_matches_the_venue(broker: VenueRouting, engine: Engine, venue: Venue) -> None:
    assert engine.ledger.units == pytest.approx(float(venue.held()), abs=1e-9)
    assert engine.ledger.inflight == pytest.approx(float(sum((e.rest for e in broker.open.values()
                                                              if not e.protective), Decimal(0))), abs=1e-9)


def test_a_limit_order_rests_fills_in_part_and_a_new_decision_replaces_its_rest(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue)
    limit = order_table(1, kind="limit", price=at(venue, 0.98))[0]
    bar(engine, venue, T0, 1.0, 1.0, 0, order=limit)
    orders, fills = _route(broker, engine, venue, T0)
    [placed] = venue.orders()
    assert (placed.kind, placed.status, fills) == ("limit", "new", [])
    assert [(o.kind, o.price, o.status) for o in orders] == [("limit", Decimal(repr(at(venue, 0.98))), "new")]
    assert engine.ledger.inflight == pytest.approx(float(placed.qty))

    venue.partial_next("0.4")
    venue.set_price(at(venue, 0.97))  # reaches the limit: part of it fills at its price
    bar(engine, venue, T0 + MINUTE, 0.97, 1.0, 0, order=limit)  # the same decision: nothing new is sent
    orders, fills = _route(broker, engine, venue, T0 + MINUTE)
    [part] = [f.qty for f in fills]
    assert 0 < part < placed.qty and [o.status for o in orders] == ["partially_filled"]
    assert fills[0].price == Decimal(repr(at(venue, 0.98)))
    _assert_matches_the_venue(broker, engine, venue)

    bar(engine, venue, T0 + 2 * MINUTE, 0.97, 1.0, 1)  # the same exposure, now at market
    orders, fills = _route(broker, engine, venue, T0 + 2 * MINUTE)
    first, second = venue.orders()
    assert (first.status, first.filled) == ("canceled", part)
    assert (second.kind, second.status) == ("market", "filled")
    assert second.qty >= placed.qty - part  # the cancelled rest goes on in the new order
    assert [o.status for o in orders] == ["partially_filled", "canceled", "filled"]
    assert broker.open == {}
    _assert_matches_the_venue(broker, engine, venue)
    assert engine.ledger.units == pytest.approx(float(first.filled + second.qty))


def test_an_exit_cancels_a_working_limit_and_sells_only_what_it_bought(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue)
    bar(engine, venue, T0, 1.0, 1.0, 0, order=order_table(1, kind="limit", price=at(venue, 0.99))[0])
    _route(broker, engine, venue, T0)
    venue.partial_next("0.5")
    venue.set_price(at(venue, 0.99))
    bar(engine, venue, T0 + MINUTE, 0.99, 0.0, 2)  # get out while the buy is half filled
    orders, fills = _route(broker, engine, venue, T0 + MINUTE)
    buy, sell = venue.orders()
    assert (buy.status, sell.kind, sell.status) == ("canceled", "market", "filled")
    assert sell.qty == buy.filled > 0
    assert [(o.kind, o.status) for o in orders] == [("limit", "partially_filled"), ("limit", "canceled"),
                                                    ("market", "filled")]
    assert [f.side for f in fills] == ["buy", "sell"]
    assert venue.held() == 0 and engine.ledger.units == 0.0
    _assert_matches_the_venue(broker, engine, venue)


def test_a_day_order_is_cancelled_when_its_day_ends_and_its_rest_released(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue)
    day_limit = order_table(1, kind="limit", price=at(venue, 0.98), tif="day")[0]
    bar(engine, venue, T0, 1.0, 1.0, 0, order=day_limit)
    orders, _ = _route(broker, engine, venue, T0)
    assert orders[0].expires_at == utc_from_ms(NEXT_DAY)
    venue.partial_next("0.5")
    venue.set_price(at(venue, 0.98))
    bar(engine, venue, NEXT_DAY - MINUTE, 0.98, 1.0, 0, order=day_limit)
    _, fills = _route(broker, engine, venue, NEXT_DAY - MINUTE)  # still its day: it keeps working
    [(client_id, status)] = [(o.client_id, o.status) for o in venue.orders()]
    assert status == "partially_filled" and len(fills) == 1

    venue.set_price(at(venue, 1.01))
    bar(engine, venue, NEXT_DAY, 1.01, 1.0, 0, order=day_limit)
    orders, fills = _route(broker, engine, venue, NEXT_DAY)
    [expired] = venue.orders()
    assert (expired.status, fills) == ("canceled", [])
    assert [(o.client_order_id, o.status) for o in orders] == [(client_id, "partially_filled"),
                                                               (client_id, "canceled")]
    assert engine.ledger.inflight == 0.0 and engine.ledger.units == pytest.approx(float(expired.filled))
    assert broker.open == {}

    bar(engine, venue, NEXT_DAY + MINUTE, 1.01, 1.0, 0, order=day_limit)  # the same decision acts again
    _route(broker, engine, venue, NEXT_DAY + MINUTE)
    assert [(o.kind, o.status) for o in venue.orders()[1:]] == [("limit", "new")]
    _assert_matches_the_venue(broker, engine, venue)


def _tick(venue: Venue, price: float) -> Decimal:
    """A sell stop's trigger on the venue's grid: rounded up to the cent (both fakes' tick here)."""
    return (Decimal(repr(price)) / Decimal("0.01")).to_integral_value(ROUND_CEILING) * Decimal("0.01")


def _stops(venue: Venue) -> list[tuple[str, Decimal | None, Decimal]]:
    return [(o.status, o.stop, o.qty) for o in venue.orders() if o.kind == "stop"]


def test_the_protective_stop_rests_after_the_entry_follows_the_trailing_level_and_goes_with_the_exit(
        venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue, stop_loss=0.05, trailing_stop=0.03)
    bar(engine, venue, T0, 1.0, 1.0, 0)
    orders, fills = _route(broker, engine, venue, T0)
    held = venue.held()
    stop = engine.protective_stop()
    assert stop is not None and stop.reason == "trailing_stop" and stop.qty == pytest.approx(-float(held))
    assert _stops(venue) == [("new", _tick(venue, stop.price), held)]
    [record] = [o for o in orders if o.kind == "stop"]
    assert (record.side, record.qty, record.stop_price, record.status) == ("sell", held, _tick(venue, stop.price),
                                                                           "new")
    assert record.reason == "trailing_stop" and record.client_order_id.endswith("-s")
    assert engine.ledger.inflight == 0.0  # a protective stop is never counted in flight

    venue.set_price(at(venue, 1.04))
    bar(engine, venue, T0 + MINUTE, 1.04, 1.0, 0, high=1.05)  # a new high: the trailing stop moves up
    orders, _ = _route(broker, engine, venue, T0 + MINUTE)
    moved = engine.protective_stop()
    assert moved is not None and moved.price == pytest.approx(at(venue, 1.05) * 0.97)
    assert _stops(venue) == [("canceled", _tick(venue, stop.price), held), ("new", _tick(venue, moved.price), held)]
    assert [o.status for o in orders if o.kind == "stop"] == ["new", "canceled", "new"]  # followed, replaced

    bar(engine, venue, T0 + 2 * MINUTE, 1.03, 1.0, 0)  # no new high: the stop stays as it is
    orders, _ = _route(broker, engine, venue, T0 + 2 * MINUTE)
    assert len(venue.orders()) == 3 and [o.status for o in orders] == ["new"]

    bar(engine, venue, T0 + 3 * MINUTE, 1.03, 0.0, 2)  # the strategy gets out
    orders, fills = _route(broker, engine, venue, T0 + 3 * MINUTE)
    assert [s[0] for s in _stops(venue)] == ["canceled", "canceled"]
    exit_order = venue.orders()[-1]
    assert (exit_order.kind, exit_order.status, exit_order.qty) == ("market", "filled", held)
    assert [(f.side, f.qty, f.reason) for f in fills] == [("sell", held, "leave")]
    assert venue.held() == 0 and engine.ledger.units == 0.0 and engine.protective_stop() is None
    assert broker.open == {}


def test_a_stop_the_market_already_crossed_is_replaced_by_a_market_exit(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue, trailing_stop=0.03)
    bar(engine, venue, T0, 1.0, 1.0, 0)
    _route(broker, engine, venue, T0)
    held = venue.held()
    venue.set_price(at(venue, 1.02))  # the venue trades below the level the bar's high sets next
    bar(engine, venue, T0 + MINUTE, 1.02, 1.0, 0, high=1.10)
    orders, fills = _route(broker, engine, venue, T0 + MINUTE)
    refused = [o for o in orders if o.status == "rejected"]
    assert [(o.kind, o.client_order_id.endswith("-s")) for o in refused] == [("stop", True)]
    exit_order = venue.orders()[-1]
    assert (exit_order.kind, exit_order.status, exit_order.qty) == ("market", "filled", held)
    assert exit_order.client_id.endswith("-x")
    assert [(f.side, f.qty, f.reason) for f in fills] == [("sell", held, "trailing_stop")]
    assert venue.held() == 0 and engine.ledger.units == 0.0 and engine.ledger.inflight == 0.0
    bar(engine, venue, T0 + 2 * MINUTE, 1.02, 1.0, 0)  # stopped out: the same decision does not buy again
    orders, _ = _route(broker, engine, venue, T0 + 2 * MINUTE)
    assert orders == [] and broker.open == {}


def test_a_stop_that_filled_before_an_exit_shrinks_the_exit_to_what_is_held(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue, stop_loss=0.05)
    bar(engine, venue, T0, 1.0, 1.0, 0)
    _route(broker, engine, venue, T0)
    held = venue.held()
    venue.partial_next("0.5")
    venue.set_price(at(venue, 0.94))  # the venue's stop triggers: half of it fills
    bar(engine, venue, T0 + MINUTE, 0.94, 0.0, 2)  # meanwhile the strategy decides to get out
    orders, fills = _route(broker, engine, venue, T0 + MINUTE)
    stop_order, exit_order = venue.orders()[1:]
    assert (stop_order.kind, stop_order.status, stop_order.filled) == ("stop", "canceled", stop_order.qty / 2)
    assert (exit_order.kind, exit_order.status, exit_order.qty) == ("market", "filled", held - stop_order.filled)
    assert [(f.qty, f.reason) for f in fills] == [(stop_order.filled, "stop_loss"), (exit_order.qty, "leave")]
    assert [(o.kind, o.status) for o in orders] == [("stop", "partially_filled"), ("stop", "canceled"),
                                                    ("market", "filled")]
    assert venue.held() == 0 and engine.ledger.units == 0.0 and engine.ledger.inflight == 0.0
    assert broker.open == {}


def test_a_stop_entry_the_market_already_crossed_goes_out_at_market(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue)
    venue.set_price(at(venue, 1.02))  # the venue already trades above the breakout level
    bar(engine, venue, T0, 1.0, 1.0, 0, order=order_table(1, kind="stop", price=at(venue, 1.01))[0])
    orders, fills = _route(broker, engine, venue, T0)
    assert [(o.kind, o.status) for o in orders] == [("stop", "rejected"), ("market", "filled")]
    assert orders[1].client_order_id == orders[0].client_order_id + "m"
    [bought] = venue.orders()
    assert (bought.kind, bought.qty) == ("market", orders[0].qty)
    assert [(f.side, f.price) for f in fills] == [("buy", Decimal(repr(at(venue, 1.02))))]
    _assert_matches_the_venue(broker, engine, venue)


def test_a_bar_through_the_stop_while_a_limit_exit_holds_the_units_sells_everything_at_market(venue: Venue) -> None:
    broker, engine = venue.broker(), engine_for(venue, stop_loss=0.05)
    bar(engine, venue, T0, 1.0, 1.0, 0)
    _route(broker, engine, venue, T0)
    held = venue.held()
    exit_limit = order_table(1, kind="limit", price=at(venue, 1.03))[0]
    bar(engine, venue, T0 + MINUTE, 1.0, 0.0, 2, order=exit_limit)  # a limit exit above the market
    _route(broker, engine, venue, T0 + MINUTE)
    assert [(o.kind, o.status) for o in venue.orders()][-2:] == [("stop", "canceled"), ("limit", "new")]
    venue.set_price(at(venue, 0.90))  # the market falls through the stop level: nothing rests to catch it
    bar(engine, venue, T0 + 2 * MINUTE, 0.90, float("nan"), -1)
    _, fills = _route(broker, engine, venue, T0 + 2 * MINUTE)
    limit, market = venue.orders()[-2], venue.orders()[-1]
    assert (limit.kind, limit.status) == ("limit", "canceled")
    assert (market.kind, market.status, market.qty) == ("market", "filled", held)
    assert [(f.side, f.qty, f.reason) for f in fills] == [("sell", held, "stop_loss")]
    assert venue.held() == 0 and engine.ledger.units == 0.0 and engine.protective_stop() is None
    _assert_matches_the_venue(broker, engine, venue)
