"""What the fake Alpaca keeps, and how Alpaca writes it: orders (the JSON alpaca-py's ``Order`` model reads),
fills, refusals, and numbers as plain decimal strings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

OPEN_STATUSES = frozenset({"new", "accepted", "pending_new", "partially_filled"})


class Refused(Exception):
    """A request Alpaca refuses: HTTP ``status`` with its ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def now_text() -> str:
    """The wall clock as Alpaca stamps orders, e.g. ``2024-01-02T14:30:00.123456Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-alpaca-asset:{symbol}"))


def text(value: Decimal) -> str:
    """A decimal as Alpaca writes numbers: plain digits, no exponent, no trailing zeros."""
    written = format(value.normalize(), "f")
    return "0" if written in ("-0", "") else written


def decimal_field(body: dict[str, Any], name: str) -> Decimal | None:
    """A number of an order's JSON body (``None`` when absent); ``422`` when it is not a finite number."""
    value = body.get(name)
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise Refused(422, 40010001, f"invalid {name}: {value!r}") from exc
    if not number.is_finite():
        raise Refused(422, 40010001, f"invalid {name}: {value!r}")
    return number


@dataclass
class VenueOrder:
    """An order in the fake's book (``filled_notional``: the sum of quantity times price of its fills)."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal
    limit_price: Decimal | None
    created_at: str
    updated_at: str
    status: str = "new"
    filled_qty: Decimal = Decimal(0)
    filled_notional: Decimal = Decimal(0)
    filled_at: str | None = None
    canceled_at: str | None = None
    stop_price: Decimal | None = None
    """A ``stop`` order's trigger."""
    triggered: bool = False
    """A stop the price has reached: what it has not filled fills as a market order."""
    expired_at: str | None = None

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def filled_avg_price(self) -> Decimal | None:
        return self.filled_notional / self.filled_qty if self.filled_qty else None

    def copy(self) -> VenueOrder:
        return replace(self)

    def as_json(self) -> dict[str, Any]:
        average = self.filled_avg_price
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "submitted_at": self.created_at,
            "filled_at": self.filled_at,
            "expired_at": self.expired_at,
            "expires_at": None,
            "canceled_at": self.canceled_at,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": asset_id(self.symbol),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": text(self.qty),
            "filled_qty": text(self.filled_qty),
            "filled_avg_price": None if average is None else text(average),
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else text(self.limit_price),
            "stop_price": None if self.stop_price is None else text(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
        }


@dataclass(frozen=True)
class Execution:
    """One fill of an order: ``qty`` at ``price``; ``cumulative_qty`` is the order's filled quantity after it."""

    order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    cumulative_qty: Decimal
    at: str
