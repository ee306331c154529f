"""What a trading node commits after each batch: one ``StepRecord`` built from everything the batch changed.

``step_record`` drains every sleeve's engine and turns it into records: the orders and fills the broker
settled, positions, trades, ledgers (the exact engine state), breaker events (the sleeves' and the
portfolio's), equity marks, feed cursors and the heartbeat. The node writes it in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from pipeline.domain import utc_from_ms
from pipeline.domain.trading import Fill, Order, Position, Trade, TradeSide
from pipeline.engine.results import EngineResult
from pipeline.state import BreakerRecord, CursorRecord, EquityRecord, LedgerRecord, StepRecord
from runtime.notify import breaker_event_message
from runtime.recovery import PORTFOLIO

if TYPE_CHECKING:
    from runtime.node import Node


def _money(value: Any) -> Decimal:
    """A float from the engine's float64 ledger as the Decimal with the same shortest repr (exact round trip)."""
    return Decimal(repr(float(value)))


def _number(value: Any) -> float:
    return float(value)


def _when(value: Any) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """The rows of ``frame`` as named tuples (nothing to build for an empty frame, the usual case)."""
    return frame.itertuples(index=False) if len(frame) else iter(())


def step_record(node: Node, last_ms: int | None) -> StepRecord:
    """Everything since the last commit as one record (``last_ms``: the open time of the batch's last bar, for
    the portfolio's equity mark; ``None`` when no bar was stepped).

    It drains the engines and the routed orders (build one record per commit), counts trades and breaker
    events in the node's summary and reports each fill and breaker event through the node."""
    orders: list[Order] = node._routed_orders
    fills: list[Fill] = node._routed_fills
    node._routed_orders, node._routed_fills = [], []
    trades: list[Trade] = []
    events: list[BreakerRecord] = []
    ledgers: list[LedgerRecord] = []
    positions: list[Position] = []
    equity: list[EquityRecord] = []
    now = node.clock.now().to_pydatetime()
    for sleeve in node.stepper.sleeves:
        engine = node.stepper.engines[sleeve.key]
        result = engine.drain(last_mark_only=True)
        new_orders, new_fills = node.broker.settle(sleeve.key, sleeve.symbol, result.fills)
        orders += new_orders
        fills += new_fills
        scorer = node.scorers.get(sleeve.key)
        trades += trades_of(sleeve.key, sleeve.symbol, result, None if scorer is None else scorer.version)
        events += [BreakerRecord(sleeve=sleeve.key, at=_when(e.timestamp), rule=str(e.rule),
                                 value=_number(e.value), threshold=_number(e.threshold), action=_action(e.action))
                   for e in _rows(result.breaker_events)]
        ledger = engine.ledger
        units = ledger.units
        positions.append(Position(sleeve=sleeve.key, symbol=sleeve.symbol, qty=_money(units),
                                        avg_price=_money(ledger.average_price), updated_at=now))
        ledgers.append(LedgerRecord(sleeve=sleeve.key, cash=_money(ledger.cash), units=_money(units),
                                    equity=_money(ledger.equity), tripped=",".join(ledger.tripped),
                                    kernel_state=engine.snapshot(), bars_seen=engine.bars_seen,
                                    updated_at=now))
        if len(result.equity):
            last = result.equity.iloc[-1]
            equity.append(EquityRecord(at=_when(last["timestamp"]), sleeve=sleeve.key,
                                       equity=_money(last["equity"]), cash=_money(last["cash"]),
                                       position_value=_money(last["position_value"])))
        node.summary.trades += len(result.trades)
        node.summary.breaker_events += len(result.breaker_events)
        for row in _rows(result.fills):
            node._emit("fill", f"{sleeve.key}: {row.side} {row.qty:.8g} @ {row.price:.8g} ({row.reason})")
        for row in _rows(result.breaker_events):
            node._emit("breaker", breaker_event_message(row._asdict(), strategy=sleeve.key,
                                                        daily_release=sleeve.config.daily_release,
                                                        cooldown_bars=sleeve.config.breaker_cooldown_bars))
    for event in node.stepper.events[node._portfolio_events_saved:]:
        events.append(BreakerRecord(sleeve=PORTFOLIO, at=_when(event["timestamp"]),
                                    rule=str(event["rule"]), value=_number(event["value"]),
                                    threshold=_number(event["threshold"]),
                                    action=_action(event["action"])))
        node._emit("breaker", breaker_event_message(event, strategy=PORTFOLIO,
                                                    cooldown_bars=node.stepper.config.caps.breaker_cooldown_bars))
    node._portfolio_events_saved = len(node.stepper.events)
    ledgers.append(LedgerRecord(sleeve=PORTFOLIO, cash=_money(0.0), units=_money(0.0),
                                equity=_money(node.stepper.equity), tripped="drawdown" if node.stepper.tripped
                                else "", kernel_state=json.dumps({"peak": float(node.stepper.peak).hex(),
                                                                  "tripped": node.stepper.tripped,
                                                                  "stale": sorted(node.stale),
                                                                  "stale_paused": sorted(node._stale_paused),
                                                                  "decisions": {
                                                                      key: d.state() for key, d
                                                                      in node.decisions.items()}}),
                                bars_seen=node.summary.bars, updated_at=now))
    if last_ms is not None:
        equity.append(EquityRecord(at=utc_from_ms(last_ms), sleeve=PORTFOLIO, equity=_money(node.stepper.equity),
                                   cash=_money(node.stepper.cash),
                                   position_value=_money(node.stepper.position_value)))
    cursors = [CursorRecord(feed=key, last_bar=utc_from_ms(ms)) for key, ms in node.cursors.items() if ms is not None]
    return StepRecord(orders=orders, fills=fills, positions=positions, trades=trades, ledgers=ledgers,
                      breakers=events, equity=equity, cursors=cursors, heartbeat_at=now)


def _action(value: object) -> Literal["trip", "release"]:
    """A breaker event's action as the engine reports it (``trip`` or ``release``)."""
    action = str(value)
    if action == "trip":
        return "trip"
    if action == "release":
        return "release"
    raise ValueError(f"a breaker event's action must be trip or release, got {action!r}")


def trades_of(sleeve: str, symbol: str, result: EngineResult, model_version: str | None) -> list[Trade]:
    return [
        Trade(sleeve=sleeve, symbol=symbol, side=TradeSide(str(t.side)), qty=_money(t.qty),
                    entry_price=_money(t.entry_price), exit_price=_money(t.exit_price), pnl=_money(t.pnl),
                    fees=_money(t.fees), entry_time=_when(t.entry_time),
                    exit_time=_when(t.exit_time), entry_reason=str(t.entry_reason),
                    exit_reason=str(t.exit_reason), model_version=model_version)
        for t in _rows(result.trades)
    ]
