"""A runtime on a Binance that charges the commission in the asset a fill gives (the base on a buy, Binance's rule
when the fee is not paid in BNB), through the real ccxt client: its fills are booked as what they did to the
balances, so round trip after round trip its position and cash are the venue's and every reconciliation is ok."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.binance_server import FakeBinance
from tests.runtime.reconcile_cases import EVERY_S, start
from tests.runtime.venue_cases import Binance

BARS = 40
SMA = {"fast": 2, "slow": 5}
"""A crossover that goes in and out several times over the replayed bars."""


@pytest.fixture
def binance(tmp_path: Path) -> Iterator[Binance]:
    with FakeBinance(balances={"USDT": Decimal(Binance.cash)}, commission_asset="received") as server:
        case = Binance(tmp_path, server)
        case.set_price(case.base)
        yield case


def test_round_trips_with_the_fee_taken_from_the_base_leave_the_ledger_equal_to_the_venue(
        binance: Binance, tmp_path: Path) -> None:
    run = start(binance, tmp_path, strategy="sma_cross", params=SMA, tolerance=0.0)
    ledger = run.node.stepper.engines[run.sleeve].ledger
    for row in range(1, BARS + 1):  # a reconciliation after every bar, each compared without tolerance
        run.replay(upto=row)
        run.later(EVERY_S)
        run.idle()
        verdict = run.verdicts()[-1].detail
        assert verdict.startswith("ok: "), (row, verdict)
        held, cash = binance.server.balances()["BTC"].total, binance.server.balances()["USDT"].total
        assert Decimal(repr(ledger.units)).quantize(Decimal("1e-8")) == held, row
        assert abs(Decimal(repr(ledger.cash)) - cash) < Decimal("1e-6"), row
        assert ledger.inflight == 0.0, row  # the orders filled in full: none of their units still counts in flight

    trades = binance.server.trades
    buys = [t for t in trades if t.side == "BUY"]
    assert len(buys) >= 3 and len(trades) - len(buys) >= 3  # several round trips
    assert {t.commission_asset for t in buys} == {"BTC"} and all(t.commission > 0 for t in buys)
    verdicts = [v.detail for v in run.verdicts()]
    assert len(verdicts) == BARS + 1 and all(v.startswith("ok: ") for v in verdicts), verdicts
    assert not [f for f in run.findings() if "paused" in f] and not run.errors() and not run.paused()
    assert "BTC/USDT: venue holds" in verdicts[-1] and ": reconciled" in verdicts[-1]

    [position] = run.store.positions()
    assert position.qty.quantize(Decimal("1e-8")) == binance.server.balances()["BTC"].total
    fills = run.store.fills()
    fee_paid = sum((t.commission for t in buys), Decimal(0))
    assert sum(f.qty for f in fills if f.side == "buy") == sum(t.qty for t in buys) - fee_paid  # units received
    for fill, trade in zip(fills, trades, strict=True):
        assert fill.fill_id == f"binance:{trade.trade_id}"
        if trade.side == "BUY":  # the fee taken from the base, booked in the quote at the fill's price
            assert (fill.qty, fill.fee) == (trade.qty - trade.commission, trade.commission * trade.price)
        else:
            assert (fill.qty, fill.fee) == (trade.qty, trade.commission)
