"""What the fake Binance keeps, and how Binance writes it: orders, fills, balances, errors and parameters.

Amounts are kept to Binance's 8 decimals and written as fixed-point strings (``"0.01000000"``); a refusal is a
``Rejection``, answered as HTTP ``status`` with Binance's ``{"code", "msg"}`` body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
AMOUNT_QUANTUM = Decimal("0.00000001")
"""Balances, quote amounts and commissions are kept to Binance's 8 decimals."""

INVALID_API_KEY = (-2015, "Invalid API-key, IP, or permissions for action.")
BAD_SIGNATURE = (-1022, "Signature for this request is not valid.")
INSUFFICIENT_BALANCE = (-2010, "Account has insufficient balance for requested action.")
DUPLICATE_ORDER = (-2010, "Duplicate order sent.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
NO_SUCH_ORDER = (-2013, "Order does not exist.")
INVALID_SYMBOL = (-1121, "Invalid symbol.")


def error_body(code: int, msg: str) -> str:
    """A Binance error response body, e.g. ``{"code":-1121,"msg":"Invalid symbol."}``."""
    return json.dumps({"code": code, "msg": msg})


class Rejection(Exception):
    """A request the venue refuses: HTTP ``status`` with Binance's ``{"code", "msg"}`` body."""

    def __init__(self, error: tuple[int, str], status: int = 400) -> None:
        super().__init__(error[1])
        self.code, self.msg = error
        self.status = status


def missing(name: str) -> Rejection:
    return Rejection((-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."))


def decimal_param(params: Mapping[str, str], name: str) -> Decimal | None:
    """A positive decimal parameter (``None`` when absent); ``-1100`` when it is not a plain decimal."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0 or not re.fullmatch(r"[0-9]{1,20}(\.[0-9]{1,20})?", raw):
        raise Rejection((-1100, f"Illegal characters found in parameter '{name}'; legal range is a decimal > 0."))
    return value


def int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise Rejection((-1100, f"Illegal characters found in parameter '{name}'.")) from None


def amount(value: Decimal) -> str:
    """An amount as Binance writes it: a fixed-point string with 8 decimals, e.g. ``"0.01000000"``."""
    return f"{value.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP):f}"


def q8(value: Decimal) -> Decimal:
    """``value`` rounded half up to 8 decimals (the ledger's precision)."""
    return value.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Balance:
    """One asset of the account: ``free`` to trade and ``locked`` by open orders."""

    free: Decimal
    locked: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True)
class VenueTrade:
    """One fill of an order, as the venue booked it (``commission`` is in ``commission_asset``: the quote, or the base
    of a buy when the commission is charged in the asset received)."""

    trade_id: int
    order_id: int
    symbol: str
    """The market id, e.g. ``BTCUSDT``."""
    side: str
    """``BUY`` or ``SELL``."""
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool

    def as_fill(self) -> dict[str, Any]:
        """This trade as an entry of a FULL order response's ``fills``."""
        return {
            "price": amount(self.price),
            "qty": amount(self.qty),
            "commission": amount(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.trade_id,
        }

    def as_my_trade(self) -> dict[str, Any]:
        """This trade as an entry of ``GET /api/v3/myTrades``."""
        return {
            "symbol": self.symbol,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": amount(self.price),
            "qty": amount(self.qty),
            "quoteQty": amount(self.quote_qty),
            "commission": amount(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time_ms,
            "isBuyer": self.side == "BUY",
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }


@dataclass
class VenueOrder:
    """An order on the fake venue. ``FakeBinance.orders`` hands out copies: changing them changes nothing."""

    order_id: int
    client_order_id: str
    symbol: str
    """The market id, e.g. ``BTCUSDT``."""
    side: str
    """``BUY`` or ``SELL``."""
    type: str
    """``MARKET``, ``LIMIT`` or ``STOP_LOSS`` (a stop-market order: a market order once triggered)."""
    time_in_force: str
    quantity: Decimal
    price: Decimal
    """The limit price; 0 for a market order."""
    status: str
    """``NEW``, ``PARTIALLY_FILLED``, ``FILLED`` or ``CANCELED``."""
    time_ms: int
    update_ms: int
    orig_quote_qty: Decimal = Decimal(0)
    executed_qty: Decimal = Decimal(0)
    quote_qty: Decimal = Decimal(0)
    """The quote amount filled so far (Binance's ``cummulativeQuoteQty``), commission not included."""
    locked: Decimal = Decimal(0)
    """What this order still holds locked: quote for a buy, base for a sell."""
    stop_price: Decimal = Decimal(0)
    """A ``STOP_LOSS`` order's trigger (``stopPrice``); 0 for other types."""
    triggered: bool = False
    """A ``STOP_LOSS`` order the price has reached: what it has not filled fills as a market order."""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def copy(self) -> VenueOrder:
        return replace(self)

    def summary(self) -> dict[str, Any]:
        """The fields every order answer shares (placements, queries and cancels)."""
        return {
            "price": amount(self.price),
            "origQty": amount(self.quantity),
            "executedQty": amount(self.executed_qty),
            "origQuoteOrderQty": amount(self.orig_quote_qty),
            "cummulativeQuoteQty": amount(self.quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            **({"stopPrice": amount(self.stop_price)} if self.type == "STOP_LOSS" else {}),
        }

    def as_query(self) -> dict[str, Any]:
        """This order as ``GET /api/v3/order``, ``openOrders`` and ``allOrders`` answer it."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            **self.summary(),
            "stopPrice": amount(self.stop_price),
            "icebergQty": amount(Decimal(0)),
            "time": self.time_ms,
            "updateTime": self.update_ms,
            "isWorking": self.type != "STOP_LOSS" or self.triggered,
            "workingTime": self.time_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
