"""The paper broker: fills are the engine's own fill model (the backtest's), on live or replayed bars.

Every fill gets a deterministic client order id ``<sleeve>-<bar open ms>-<n>`` and the fill id
``paper:<client order id>``, so a bar processed again after a crash produces the same ids and the state store
skips what it already holds. No order stays open, so a restart has nothing to take over, and there is no venue
to reconcile with (``holdings`` and ``venue_view`` are None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pandas as pd

from pipeline.domain import epoch_ms
from pipeline.domain.trading import Fill, Order, OrderStatus, Side
from pipeline.engine.core import Engine
from runtime.brokers.base import VenueView


def _decimal(value: Any) -> Decimal:
    return Decimal(repr(float(value)))


class PaperBroker:
    name = "paper"
    external_fills = False

    def route(self, sleeve: str, symbol: str, engine: Engine, bar_ms: int) -> tuple[list[Order],
                                                                                    list[Fill]]:
        """Nothing to send: the engine filled its orders with the paper fill model; ``settle`` records them."""
        return [], []

    def settle(self, sleeve: str, symbol: str, fills: pd.DataFrame) -> tuple[list[Order], list[Fill]]:
        orders: list[Order] = []
        records: list[Fill] = []
        if fills.empty:
            return orders, records
        seen: dict[int, int] = {}
        for ms, row in zip(epoch_ms(fills["timestamp"]), fills.itertuples(index=False), strict=True):
            n = seen.get(int(ms), 0)
            seen[int(ms)] = n + 1
            client_id = f"{sleeve}-{int(ms)}-{n}"
            at = pd.Timestamp(int(ms), unit="ms", tz="UTC").to_pydatetime()
            qty, price, fee = _decimal(row.qty), _decimal(row.price), _decimal(row.fee)
            orders.append(Order(client_order_id=client_id, sleeve=sleeve, symbol=symbol, side=Side(str(row.side)),
                                      qty=qty, price=price, status=OrderStatus.FILLED, reason=str(row.reason),
                                      venue_order_id=client_id, bar=at, created_at=at))
            records.append(Fill(fill_id=f"paper:{client_id}", client_order_id=client_id, sleeve=sleeve,
                                      symbol=symbol, side=Side(str(row.side)), qty=qty, price=price, fee=fee, at=at,
                                      reason=str(row.reason)))
        return orders, records

    def resume(self, orders: Sequence[Order], fills: Sequence[Fill]) -> None:
        """Nothing to take over: a paper order is filled in the step that decides it."""

    def holdings(self, symbols: Sequence[str]) -> dict[str, Decimal] | None:
        """None: there is no venue; the ledgers are the only holdings."""
        return None

    def venue_view(self, symbols: Sequence[str], since_ms: Mapping[str, int], known: Mapping[str, str]
                   ) -> VenueView | None:
        """None: there is no venue, nothing to reconcile."""
        return None

    def catch_up(self, sleeve: str, symbol: str, engine: Engine) -> tuple[list[Order], list[Fill]]:
        """Nothing to book: no order of the paper broker stays open."""
        return [], []
