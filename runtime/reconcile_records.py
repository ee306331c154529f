"""What a reconciliation pass (``runtime.reconcile``) reads of the state store: only what can matter to it.

That is the orders open on record, the orders of the fills booked since the venue's fills are read from (the
fill window), what was routed and not committed yet, and, for the fills the venue reports, their orders and the
fills booked of them. The history before the fill window is never read, so a pass reads about as much after a
year of trading as after a day (the window moves on with the fills the venue reports). Ids are asked for ``CHUNK``
at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from pipeline.domain.trading import Fill, Order
from pipeline.state import StateStore
from runtime.brokers.base import OPEN_STATUSES, VenueFill

if TYPE_CHECKING:
    from runtime.node import Node

CHUNK = 500
"""Ids asked for per query (well under any database's bound on the parameters of a statement)."""


def _chunks(ids: Collection[str]) -> Iterator[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start:start + CHUNK]


def orders_with_ids(store: StateStore, ids: Collection[str]) -> list[Order]:
    """The orders on record with a client order id in ``ids``."""
    return [order for chunk in _chunks(ids) for order in store.orders(ids=chunk)]


def fills_of_orders(store: StateStore, orders: Collection[str]) -> list[Fill]:
    """The fills on record of the orders with a client order id in ``orders``."""
    return [fill for chunk in _chunks(orders) for fill in store.fills(orders=chunk)]


class OnRecord:
    """The orders on record a pass knows of, as the ones booked since the last commit left them (open ones, those
    of the fills booked since ``since``, those routed and not committed yet; more are read as the venue's fills
    name them)."""

    def __init__(self, node: Node, since: datetime) -> None:
        self.node = node
        store = node.store
        self.orders: dict[str, Order] = {o.client_order_id: o for o in store.orders(set(OPEN_STATUSES))}
        recent = {f.client_order_id for f in store.fills(since=since)} - self.orders.keys()
        self._add(orders_with_ids(store, recent))
        self._add(node._routed_orders)

    def _add(self, orders: Iterable[Order]) -> None:
        self.orders.update((o.client_order_id, o) for o in orders)
        self._by_venue = {o.venue_order_id: o for o in self.orders.values() if o.venue_order_id}

    def following(self) -> set[str]:
        """The client ids of the orders on record as open (new or partly filled)."""
        return {o.client_order_id for o in self.orders.values() if o.status in OPEN_STATUSES}

    def known(self) -> dict[str, str]:
        """The client id of each venue order id on record here."""
        return {venue_id: o.client_order_id for venue_id, o in self._by_venue.items()}

    def look_up(self, fills: Iterable[VenueFill]) -> None:
        """Read the orders on record of ``fills`` not known here yet (by their client ids)."""
        missing = {f.client_id for f in fills if f.client_id and self.order_of(f) is None}
        if missing:
            routed = {o.client_order_id: o for o in self.node._routed_orders}
            self._add(routed.get(o.client_order_id, o) for o in orders_with_ids(self.node.store, missing))

    def order_of(self, fill: VenueFill) -> Order | None:
        return self._by_venue.get(fill.venue_order_id) or self.orders.get(fill.client_id)

    def booked(self, fills: Collection[VenueFill]) -> tuple[set[str], dict[str, Decimal]]:
        """Which of ``fills`` are booked (by fill id, on record or routed), and the units booked of each order of
        those reported cumulatively (``VenueFill.order_filled``), by client order id."""
        store, routed = self.node.store, self.node._routed_fills
        ids = {f.fill_id for f in fills}
        found = {f.fill_id for chunk in _chunks(ids) for f in store.fills(ids=chunk)}
        found |= {f.fill_id for f in routed if f.fill_id in ids}
        cumulative = {o.client_order_id for f in fills if f.order_filled is not None
                      and (o := self.order_of(f)) is not None}
        rows = {f.fill_id: f for f in fills_of_orders(store, cumulative)} if cumulative else {}
        rows.update((f.fill_id, f) for f in routed if f.client_order_id in cumulative)
        units: dict[str, Decimal] = {}
        for row in rows.values():
            units[row.client_order_id] = units.get(row.client_order_id, Decimal(0)) + row.qty
        return found, units


__all__ = ["CHUNK", "OnRecord", "fills_of_orders", "orders_with_ids"]
