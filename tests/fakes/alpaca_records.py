"""What the fake Alpaca keeps, and how Alpaca writes it: orders (the JSON alpaca-py's ``Order`` model reads),
fills (and their ``FILL`` account activities), refusals, times, query parameters, and numbers as plain decimal
strings."""

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
    """One fill of an order: ``qty`` at ``price``; ``cumulative_qty`` is the order's filled quantity after it and
    ``leaves_qty`` what it still has to fill; ``id`` is its account activity's id (``<time>::<uuid>``)."""

    order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    cumulative_qty: Decimal
    at: str
    id: str = ""
    leaves_qty: Decimal = Decimal(0)

    def as_activity(self) -> dict[str, Any]:
        """This fill as ``GET /v2/account/activities/FILL`` lists it (a ``FILL`` trade activity)."""
        return {
            "id": self.id,
            "activity_type": "FILL",
            "transaction_time": self.at,
            "type": "partial_fill" if self.leaves_qty else "fill",
            "price": text(self.price),
            "qty": text(self.qty),
            "side": self.side,
            "symbol": self.symbol,
            "leaves_qty": text(self.leaves_qty),
            "order_id": self.order_id,
            "cum_qty": text(self.cumulative_qty),
            "order_status": "partially_filled" if self.leaves_qty else "filled",
        }


def activity_id(at: str, number: int) -> str:
    """An account activity's id as Alpaca writes it: the time to the millisecond, ``::``, a UUID."""
    stamp = parse_time(at)
    return f"{stamp:%Y%m%d%H%M%S}{stamp.microsecond // 1000:03d}::{uuid.uuid5(uuid.NAMESPACE_URL, f'fill:{number}')}"


def parse_time(value: str) -> datetime:
    """A time as Alpaca writes it or takes it (RFC 3339, or a date: its midnight UTC); ``ValueError`` otherwise."""
    stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def number_param(params: dict[str, str], name: str, default: int, largest: int) -> int:
    """A query's whole-number parameter from 1 to ``largest`` (``default`` when absent); ``422`` otherwise."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= largest:
        raise Refused(422, 40010001, f"invalid {name}: {raw!r} (1 to {largest})")
    return int(raw)


def time_param(params: dict[str, str], name: str) -> datetime | None:
    """A query's time parameter (None when absent); ``422`` when it is not a time."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise Refused(422, 40010001, f"invalid {name}: {raw!r}") from None


def direction_param(params: dict[str, str]) -> str:
    """A query's ``direction``: ``desc`` (the default) or ``asc``; ``422`` otherwise."""
    direction = params.get("direction", "desc")
    if direction not in ("asc", "desc"):
        raise Refused(422, 40010001, f"invalid direction: {direction!r}")
    return direction
