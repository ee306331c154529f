"""What a value in the state may be: exact money (``DecimalText``), aware UTC times (``UTCDateTime``), the
checks that refuse float money and naive datetimes, and the enumerated strings the tables hold."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

BOT_STATUSES: Final = frozenset({"running", "paused", "stopped"})
ORDER_SIDES: Final = frozenset({"buy", "sell"})
TRADE_SIDES: Final = frozenset({"long", "short"})
ORDER_STATUSES: Final = frozenset({"new", "partially_filled", "filled", "rejected", "canceled"})
FINAL_ORDER_STATUSES: Final = frozenset({"filled", "rejected", "canceled"})
COMMANDS: Final = frozenset({"pause", "resume", "flatten", "reset_breaker", "stop"})
BREAKER_ACTIONS: Final = frozenset({"trip", "release"})
COMMAND_SOURCES: Final = frozenset({"cli", "dashboard", "telegram"})
PORTFOLIO: Final = "portfolio"
"""The sleeve name of portfolio-level breaker events and equity rows."""


def as_utc(name: str, value: object) -> datetime:
    """``value`` as a plain aware UTC datetime; a naive one raises ``ValueError`` naming ``name``, anything else
    but a datetime ``TypeError``."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a tz-aware datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a tz-aware datetime (UTC), got the naive datetime {value.isoformat()}")
    utc = value.astimezone(UTC)
    # A plain datetime (not a pandas Timestamp or other subclass) so that every driver adapts it the same way.
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)


def as_money(name: str, value: object) -> Decimal:
    """``value`` as a finite ``Decimal``; a float (not exact) or a non-number raises ``TypeError`` naming
    ``name``."""
    if isinstance(value, float):
        raise TypeError(f"{name} must be an exact Decimal, got the float {value!r} (floats are not exact money)")
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be an exact Decimal, got {type(value).__name__} {value!r}")
    money = Decimal(value)
    if not money.is_finite():
        raise ValueError(f"{name} must be a finite Decimal, got {money}")
    return money


class DecimalText(sa.types.TypeDecorator[Decimal]):
    """An exact ``Decimal`` stored as its text (never through a float)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"an exact money column got {type(value).__name__} {value!r}; pass a Decimal")
        return str(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A tz-aware datetime stored in UTC and read back as an aware UTC datetime on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc("datetime column", value)
        # SQLite has no time zone type: it stores the UTC wall time, which sorts chronologically.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
