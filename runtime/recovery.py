"""A trading node's start-up recovery: ledgers restored bit for bit, then reconciled with the venue.

``restore`` loads every sleeve's ledger and the portfolio's saved state from the store (noting where the
positions on record differ from the ledgers), ``restore_decisions`` continues the decision streams once the
models are loaded, and ``reconcile`` hands the orders still open on record to the broker and runs the first
reconciliation with the venue (``runtime.reconcile``: open orders, fills, positions, cash; judged again after the
first batch when the venue held less). Each returns what it found, as notes the node records as runtime events.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pipeline.state import LedgerRecord
from runtime.brokers.base import OPEN_STATUSES
from runtime.reconcile import START, compare_holdings

if TYPE_CHECKING:
    from runtime.node import Node

__all__ = ["PORTFOLIO", "compare_holdings", "reconcile", "restore", "restore_decisions"]

PORTFOLIO = "portfolio"
"""The ledger row (and breaker events) of the portfolio itself, beside the sleeves'."""


def restore(node: Node, ledgers: dict[str, LedgerRecord]) -> list[str]:
    """Every sleeve's ledger and the portfolio's state from the ``ledgers`` on record."""
    notes: list[str] = []
    positions = {(p.sleeve, p.symbol): p for p in node.store.positions()}
    for sleeve in node.stepper.sleeves:
        row = ledgers.get(sleeve.key)
        if row is None:
            notes.append(f"{sleeve.key}: no saved ledger, starts with its allocation")
            continue
        engine = node.stepper.engines[sleeve.key]
        engine.restore(row.kernel_state)
        node.stepper.restore_sleeve(sleeve.key)
        units = engine.ledger.units
        cash = engine.ledger.cash
        stored = positions.get((sleeve.key, sleeve.symbol))
        stored_units = float(stored.qty) if stored is not None else 0.0
        if abs(stored_units - units) > 1e-9 * max(1.0, abs(units)):
            notes.append(f"{sleeve.key}: position on record {stored_units} differs from the ledger {units}; "
                         "the ledger's (committed with it) is kept and the record corrected")
        tripped = engine.ledger.tripped
        notes.append(f"{sleeve.key}: restored, units {units:g}, cash {cash:,.2f}"
                     + (f", breakers still latched: {', '.join(tripped)}" if tripped else ""))
    saved = ledgers.get(PORTFOLIO)
    if saved is not None:
        data = json.loads(saved.kernel_state)
        node.stepper.peak = float.fromhex(data["peak"])
        node.stepper.tripped = bool(data["tripped"])
        node._portfolio_events_saved = len(node.stepper.events)
        node.stale = set(data.get("stale", []))
        node._stale_paused = set(data.get("stale_paused", []))
        node._saved_decisions = dict(data.get("decisions", {}))
    return notes


def restore_decisions(node: Node) -> list[str]:
    """Continue every sleeve's decision stream from its saved state (after the models are loaded)."""
    notes = []
    for key, decisions in node.decisions.items():
        saved = node._saved_decisions.get(key)
        if saved is not None:
            notes.append(f"{key}: {decisions.restore(saved)}")
        elif node._saved_decisions or node.store.ledgers():
            notes.append(f"{key}: no saved decision state; decisions rebuilt from the first bar the feed holds")
    return notes


def reconcile(node: Node) -> list[str]:
    """Hand the orders still open on record to the broker, then reconcile with the venue (``runtime.reconcile``:
    open orders, fills, positions, cash); returns the notes on positions."""
    notes: list[str] = []
    open_orders = node.store.orders(set(OPEN_STATUSES))
    if open_orders:
        node.broker.resume(open_orders, node.store.fills())
        notes.append(f"{len(open_orders)} open order(s) taken over from the store: "
                     + ", ".join(o.client_order_id for o in open_orders))
    return notes + node.reconciler.run(START)
