"""The market's vocabulary: instruments, timeframes and the canonical bar frame.

A *bar frame* is a pandas DataFrame with exactly the columns of ``BAR_COLUMNS``:

* ``timestamp`` — the bar's **open** time, ``datetime64[ms, UTC]``; a bar is usable only once closed
  (``timestamp + timeframe <= now``);
* ``open, high, low, close, volume`` — ``float64``.

Rows are sorted ascending by ``timestamp`` with unique timestamps. Every source converts to this shape at its
edge; nothing downstream sees a ccxt list, an alpaca model or a CSV row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

import numpy as np
import pandas as pd

BAR_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = (*PRICE_COLUMNS, "volume")
TIMESTAMP_DTYPE: Final = "datetime64[ms, UTC]"
CALENDAR_24_7 = "24/7"
SAMPLE_VENUE = "sample"
"""The venue of the synthetic sample market; reserved: real data is never filed under it."""
STOCK_CALENDAR = "XNYS"


class DataError(ValueError):
    """Bad input: the message names the input and what is wrong with it."""


class AssetClass(StrEnum):
    CRYPTO = "crypto"
    STOCK = "stock"


_TIMEFRAME_RE = re.compile(r"^(\d+)(m|h|d)$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bar length such as ``1m``, ``5m``, ``1h`` or ``1d`` (minutes, hours, days)."""

    seconds: int

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        match = _TIMEFRAME_RE.match(text.strip())
        if match is None or int(match.group(1)) <= 0:
            raise DataError(
                f"timeframe {text!r} is not valid: use a positive count and a unit m, h or d (e.g. 1m, 5m, 1h, 1d)"
            )
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds > 86400 or (seconds < 86400 and 86400 % seconds != 0):
            raise DataError(
                f"timeframe {text!r} is not supported: it must divide one day evenly and be at most 1d"
            )
        return cls(seconds)

    @property
    def delta(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.seconds)

    @property
    def millis(self) -> int:
        return self.seconds * 1000

    @property
    def is_daily(self) -> bool:
        return self.seconds == 86400

    @property
    def pandas_freq(self) -> str:
        if self.seconds % 86400 == 0:
            return f"{self.seconds // 86400}D"
        if self.seconds % 3600 == 0:
            return f"{self.seconds // 3600}h"
        return f"{self.seconds // 60}min"

    def __str__(self) -> str:
        if self.seconds % 86400 == 0:
            return f"{self.seconds // 86400}d"
        if self.seconds % 3600 == 0:
            return f"{self.seconds // 3600}h"
        return f"{self.seconds // 60}m"


_CRYPTO_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}(:[A-Z0-9]{1,20})?$")
_STOCK_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")


def parse_symbol(text: str) -> tuple[str, AssetClass]:
    """Validate a symbol: ``BASE/QUOTE`` (crypto, ccxt style) or a US ticker such as ``AAPL``."""
    symbol = text.strip().upper()
    if _CRYPTO_SYMBOL_RE.match(symbol):
        return symbol, AssetClass.CRYPTO
    if _STOCK_SYMBOL_RE.match(symbol):
        return symbol, AssetClass.STOCK
    raise DataError(
        f"symbol {text!r} is not valid: use BASE/QUOTE for crypto (e.g. BTC/USDT) or a ticker for US stocks (e.g. AAPL)"
    )


def symbol_key(symbol: str) -> str:
    """The file-system form of a symbol: ``BTC/USDT`` → ``BTC-USDT``, ``BTC/USDT:USDT`` → ``BTC-USDT-USDT``."""
    return symbol.replace("/", "-").replace(":", "-")


@dataclass(frozen=True)
class Instrument:
    """A tradable series: where it trades, what it is, its price/amount increments and its calendar."""

    venue: str
    symbol: str
    asset_class: AssetClass
    tick_size: Decimal
    lot_size: Decimal
    calendar: str

    @classmethod
    def of(
        cls,
        venue: str,
        symbol: str,
        tick_size: Decimal | None = None,
        lot_size: Decimal | None = None,
    ) -> Instrument:
        """An instrument with the defaults of its asset class (crypto: 24/7; stocks: NYSE sessions)."""
        canonical, asset_class = parse_symbol(symbol)
        venue_name = venue.strip().lower()
        if not re.match(r"^[a-z0-9_]{1,40}$", venue_name):
            raise DataError(f"venue {venue!r} is not valid: use letters, digits and underscores")
        if asset_class is AssetClass.CRYPTO:
            return cls(
                venue_name,
                canonical,
                asset_class,
                tick_size or Decimal("0.01"),
                lot_size or Decimal("0.00000001"),
                CALENDAR_24_7,
            )
        return cls(
            venue_name,
            canonical,
            asset_class,
            tick_size or Decimal("0.01"),
            lot_size or Decimal("1"),
            STOCK_CALENDAR,
        )

    @property
    def key(self) -> str:
        return symbol_key(self.symbol)

    def to_dict(self) -> dict[str, str]:
        return {
            "venue": self.venue,
            "symbol": self.symbol,
            "asset_class": self.asset_class.value,
            "tick_size": str(self.tick_size),
            "lot_size": str(self.lot_size),
            "calendar": self.calendar,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Instrument:
        return cls(
            data["venue"],
            data["symbol"],
            AssetClass(data["asset_class"]),
            Decimal(data["tick_size"]),
            Decimal(data["lot_size"]),
            data["calendar"],
        )


def empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the canonical dtypes."""
    frame = pd.DataFrame(
        {
            "timestamp": pd.Series([], dtype=TIMESTAMP_DTYPE),
            **{name: pd.Series([], dtype="float64") for name in VALUE_COLUMNS},
        }
    )
    return frame


def to_utc_ms(values: pd.Series, name: str = "timestamp") -> pd.Series:
    """Convert datetimes to ``datetime64[ms, UTC]``; naive values are taken as UTC.

    Raises ``DataError`` for values that are not datetimes or that mix naive and tz-aware values.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        converted = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        converted = values.dt.tz_localize("UTC")
    else:
        kinds = {type(v).__name__ for v in values.head(1000)}
        if kinds and kinds <= {"Timestamp", "datetime"}:
            aware = {getattr(v, "tzinfo", None) is not None for v in values}
            if len(aware) > 1:
                raise DataError(f"column {name!r} mixes timezone-aware and naive timestamps")
        try:
            converted = pd.to_datetime(values, utc=True, format="mixed")
        except (ValueError, TypeError) as exc:
            raise DataError(f"column {name!r} holds values that are not timestamps: {exc}") from exc
    result: pd.Series = converted.astype(TIMESTAMP_DTYPE)
    return result


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_from_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime (what the state store takes)."""
    return _EPOCH + timedelta(milliseconds=int(ms))


def epoch_ms(stamps: pd.Series) -> np.ndarray:
    """Timestamps as int64 milliseconds since the epoch (NaT becomes the minimum int64).

    Converting a tz-aware column with ``to_numpy()`` yields Python objects, which is slow; this does not.
    """
    index = pd.DatetimeIndex(stamps)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return np.asarray(index.as_unit("ms").asi8)


def canonical_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` in the canonical column order and dtypes (no row is dropped or reordered)."""
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"bar frame lacks column(s) {', '.join(missing)}; expected {', '.join(BAR_COLUMNS)}"
        )
    out = pd.DataFrame({"timestamp": to_utc_ms(frame["timestamp"]).reset_index(drop=True)})
    for name in VALUE_COLUMNS:
        column = frame[name]
        try:
            out[name] = pd.to_numeric(column, errors="raise").astype("float64").to_numpy()
        except (ValueError, TypeError) as exc:
            raise DataError(f"column {name!r} holds values that are not numbers: {exc}") from exc
    return out


def bars_equal(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    """Exact equality of two bar frames (timestamps and float values bit for bit)."""
    if len(left) != len(right):
        return False
    if not np.array_equal(epoch_ms(left["timestamp"]), epoch_ms(right["timestamp"])):
        return False
    return all(
        np.array_equal(left[c].to_numpy(), right[c].to_numpy(), equal_nan=True) for c in VALUE_COLUMNS
    )


def parse_utc(value: object, name: str) -> pd.Timestamp | None:
    """A date or timestamp given by a user (text, datetime) as a UTC timestamp; naive values are taken as UTC.

    None or empty text is None; anything else that is not a date raises ``DataError`` naming ``name``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name} {value!r} is not a date or timestamp (use e.g. 2024-01-01)") from exc
    if pd.isna(stamp):
        raise DataError(f"{name} {value!r} is not a date or timestamp (use e.g. 2024-01-01)")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
