"""Exact money and UTC time: the checks every entity applies, the column types that store them exactly, and
:class:`Entity`, the frozen base of every entity tradeforge stores.

* Money and quantities are ``Decimal``: a float (not exact) is refused with a ``TypeError`` naming
  ``Entity.field``, a NaN or infinity with a ``ValueError``. Stored as text (``DecimalText``), they come back as
  the same ``Decimal`` (digits, exponent and trailing zeros included).
* Times are aware datetimes, normalised to UTC; a naive one is refused with a ``ValueError`` naming the field.
  Stored by ``UTCDateTime``, they come back as aware UTC datetimes on every backend.

An :class:`Entity` declares its fields once, with their column types (``Field(sa_type=DecimalText)``); the
state's table models extend it (SQLModel's base-model + table-model pattern), so a table's columns are the
entity's fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import ConfigDict, ValidationInfo, field_validator
from sqlalchemy.engine import Dialect
from sqlmodel import SQLModel


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


class Entity(SQLModel):
    """A frozen, validated entity: money fields (``sa_type=DecimalText``) must be exact and finite, time fields
    (``sa_type=UTCDateTime``) aware; both are checked when the entity is built, naming ``Entity.field``."""

    model_config = ConfigDict(frozen=True)  # type: ignore[assignment]

    @field_validator("*", mode="before")
    @classmethod
    def _exact_money_and_aware_time(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or info.field_name is None:
            return value
        kind = getattr(cls.model_fields[info.field_name], "sa_type", None)
        name = f"{cls.__name__}.{info.field_name}"
        if kind is DecimalText:
            return as_money(name, value)
        if kind is UTCDateTime:
            return as_utc(name, value)
        return value
