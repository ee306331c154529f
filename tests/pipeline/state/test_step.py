"""Writing a step: exact money and UTC times, idempotent, order status and cursors only forward, all or nothing."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.domain.trading import Position
from pipeline.state import CursorRecord, StateStore, StepRecord
from tests.pipeline.state.records import MINUTE, T0, D, fill, full_step, ledger, order, renew, snapshot

# ----------------------------------------------------------------------------------------- exact values


def test_decimals_round_trip_exactly(store: StateStore) -> None:
    sum_ = D("0.1") + D("0.2")
    digits28 = D("1234567890.123456789012345678")
    tiny, huge, zeros = D("-0.0000000000000000000000000001"), D("1E+30"), D("2.50")
    at = T0
    store.apply_step(StepRecord(
        positions=[Position(sleeve="btc", symbol="BTC/USDT", qty=sum_, avg_price=digits28, updated_at=at)],
        ledgers=[renew(ledger(at), cash=tiny, units=huge, equity=zeros)],
        fills=[fill("v-9", at, qty="0.3000000000000000000000000001")],
    ))
    (position,) = store.positions()
    assert position.qty == D("0.3") and str(position.qty) == "0.3"
    assert str(position.avg_price) == "1234567890.123456789012345678"
    row = store.ledgers()["btc"]
    assert (str(row.cash), str(row.units), str(row.equity)) == (str(tiny), "1E+30", "2.50")
    assert all(isinstance(v, Decimal) for v in (row.cash, row.units, row.equity, position.qty))
    assert store.fills()[0].qty == D("0.3000000000000000000000000001")
    assert json.loads(row.kernel_state)["f"][0] == 0.1 + 0.2  # the engine's floats, bit for bit


def test_aware_datetimes_round_trip_in_utc(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")  # the process's local zone plays no part
    time.tzset()
    try:
        india = timezone(timedelta(hours=5, minutes=30))
        local = datetime(2026, 3, 8, 12, 34, 56, 789012, tzinfo=india)
        stamp = pd.Timestamp("2026-03-08 07:04:57.5", tz="UTC")
        store.apply_step(StepRecord(
            fills=[fill("v-a", local), fill("v-b", stamp)],
            cursors=[CursorRecord(feed="binance:BTC/USDT:1m", last_bar=local)],
        ))
        fills = store.fills()
        assert [f.fill_id for f in fills] == ["v-a", "v-b"]  # ordered by instant, not by wall-clock text
        assert fills[0].at == local and fills[0].at.tzinfo == UTC
        assert fills[0].at == datetime(2026, 3, 8, 7, 4, 56, 789012, tzinfo=UTC)
        assert fills[1].at == stamp.to_pydatetime() and type(fills[1].at) is datetime
        assert [f.fill_id for f in store.fills(since=stamp.to_pydatetime())] == ["v-b"]
        cursor = store.cursor("binance:BTC/USDT:1m")
        assert cursor == local and cursor is not None and cursor.tzinfo == UTC
    finally:
        monkeypatch.undo()
        time.tzset()


# ------------------------------------------------------------------------------------------- the step


def test_apply_step_is_idempotent(store: StateStore) -> None:
    step = full_step()
    first = store.apply_step(step)
    assert (first.new_fills, first.duplicate_fills) == (2, 1)  # the repeated fill id inside the step
    assert (first.new_orders, first.new_trades, first.new_equity, first.new_breaker_events) == (2, 1, 2, 1)
    before = snapshot(store)

    second = store.apply_step(step)
    assert (second.new_fills, second.duplicate_fills) == (0, 3)
    assert (second.new_orders, second.updated_orders, second.new_trades, second.new_equity,
            second.new_breaker_events) == (0, 0, 0, 0, 0)
    assert snapshot(store) == before
    assert store.known_fill_ids() == {"v-1", "v-2"}
    assert sum(f.qty for f in store.fills()) == D("0.50")
    bot = store.bot_state()
    assert bot is not None and bot.heartbeat_at == T0 + MINUTE

    # positions and ledgers are the latest snapshot the runtime wrote
    store.apply_step(StepRecord(positions=[Position(sleeve="btc", symbol="BTC/USDT", qty=D(0), avg_price=D(0),
                                                    updated_at=T0 + 2 * MINUTE)],
                                ledgers=[ledger(T0 + 2 * MINUTE, "100000.01")]))
    (position,) = store.positions()
    assert (position.qty, position.updated_at, store.ledgers()["btc"].cash) == (D(0), T0 + 2 * MINUTE, D("100000.01"))


def test_order_status_never_moves_backward(store: StateStore) -> None:
    def status(n: int) -> str:
        return {o.client_order_id: o.status for o in store.orders()}[order(n).client_order_id]

    store.apply_step(StepRecord(orders=[order(1, "new"), order(2, "new"), order(3, "partially_filled")]))
    result = store.apply_step(StepRecord(orders=[order(1, "filled", T0 + MINUTE, price=D("91234.56"),
                                                       venue_order_id="V1")]))
    assert result.updated_orders == 1 and status(1) == "filled"
    for later in ("partially_filled", "new", "canceled", "rejected"):
        assert store.apply_step(StepRecord(orders=[order(1, later, T0 + 2 * MINUTE)])).updated_orders == 0
        assert status(1) == "filled"
    (row,) = store.orders({"filled"})
    assert (row.price, row.venue_order_id, row.updated_at) == (D("91234.56"), "V1", T0 + MINUTE)

    store.apply_step(StepRecord(orders=[order(2, "rejected", T0 + MINUTE)]))
    store.apply_step(StepRecord(orders=[order(2, "filled", T0 + 2 * MINUTE)]))
    assert status(2) == "rejected"
    store.apply_step(StepRecord(orders=[order(3, "new", T0 + MINUTE)]))
    assert status(3) == "partially_filled"
    store.apply_step(StepRecord(orders=[order(3, "canceled", T0 + 2 * MINUTE)]))
    assert status(3) == "canceled"
    assert [o.status for o in store.orders({"new", "partially_filled"})] == []
    with pytest.raises(ValueError, match="unknown order status"):
        store.orders({"done"})


def test_failed_step_stores_nothing(store: StateStore) -> None:
    store.apply_step(full_step())
    before = snapshot(store)
    later = T0 + 2 * MINUTE
    valid = dataclasses.replace(
        full_step(later), fills=[fill("v-3", later)], cursors=[CursorRecord(feed="binance:BTC/USDT:1m",
                                                                            last_bar=later)],
        trades=[], orders=[order(3, "new", later)],
    )
    broken = ledger(later)
    object.__setattr__(broken, "kernel_state", None)  # violates NOT NULL, after every valid record of the step
    with pytest.raises(sa.exc.IntegrityError):
        store.apply_step(dataclasses.replace(valid, ledgers=[broken]))
    assert snapshot(store) == before

    conflicting = order(1, "filled", later, side="sell")  # a client order id names one order
    with pytest.raises(ValueError, match="stored with other side"):
        store.apply_step(dataclasses.replace(valid, orders=[order(3, "new", later), conflicting]))
    assert snapshot(store) == before

    result = store.apply_step(valid)
    assert result.new_fills == 1 and store.cursor("binance:BTC/USDT:1m") == later


def test_cursor_never_moves_backward(store: StateStore) -> None:
    feed = "binance:BTC/USDT:1m"
    assert store.cursor(feed) is None
    store.apply_step(StepRecord(cursors=[CursorRecord(feed=feed, last_bar=T0 + 5 * MINUTE)]))
    store.apply_step(StepRecord(cursors=[CursorRecord(feed=feed, last_bar=T0 + 2 * MINUTE)]))
    assert store.cursor(feed) == T0 + 5 * MINUTE
    store.apply_step(StepRecord(cursors=[CursorRecord(feed=feed, last_bar=T0 + 6 * MINUTE), CursorRecord(feed=feed,
                                                                                                         last_bar=T0)]))
    assert store.cursor(feed) == T0 + 6 * MINUTE
    assert store.cursor("binance:ETH/USDT:1m") is None
