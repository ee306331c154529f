"""Continuous reconciliation with the venue, on each venue through its real client (``tests.runtime.venue_cases``):
what is done at the venue behind the runtime's back (an order placed by hand, a fill while the runtime is down or
between its bars, cash moved in or out) is found by the next pass, recorded with its numbers, alerted and acted
on; a venue that cannot be asked is an event and the runtime goes on."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.domain import Timeframe
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.brokers.alpaca import AlpacaBroker
from runtime.brokers.base import plain
from runtime.brokers.ccxt import CcxtBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node
from runtime.reconcile import FINDING, VERDICT
from tests.fakes.binance_server import FakeBinance
from tests.runtime import venue_cases
from tests.runtime.reconcile_cases import (
    EVERY_S,
    FIRST,
    START,
    Running,
    bars_of,
    cash_at,
    hand_limit_buy,
    hand_market_buy,
    move_cash,
    portfolio,
    start,
)
from tests.runtime.venue_cases import Venue

venue = venue_cases.venue


def _qty(venue: Venue) -> str:
    return "0.01" if venue.name == "ccxt" else "1"


def _price(run: Running) -> float:
    """The last close the runtime (and the venue) saw."""
    frame = run.feed.frames[run.key]
    return float(frame["close"].iloc[FIRST - 1])


def _resting_stop(venue: Venue) -> venue_cases.Seen:
    [stop] = [o for o in venue.orders() if o.kind == "stop" and o.status == "new"]
    return stop


def test_an_order_placed_by_hand_is_found_recorded_alerted_and_pauses_the_symbols_sleeves(
        venue: Venue, tmp_path: Path) -> None:
    run = start(venue, tmp_path)
    run.replay(upto=FIRST)
    _resting_stop(venue)  # the runtime's own protective stop rests at the venue: not a foreign order
    run.later(EVERY_S)
    run.idle()
    assert run.verdicts()[-1].detail.startswith("ok: "), run.verdicts()[-1].detail
    assert not run.paused() and not run.errors()

    venue_id, limit = hand_limit_buy(venue, _price(run) * 0.9, _qty(venue))
    passes = len(run.verdicts())
    run.later(EVERY_S - 1)
    run.idle()
    assert len(run.verdicts()) == passes  # not due yet: the hand order is not seen before the next pass
    run.later(1)
    run.idle()
    [found] = [f for f in run.findings() if "open order not placed by the runtime" in f]
    assert venue_id in found and f"buy {_qty(venue)} {venue.symbol} limit at {plain(limit)} (filled 0;" in found
    assert run.paused(), "the sleeve of the symbol is paused (committed)"
    assert [e for e in run.errors() if venue_id in e]
    assert run.verdicts()[-1].detail.startswith("mismatch: 1 finding(s)")

    alerts, findings = len(run.errors()), len(run.findings())
    run.later(EVERY_S)
    run.idle()  # still there: in the verdict, neither alerted nor recorded again
    assert (len(run.errors()), len(run.findings())) == (alerts, findings)
    assert venue_id in run.verdicts()[-1].detail and run.verdicts()[-1].detail.startswith("mismatch")
    run.replay()  # the runtime goes on with its bars
    assert run.node.summary.bars == 40


def test_a_fill_of_an_order_placed_by_hand_pauses_and_is_not_taken_for_a_cash_movement(
        venue: Venue, tmp_path: Path) -> None:
    run = start(venue, tmp_path)
    run.replay(upto=FIRST)
    held = venue.held()
    hand_market_buy(venue, _qty(venue))
    assert venue.held() == held + Decimal(_qty(venue))
    run.later(EVERY_S)
    run.idle()
    [found] = [f for f in run.findings() if "fill of an order not placed by the runtime" in f]
    assert f"buy {_qty(venue)} {venue.symbol} @ " in found
    assert not [f for f in run.findings() if "cash changed outside the runtime" in f]  # a trade, reported once
    assert run.paused() and [e for e in run.errors() if "not placed by the runtime" in e]
    verdict = run.verdicts()[-1].detail
    assert verdict.startswith("mismatch: 1 finding(s)") and "more than the ledgers" in verdict


def test_cash_moved_outside_the_runtime_is_found_recorded_alerted_and_pauses(venue: Venue, tmp_path: Path) -> None:
    run = start(venue, tmp_path)
    run.replay(upto=FIRST)
    run.later(EVERY_S)
    run.idle()
    move_cash(venue, Decimal(20))  # within the tolerance (0.1 % of the ledgers' cash, at least 1)
    run.later(EVERY_S)
    run.idle()
    assert run.verdicts()[-1].detail.startswith("ok: ") and not run.paused()

    move_cash(venue, Decimal(-5000))  # a withdrawal
    run.later(EVERY_S)
    run.idle()
    [found] = [f for f in run.findings() if "cash changed outside the runtime" in f]
    currency = "USDT" if venue.name == "ccxt" else "USD"
    assert found.startswith(f"{currency}: cash changed outside the runtime by -5,000.00 since the last")
    assert f"venue {cash_at(venue):,.2f}" in found
    assert run.paused() and [e for e in run.errors() if "-5,000.00" in e]
    assert run.verdicts()[-1].detail.startswith("mismatch: 1 finding(s)")

    run.later(EVERY_S)
    run.idle()  # the new cash is the baseline now: reported once
    assert run.verdicts()[-1].detail.startswith("ok: ")
    assert len([e for e in run.errors() if "cash changed" in e]) == 1
    assert run.paused(), "paused until an operator resumes the sleeve"


def test_a_fill_the_venue_made_between_bars_is_found_by_the_periodic_pass_and_booked_once(
        venue: Venue, tmp_path: Path) -> None:
    run = start(venue, tmp_path)
    run.replay(upto=FIRST)
    stop = _resting_stop(venue)
    assert stop.stop is not None
    venue.set_price(float(stop.stop) * 0.98)  # the market falls through the stop between two bars
    run.later(EVERY_S)
    run.idle()
    [found] = [f for f in run.findings() if "fill found at the venue between bars and booked" in f]
    assert stop.client_id in found and f"sell {plain(stop.qty)} {venue.symbol} @ " in found
    assert run.node.stepper.engines[run.sleeve].ledger.units == 0.0
    assert [(f.qty, f.reason) for f in run.store.fills() if f.client_order_id == stop.client_id] == [
        (stop.qty, "stop_loss")]
    assert run.verdicts()[-1].detail.startswith("ok: "), run.verdicts()[-1].detail
    assert not run.paused() and not run.errors()

    run.replay()  # the next bars follow no order twice: the fill stays booked once
    fills = run.store.fills()
    assert [f.client_order_id for f in fills].count(stop.client_id) == 1
    assert len({f.fill_id for f in fills}) == len(fills)
    assert [t.exit_reason for t in run.store.trades()] == ["stop_loss"]


def test_a_fill_the_venue_made_while_the_runtime_was_down_is_found_at_restart_and_booked_once(
        venue: Venue, tmp_path: Path) -> None:
    first = start(venue, tmp_path, bars=FIRST)
    first.replay()
    stop = _resting_stop(venue)
    held = venue.held()
    first.store.close()  # the runtime is gone; the venue and the stored state remain
    assert stop.stop is not None
    venue.set_price(float(stop.stop) * 0.98)  # the venue fills the stop while nobody watches
    cash = cash_at(venue)

    run = start(venue, tmp_path, fresh=False)
    [found] = [f for f in run.findings() if "not booked yet" in f]
    assert stop.client_id in found and f"sell {plain(held)} {venue.symbol} @ " in found
    assert run.verdicts()[-1].detail.startswith("ok: ") and not run.errors()
    assert run.node.stepper.engines[run.sleeve].ledger.units > 0  # booked by the sleeve's next bar

    run.replay(upto=FIRST + 1)  # the first bar after the restart follows the stop: its fill is booked
    assert [(f.qty, f.reason) for f in run.store.fills() if f.client_order_id == stop.client_id] == [
        (held, "stop_loss")]
    assert run.node.stepper.engines[run.sleeve].ledger.units == 0.0
    run.later(EVERY_S)
    run.idle()
    verdict = run.verdicts()[-1].detail
    assert verdict.startswith("ok: ") and verdict.endswith(", 0 not booked yet")
    assert f"venue {cash:,.2f}" in verdict
    assert not run.paused() and not run.errors()
    run.replay()
    assert [f.client_order_id for f in run.store.fills()].count(stop.client_id) == 1


def test_a_venue_that_cannot_be_asked_is_an_event_and_the_runtime_goes_on(venue: Venue, tmp_path: Path) -> None:
    run = start(venue, tmp_path)
    run.replay(upto=10)
    broker = run.node.broker
    assert isinstance(broker, CcxtBroker | AlpacaBroker)
    attempts = broker.retry.attempts
    assert attempts is not None
    server = venue.server  # type: ignore[attr-defined]
    for _ in range(2):  # two passes in a row meet a venue that answers 503 to every try
        server.fail_next(503, endpoint="account", times=attempts)
        run.later(EVERY_S)
        run.idle()
        assert server.pending_faults == 0
        assert run.verdicts()[-1].detail.startswith("unavailable: positions not reconciled:")
    [found] = [f for f in run.findings() if "could not be asked" in f]
    assert [e for e in run.errors() if "could not be asked" in e] == [f"{found}"]  # alerted once
    assert not run.paused()

    run.replay(upto=FIRST)  # the runtime goes on: bars, orders and fills
    assert run.node.summary.bars == FIRST and venue.held() > 0
    run.later(EVERY_S)
    run.idle()
    assert run.verdicts()[-1].detail.startswith("ok: "), run.verdicts()[-1].detail


def test_a_paper_runtime_has_no_venue_to_reconcile(tmp_path: Path) -> None:
    frame, key, timeframe = bars_of(venue_cases.Binance)  # type: ignore[arg-type]  # its figures: no venue
    store = StateStore(f"sqlite:///{tmp_path / 'paper.db'}")
    clock = FixedClock(START)
    feed = ReplayFeed({key: frame}, Timeframe.parse(timeframe), speed=1e12, sleep=lambda _s: None)
    node = Node(store, portfolio(venue_cases.Binance, timeframe), feed,  # type: ignore[arg-type]
                {"main:BTC/USDT": key}, PaperBroker(), clock=clock, reconcile_seconds=EVERY_S)
    node.start(fresh=True)
    for batch in feed.batches(node.cursors):
        node._process(batch)
        clock.set(clock.now() + pd.Timedelta(seconds=EVERY_S))
        node._idle()
    assert node.summary.bars == len(frame)
    assert not store.events(FINDING) and not store.events(VERDICT)


@pytest.fixture
def binance(tmp_path: Path) -> Iterator[venue_cases.Binance]:
    with FakeBinance(balances={"USDT": Decimal(venue_cases.Binance.cash)}) as server:
        case = venue_cases.Binance(tmp_path, server)
        case.set_price(case.base)
        yield case


def test_a_hand_fill_found_while_the_cash_moved_is_reported_once_not_again_as_cash_moved(
        binance: venue_cases.Binance, tmp_path: Path) -> None:
    run = start(binance, tmp_path)
    run.replay(upto=FIRST)
    run.later(EVERY_S)
    run.idle()
    assert run.verdicts()[-1].detail.startswith("ok: ")
    # the order is placed by hand (and filled) while the pass reads the venue: between its two reads of the cash
    binance.server.before_next("openOrders", lambda: hand_market_buy(binance, _qty(binance)))
    run.later(EVERY_S)
    run.idle()
    verdict = run.verdicts()[-1].detail
    assert "the venue's cash changed while it was read" in verdict and verdict.startswith("mismatch: 1 finding(s)")
    [found] = [f for f in run.findings() if "fill of an order not placed by the runtime" in f]
    assert [e for e in run.errors() if "not placed by the runtime" in e] == [f"reconciliation: {found}"]

    for _ in range(2):  # the cash is compared again: the fill's cash is not taken for cash moved outside
        run.later(EVERY_S)
        run.idle()
        assert run.verdicts()[-1].detail.startswith("ok: "), run.verdicts()[-1].detail
    assert not [f for f in run.findings() if "cash changed outside the runtime" in f]
    assert len(run.errors()) == 1
