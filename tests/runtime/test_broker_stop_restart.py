"""The protective stop protects while the runtime is down: the venue fills it, and the restarted runtime books that
fill exactly once, with its reason, through the start-up recovery (``runtime.recovery``).

Real bars are replayed through a node trading buy-and-hold with a stop-loss, on each venue through its real
client (``tests.runtime.venue_cases``). The runtime is then dropped, the venue's price falls through the stop
and the venue fills it; a new store, broker and node restored from the state take over the stop on record,
book its fill, and reconcile: the venue holds what the ledger holds.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.domain import Timeframe
from pipeline.state import StateStore
from runtime.feeds import ReplayFeed
from runtime.node import Node
from runtime.recovery import compare_holdings
from tests.conftest import shared_file
from tests.runtime import venue_cases
from tests.runtime.venue_cases import Venue

venue = venue_cases.venue

SERIES = {  # the bars each venue replays: file, rows, feed key, timeframe
    "ccxt": ("binance_BTC-USDT_1m.parquet", slice(400_000, 400_040), "binance:BTC/USDT:1m", "1m"),
    "alpaca": ("quandlwiki_AAPL_1d.parquet", slice(-300, -260), "alpaca:AAPL:1d", "1d"),
}
FIRST_RUN = 20
STOP_LOSS = 0.1


def _config(venue: Venue, timeframe: str) -> PortfolioConfig:
    return PortfolioConfig.model_validate({"cash": venue.cash, "strategies": [
        {"id": "main", "strategy": "buy_and_hold", "symbols": [venue.symbol], "timeframe": timeframe,
         "allocation": 1.0,
         "engine": {"max_position": 0.5, "fee_bps": venue.fee_bps, "stop_loss": STOP_LOSS, "max_drawdown": None,
                    "daily_loss": None, "max_consecutive_losses": None, "max_trades_per_day": None}}]})


def _node(store: StateStore, venue: Venue, bars: pd.DataFrame, key: str, timeframe: str) -> tuple[Node, ReplayFeed]:
    feed = ReplayFeed({key: bars}, Timeframe.parse(timeframe), speed=1e12, sleep=lambda _s: None)  # a bar a batch
    sleeve = f"main:{venue.symbol}"
    return Node(store, _config(venue, timeframe), feed, {sleeve: key}, venue.broker(), mode="live"), feed


def _replay(node: Node, feed: ReplayFeed, venue: Venue, key: str) -> None:
    """Every bar the feed holds after the node's cursor, one a batch, the venue's price at each bar's close."""
    for batch in feed.batches(node.cursors):
        venue.set_price(float(feed.frames[key]["close"].iloc[int(batch.rows[key][0])]))
        node._process(batch)


def test_a_stop_the_venue_fills_while_the_runtime_is_down_is_booked_once_after_the_restart(
        venue: Venue, tmp_path: Path) -> None:
    name, rows, key, timeframe = SERIES[venue.name]
    bars = pd.read_parquet(shared_file(name)).iloc[rows].reset_index(drop=True)
    sleeve = f"main:{venue.symbol}"
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = StateStore(url)
    node, feed = _node(store, venue, bars.iloc[:FIRST_RUN], key, timeframe)
    node.start(fresh=True)
    _replay(node, feed, venue, key)
    held = venue.held()
    [resting] = [o for o in venue.orders() if o.kind == "stop"]
    assert held > 0 and (resting.status, resting.qty) == ("new", held)
    [on_record] = store.orders({"new"})
    assert (on_record.client_order_id, on_record.kind, on_record.reason) == (resting.client_id, "stop", "stop_loss")
    assert on_record.stop_price == resting.stop
    units = node.stepper.engines[sleeve].ledger.units
    assert units == pytest.approx(float(held), abs=1e-9)
    store.close()
    del node, feed  # the runtime is gone; the venue and the stored state remain

    assert resting.stop is not None
    venue.set_price(float(resting.stop) * 0.98)  # the market falls through the stop: the venue sells
    [stopped] = [o for o in venue.orders() if o.client_id == resting.client_id]
    assert (stopped.status, stopped.filled) == ("filled", held) and venue.held() == 0

    store = StateStore(url)
    restarted, feed = _node(store, venue, bars, key, timeframe)
    notes = restarted.start(fresh=False)
    assert any(f"1 open order(s) taken over from the store: {resting.client_id}" in note for note in notes), notes
    assert any(f"{venue.symbol}: venue holds 0" in note and "reconciled" in note for note in notes), notes
    _replay(restarted, feed, venue, key)

    fills = [f for f in store.fills() if f.client_order_id == resting.client_id]
    assert [(f.side, f.qty, f.reason) for f in fills] == [("sell", held, "stop_loss")]
    assert [o.status for o in store.orders() if o.client_order_id == resting.client_id] == ["filled"]
    all_fills = store.fills()
    assert len({f.fill_id for f in all_fills}) == len(all_fills)  # every fill booked once
    engine = restarted.stepper.engines[sleeve]
    assert engine.ledger.units == 0.0 and engine.ledger.inflight == 0.0
    assert [t.exit_reason for t in store.trades()] == ["stop_loss"]
    assert {p.sleeve: p.qty for p in store.positions()}[sleeve] == 0
    assert compare_holdings(restarted, final=True) == [f"{venue.symbol}: venue holds 0, the ledgers 0: reconciled"]
    client_ids = [o.client_id for o in venue.orders()]
    assert len(client_ids) == len(set(client_ids)) == 2  # the entry and its stop; stopped out, nothing more
    assert restarted.broker.holdings([venue.symbol]) == {venue.symbol: Decimal(0)}
