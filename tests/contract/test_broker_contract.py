"""The contract every broker keeps, checked on paper, ccxt (a fake Binance) and Alpaca (a fake Alpaca) alike."""

# One scenario: a sleeve trades the same real bars (AAPL daily closes, replayed one bar at a time; a venue's price
# follows each close) through the runtime node, with a partial fill, a rejection and two crashes:
#
# * crash A, between batches, while an order is partly filled: the node and the broker are dropped, new ones are
#   built on the same store, started with ``start(fresh=False)`` and the broker takes over the open order;
# * crash B, inside a batch that sends an order: the batch's changes are never committed (the store is put back
#   as it was before the batch), but its order reached the venue; the restarted node processes the batch again.
#
# What must hold: each order has a unique, deterministic client id and reaches the venue once; every stored fill
# belongs to a stored order and is booked once (a partial fill once, its rest once when it completes, also across
# a restart); a rejected order leaves no units in flight; the ledger's units equal the stored position, the venue's
# own ledger and what ``holdings()`` reports.

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig, run_portfolio
from pipeline.domain import Timeframe, epoch_ms
from pipeline.state import StateStore
from runtime.feeds import Batch, ReplayFeed
from runtime.node import Node
from tests.conftest import shared_file
from tests.contract.broker_venues import CASH, VENUES, PaperVenue

PARTIAL_FROM = 60
"""The first order from this bar on fills in part; crash A follows it."""
REJECT_FROM = 120
"""The first order from this bar on is rejected by the venue."""
CRASH_B_FROM = 200
"""The first batch from this bar on that sends an order is lost in flight (crash B)."""


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet")).iloc[-300:].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- the runtime


def _config(symbol: str) -> PortfolioConfig:
    return PortfolioConfig.model_validate({"cash": CASH, "strategies": [
        {"id": "main", "strategy": "sma_cross", "symbols": [symbol], "timeframe": "1d", "allocation": 1.0,
         "params": {"fast": 5, "slow": 15},
         "engine": {"max_position": 0.5, "fee_bps": 10, "max_drawdown": None, "daily_loss": None,
                    "max_consecutive_losses": None, "max_trades_per_day": None}}]})


class Process:
    """One runtime process: a node with its own broker on the shared store (dropped whole to simulate a crash)."""

    def __init__(self, venue: PaperVenue, store: StateStore, bars: pd.DataFrame, fresh: bool) -> None:
        self.key = f"replay:{venue.symbol}:1d"
        self.sleeve = f"main:{venue.symbol}"
        self.broker = venue.broker()
        self.feed = ReplayFeed({self.key: bars}, Timeframe.parse("1d"), speed=1e12, sleep=lambda _s: None)
        self.node = Node(store, _config(venue.symbol), self.feed, {self.sleeve: self.key}, self.broker, mode="live")
        self.node.start(fresh=fresh)
        if not fresh:
            still_open = store.orders({"new", "partially_filled"})
            taken = set(getattr(self.broker, "open", {}))
            if still_open and not {o.client_order_id for o in still_open} <= taken:
                self.broker.resume(still_open, store.fills())  # a node that does not take them over itself

    def batches(self) -> Iterator[Batch]:
        return self.feed.batches(self.node.cursors)

    @property
    def engine(self) -> Any:
        return self.node.stepper.engines[self.sleeve]


def _copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.mark.parametrize("kind", ["paper", "ccxt", "alpaca"])
def test_every_broker_keeps_the_contract(kind: str, tmp_path: Path, bars: pd.DataFrame) -> None:
    database = tmp_path / "state.db"
    url = f"sqlite:///{database}"
    closes = bars["close"].to_numpy()
    stamps = list(epoch_ms(bars["timestamp"]))
    with VENUES[kind](tmp_path) as venue:
        store = StateStore(url)
        process = Process(venue, store, bars, fresh=True)
        partial_id: str | None = None
        crash_a = crash_b = False
        rejected_seen = False
        batches = process.batches()
        while (batch := next(batches, None)) is not None:
            row = int(batch.rows[process.key][0])
            venue.set_price(Decimal(repr(float(closes[row]))))
            if row == PARTIAL_FROM:
                venue.arm_partial()
            if row == REJECT_FROM:
                venue.arm_reject()
            before = {o.client_order_id for o in store.orders()}
            if row >= CRASH_B_FROM and not crash_b:
                _copy_database(database, tmp_path / "before-batch.db")
            process.node._process(batch)
            sent = {o.client_order_id for o in store.orders()} - before

            if row >= CRASH_B_FROM and not crash_b and sent:
                # crash B: the batch's orders reached the venue, but nothing of the batch was committed
                crash_b = True
                store.close()
                _copy_database(tmp_path / "before-batch.db", database)
                store = StateStore(url)
                assert not sent & {o.client_order_id for o in store.orders()}
                process = Process(venue, store, bars, fresh=False)
                batches = process.batches()
                continue

            partly = [o for o in store.orders({"partially_filled"}) if o.client_order_id in sent]
            if partly:  # booked once, in part; the rest is booked when it completes, after crash A
                partial_id = partly[0].client_order_id
                own = [f for f in store.fills() if f.client_order_id == partial_id]
                assert len(own) == 1
                assert own[0].qty < partly[0].qty
            if row >= PARTIAL_FROM and sent and not crash_a:
                crash_a = True  # crash A, right after the first order from PARTIAL_FROM on
                del process, batches
                process = Process(venue, store, bars, fresh=False)
                batches = process.batches()
                continue

            rejected = [o for o in store.orders({"rejected"}) if o.client_order_id in sent]
            if rejected:
                rejected_seen = True
                assert process.engine.ledger.inflight == 0.0  # nothing of it is left in flight
                assert rejected[0].client_order_id not in getattr(process.broker, "open", {})

        assert crash_a and crash_b
        node, engine = process.node, process.engine
        orders = {o.client_order_id: o for o in store.orders()}
        fills = store.fills()

        # every order: a unique, deterministic client id, at the venue at most once
        for order in orders.values():
            bar_ms = int(pd.Timestamp(order.bar).value // 1_000_000)
            assert bar_ms in stamps
            assert order.client_order_id in {venue.expected_id(order.sleeve, bar_ms, n) for n in range(3)}
        at_venue = venue.client_ids()
        assert len(at_venue) == len(set(at_venue))
        assert set(at_venue) <= set(orders)
        posted = venue.posted()  # found after crash B by its id, never sent a second time
        assert len(posted) == len(set(posted))
        assert set(posted) == set(at_venue) | {o.client_order_id for o in orders.values() if o.status == "rejected"}

        # every fill belongs to an order and is booked once: per order, the venue's filled quantity exactly
        assert {f.client_order_id for f in fills} <= set(orders)
        assert len({f.fill_id for f in fills}) == len(fills)
        for client_id, filled in venue.filled().items():
            assert sum((f.qty for f in fills if f.client_order_id == client_id), Decimal(0)) == filled

        # the ledger's units = the stored position = the venue's ledger = holdings()
        units = engine.ledger.units
        stored = {(p.sleeve, p.symbol): p.qty for p in store.positions()}
        assert float(stored[(process.sleeve, venue.symbol)]) == pytest.approx(units, abs=1e-12)
        held = venue.held()
        reported = process.broker.holdings([venue.symbol])
        if held is None:
            assert reported is None
            # paper: the run with its two crashes booked exactly the backtest's fills, none twice
            expected = run_portfolio(_config(venue.symbol), lambda _s, _tf: bars).sleeves[process.sleeve].fills
            assert len(fills) == len(expected) > 10
            assert [float(f.qty) for f in fills] == pytest.approx(list(expected["qty"]), rel=1e-12)
        else:
            assert reported == {venue.symbol: held}
            assert units == pytest.approx(float(held), abs=1e-8)
            assert rejected_seen
            assert partial_id is not None
            own = [f for f in fills if f.client_order_id == partial_id]
            assert len(own) == 2  # the part booked before crash A, the rest once after it
            assert orders[partial_id].status == "filled"
            assert sum((f.qty for f in own), Decimal(0)) == orders[partial_id].qty
            assert len(at_venue) > 10
        assert engine.ledger.inflight == 0.0
        assert node.summary.duplicate_fills == 0
        store.close()
