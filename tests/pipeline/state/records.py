"""The records the state tests store: orders, fills, ledgers, a full step, and a snapshot to compare."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from pipeline.domain.trading import Fill, Order, Position, Trade
from pipeline.domain.values import Entity
from pipeline.state import BreakerRecord, CursorRecord, EquityRecord, LedgerRecord, StateStore, StepRecord

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
D = Decimal

E = TypeVar("E", bound=Entity)


def renew(entity: E, **changes: Any) -> E:
    """``entity`` with ``changes``, built (and so validated) afresh."""
    return type(entity).model_validate({**entity.model_dump(), **changes})


def order(n: int = 1, status: str = "new", at: datetime = T0, **changes: Any) -> Order:
    record = Order(
        client_order_id=f"btc-{int(T0.timestamp() * 1000)}-{n}", sleeve="btc", symbol="BTC/USDT", side="buy",
        qty=D("0.5"), price=None, status=status, reason="golden cross", bar=T0, created_at=T0, updated_at=at,
    )
    return renew(record, **changes)


def fill(fill_id: str, at: datetime = T0 + MINUTE, qty: str = "0.25") -> Fill:
    return Fill(fill_id=fill_id, client_order_id=order().client_order_id, sleeve="btc", symbol="BTC/USDT",
                      side="buy", qty=D(qty), price=D("91234.56"), fee=D("0.0912"), at=at, reason="golden cross")


def ledger(at: datetime = T0 + MINUTE, cash: str = "54321.0987") -> LedgerRecord:
    state = json.dumps({"f": [0.1 + 0.2, 1 / 3, 91234.56], "i": [3, 0]})
    return LedgerRecord(sleeve="btc", cash=D(cash), units=D("0.5"), equity=D("100000.01"), tripped="",
                        kernel_state=state, bars_seen=42, updated_at=at)


def full_step(at: datetime = T0 + MINUTE) -> StepRecord:
    return StepRecord(
        orders=[order(1, "filled", at), order(2, "new", at)],
        fills=[fill("v-1", at), fill("v-2", at), fill("v-1", at)],
        positions=[Position(sleeve="btc", symbol="BTC/USDT", qty=D("0.5"), avg_price=D("91234.56"), updated_at=at)],
        trades=[Trade(sleeve="btc", symbol="BTC/USDT", side="long", qty=D("0.5"), entry_price=D("90000"),
                      exit_price=D("91234.56"), pnl=D("617.28"), fees=D("0.18"), entry_time=T0 - 60 * MINUTE,
                      exit_time=at, entry_reason="golden cross", exit_reason="death cross", model_version="lstm:3")],
        ledgers=[ledger(at)],
        breakers=[BreakerRecord(sleeve="portfolio", at=at, rule="max_drawdown", value=0.26, threshold=0.25)],
        equity=[EquityRecord(at=at, sleeve=name, equity=D("100000.01"), cash=D("54321.0987"),
                             position_value=D("45678.9113")) for name in ("btc", "portfolio")],
        cursors=[CursorRecord(feed="binance:BTC/USDT:1m", last_bar=at - MINUTE)],
        heartbeat_at=at,
    )


def snapshot(store: StateStore) -> dict[str, object]:
    """Everything the step writers touch, as comparable values."""
    bot = store.bot_state()
    return {
        "orders": [o.model_dump() for o in store.orders()],
        "fills": [f.model_dump() for f in store.fills()],
        "positions": [p.model_dump() for p in store.positions()],
        "trades": [t.model_dump() for t in store.trades()],
        "ledgers": {k: v.model_dump() for k, v in store.ledgers().items()},
        "breakers": [b.model_dump() for b in store.breaker_events()],
        "equity": [e.model_dump() for e in store.equity()],
        "cursor": store.cursor("binance:BTC/USDT:1m"),
        "bot": None if bot is None else bot.model_dump(),
    }
