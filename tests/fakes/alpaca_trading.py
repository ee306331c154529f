"""The fake Alpaca's trading API over a ledger: what alpaca-py's ``TradingClient`` calls, with the JSON fields its
``Order``, ``Position`` and ``TradeAccount`` models read.

* ``GET /v2/account`` — cash, buying power, equity;
* ``POST /v2/orders`` — ``market``, ``limit`` (``limit_price``) and ``stop`` (``stop_price``, a stop-market order)
  orders by ``qty`` (fractional, up to 9 decimals, DAY only; whole quantities also GTC), ``time_in_force``,
  ``client_order_id`` (at most 128 characters, unique: a second order with one already used is ``422
  client_order_id must be unique``); prices in whole cents (hundredths of a cent below $1: ``422 sub-penny
  increment``); a stop the price has already reached is ``422 stop price must be less (greater) than current
  price``;
* ``GET /v2/orders`` (``status`` open / closed / all, ``symbols`` comma-separated, ``after`` / ``until`` the
  submission time, ``direction`` desc (newest first, the default) or asc, ``limit`` 50 by default, at most 500),
  ``GET /v2/orders/{id}``,
  ``GET /v2/orders:by_client_order_id?client_order_id=``, ``DELETE /v2/orders/{id}`` (``204``; ``422`` when the
  order can no longer be cancelled);
* ``GET /v2/positions`` and ``GET /v2/positions/{symbol}`` (``404`` when nothing is held);
* ``GET /v2/account/activities/FILL`` (and ``GET /v2/account/activities?activity_types=FILL``): the fills as
  trade activities (``id``, ``transaction_time``, ``price``, ``qty``, ``side``, ``symbol``, ``order_id``,
  ``cum_qty``, ``leaves_qty``, ``order_status``), ``after`` / ``until`` their time (exclusive / inclusive),
  ``direction`` desc (the default) or asc, ``page_size`` 100 at most, ``page_token`` the id of the last activity of
  the page before.

The ledger: starting ``cash``, positions with their average entry price, a current price per symbol
(``set_price``), no commission (as at Alpaca). A market order fills at once at the current price; a limit
order fills at its limit price when the current price reaches it (at once or on a later ``set_price``); a stop
order rests until a ``set_price`` reaches its trigger (a sell stop at or below it, a buy stop at or above it),
then fills at that price. ``expire_day_orders`` ends the session: every open DAY order is ``expired``;
``transfer`` moves cash into or out of the account (a deposit or a withdrawal).
Buying more than the buying power (cash less what open buys reserve) is ``403 insufficient buying power``;
selling more than is held (less what open sells reserve) is ``403 insufficient qty available for order``.
A market order can be made to fill in part (``queue_partial``): it stays ``partially_filled`` until the next
``set_price`` of its symbol fills the rest at that price, or it is cancelled. So can the next resting order a
``set_price`` reaches (``queue_partial(resting=True)``): a limit's rest fills when a price reaches it again, a
triggered stop's rest at the next price.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tests.fakes.alpaca_records import (
    Execution,
    Refused,
    VenueOrder,
    activity_id,
    asset_id,
    decimal_field,
    direction_param,
    now_text,
    number_param,
    parse_time,
    text,
    time_param,
)

QTY_QUANTUM = Decimal("0.000000001")
"""Alpaca takes quantities to 9 decimals."""
PENNY, SUB_PENNY = Decimal("0.01"), Decimal("0.0001")
"""Alpaca's price increments: whole cents from $1, hundredths of a cent below."""
TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
INSUFFICIENT_BUYING_POWER = (403, 40310000, "insufficient buying power")
NOT_UNIQUE = (422, 40010001, "client_order_id must be unique")
DEFAULT_ORDERS_LISTED, MAX_ORDERS_LISTED = 50, 500
"""How many orders ``GET /v2/orders`` lists by default (its ``limit``), and at most."""
ACTIVITIES_PAGE = 100
"""How many activities one answer lists at most (``page_size``' default and largest value)."""


@dataclass
class _Holding:
    qty: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


class TradingLedger:
    """Cash, holdings, prices, orders and fills; ``answer`` serves a trading request (the caller holds the lock)."""

    def __init__(self, cash: Decimal, api_key: str) -> None:
        self.cash = cash
        self.orders: list[VenueOrder] = []
        self.executions: list[Execution] = []
        self.holdings: dict[str, _Holding] = {}
        self._account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-alpaca-account:{api_key}"))
        self._prices: dict[str, Decimal] = {}
        self._partials: deque[Decimal] = deque()
        self._resting_partials: deque[Decimal] = deque()
        self._order_numbers = itertools.count(1)

    def queue_partial(self, fraction: Decimal, *, resting: bool = False) -> None:
        (self._resting_partials if resting else self._partials).append(fraction)

    def set_price(self, symbol: str, price: Decimal) -> None:
        self._prices[symbol] = price
        for order in self.orders:
            if order.is_open and order.symbol == symbol:
                self._fill_if_reached(order, order.remaining, resting=True)

    def expire_day_orders(self) -> None:
        now = now_text()
        for order in self.orders:
            if order.is_open and order.time_in_force == "day":
                order.status = "expired"
                order.expired_at = order.updated_at = now

    def transfer(self, amount: Decimal) -> None:
        """Cash moved into (a positive ``amount``) or out of the account, as a deposit or a withdrawal."""
        self.cash += amount

    def answer(self, method: str, path: str, params: dict[str, str], body: Any) -> tuple[int, Any]:
        """The status and JSON body answering one trading request (``Refused`` for a refusal)."""
        if path == "/v2/account" and method == "GET":
            return 200, self._account()
        if path == "/v2/orders" and method == "POST":
            return 200, self._place(body).as_json()
        if path == "/v2/orders" and method == "GET":
            return 200, [o.as_json() for o in self._list_orders(params)]
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            found = self._by_client_id(params.get("client_order_id", ""))
            if found is None:
                raise Refused(404, 40410000, "order not found")
            return 200, found.as_json()
        if path.startswith("/v2/orders/") and method in ("GET", "DELETE"):
            order = self._by_id(path.removeprefix("/v2/orders/"))
            if order is None:
                raise Refused(404, 40410000, "order not found")
            if method == "GET":
                return 200, order.as_json()
            if not order.is_open:
                raise Refused(422, 42210000, f"order is already in \"{order.status}\" state")
            order.status = "canceled"
            order.canceled_at = order.updated_at = now_text()
            return 204, None
        if path in ("/v2/account/activities/FILL", "/v2/account/activities") and method == "GET":
            if path.endswith("/activities") and params.get("activity_types", "FILL") != "FILL":
                raise Refused(422, 40010001, "the fake Alpaca lists FILL activities only")
            return 200, [e.as_activity() for e in self._activities(params)]
        if path == "/v2/positions" and method == "GET":
            return 200, [self._position(s) for s, held in sorted(self.holdings.items()) if held.qty]
        if path.startswith("/v2/positions/") and method == "GET":
            symbol = path.removeprefix("/v2/positions/")
            held = self.holdings.get(symbol)
            if held is None or not held.qty:
                raise Refused(404, 40410000, "position does not exist")
            return 200, self._position(symbol)
        raise Refused(404, 40410000, f"{method} {path} is not served by the fake Alpaca")

    def _place(self, body: Any) -> VenueOrder:
        if not isinstance(body, dict):
            raise Refused(400, 40010000, "request body format is invalid")
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise Refused(422, 40010001, "symbol is required")
        side, kind, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in ("buy", "sell"):
            raise Refused(422, 40010001, f"invalid side: {side!r}")
        if kind not in ("market", "limit", "stop"):
            raise Refused(422, 40010001, f"order type {kind!r} is not served by the fake Alpaca")
        if tif not in TIME_IN_FORCE:
            raise Refused(422, 40010001, f"invalid time_in_force: {tif!r}")
        price = self._prices.get(symbol)
        if price is None:
            raise Refused(422, 40010001, f"asset \"{symbol}\" not found")
        qty = _quantity(body)
        if qty != qty.to_integral_value() and tif != "day":
            raise Refused(422, 40010001, "fractional orders must be DAY orders")
        limit = _priced(body, "limit_price", kind == "limit")
        stop = _priced(body, "stop_price", kind == "stop")
        if stop is not None and (price <= stop if side == "sell" else price >= stop):
            raise Refused(422, 42210000, f"stop price must be {'less' if side == 'sell' else 'greater'} than "
                                         "current price")
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(client_id, str) or len(client_id) > 128:
            raise Refused(422, 40010001, "client_order_id must be a string of at most 128 characters")
        if self._by_client_id(client_id) is not None:
            raise Refused(*NOT_UNIQUE)
        if side == "buy" and qty * (limit or stop or price) > self._buying_power():
            raise Refused(*INSUFFICIENT_BUYING_POWER)
        if side == "sell":
            held = self.holdings.get(symbol, _Holding()).qty
            available = held - sum((o.remaining for o in self.orders
                                    if o.is_open and o.symbol == symbol and o.side == "sell"), Decimal(0))
            if qty > available:
                raise Refused(403, 40310000, f"insufficient qty available for order (requested: {text(qty)}, "
                                             f"available: {text(available)})")
        now = now_text()
        order = VenueOrder(str(uuid.UUID(int=next(self._order_numbers))), client_id, symbol, side, kind, tif, qty,
                           limit, now, now, stop_price=stop)
        self.orders.append(order)
        share = qty
        if kind == "market" and self._partials:
            share = (qty * self._partials.popleft()).quantize(QTY_QUANTUM, ROUND_DOWN)
        if share > 0:
            self._fill_if_reached(order, share)
        return order

    def _fill_if_reached(self, order: VenueOrder, qty: Decimal, *, resting: bool = False) -> None:
        """Fill ``qty`` of ``order`` if the current price reaches it; ``resting``: a price move reached an order
        placed earlier, which a queued resting fraction fills in part."""
        price = self._prices[order.symbol]
        if order.type == "market" or order.triggered:
            self._fill(order, qty, price)
            return
        if order.type == "stop":
            assert order.stop_price is not None
            if not (price <= order.stop_price if order.side == "sell" else price >= order.stop_price):
                return
            order.triggered = True
            at = price
        elif order.limit_price is not None and (
            price <= order.limit_price if order.side == "buy" else price >= order.limit_price
        ):
            at = order.limit_price
        else:
            return
        if resting and self._resting_partials:
            qty = (qty * self._resting_partials.popleft()).quantize(QTY_QUANTUM, ROUND_DOWN)
        if qty > 0:
            self._fill(order, qty, at)

    def _fill(self, order: VenueOrder, qty: Decimal, price: Decimal) -> None:
        now = now_text()
        held = self.holdings.setdefault(order.symbol, _Holding())
        if order.side == "buy":
            self.cash -= qty * price
            held.cost += qty * price
            held.qty += qty
        else:
            self.cash += qty * price
            held.cost -= held.cost * qty / held.qty if held.qty else Decimal(0)
            held.qty -= qty
            if not held.qty:
                held.cost = Decimal(0)
        order.filled_qty += qty
        order.filled_notional += qty * price
        order.updated_at = now
        order.status = "filled" if order.remaining <= 0 else "partially_filled"
        if order.status == "filled":
            order.filled_at = now
        self.executions.append(Execution(order.id, order.client_order_id, order.symbol, order.side, qty, price,
                                         order.filled_qty, now, id=activity_id(now, len(self.executions) + 1),
                                         leaves_qty=order.remaining))

    def _buying_power(self) -> Decimal:
        reserved = sum((o.remaining * (o.limit_price or o.stop_price or self._prices[o.symbol]) for o in self.orders
                        if o.is_open and o.side == "buy"), Decimal(0))
        return self.cash - reserved

    def _list_orders(self, params: dict[str, str]) -> list[VenueOrder]:
        status = params.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise Refused(422, 40010001, f"invalid status: {status!r}")
        limit = number_param(params, "limit", DEFAULT_ORDERS_LISTED, MAX_ORDERS_LISTED)
        symbols = {s for s in params.get("symbols", "").split(",") if s}
        after, until = time_param(params, "after"), time_param(params, "until")
        chosen = [o for o in self.orders if (status == "all" or (status == "open") == o.is_open)
                  and (not symbols or o.symbol in symbols)
                  and (after is None or parse_time(o.created_at) > after)
                  and (until is None or parse_time(o.created_at) <= until)]
        return chosen[:limit] if direction_param(params) == "asc" else chosen[::-1][:limit]

    def _activities(self, params: dict[str, str]) -> list[Execution]:
        """The fills a ``GET /v2/account/activities/FILL`` lists (one page)."""
        size = number_param(params, "page_size", ACTIVITIES_PAGE, ACTIVITIES_PAGE)
        after, until = time_param(params, "after"), time_param(params, "until")
        chosen = [e for e in self.executions if (after is None or parse_time(e.at) > after)
                  and (until is None or parse_time(e.at) <= until)]
        if direction_param(params) == "desc":
            chosen.reverse()
        token = params.get("page_token")
        if token:
            ids = [e.id for e in chosen]
            if token not in ids:
                raise Refused(422, 40010001, f"invalid page_token: {token!r}")
            chosen = chosen[ids.index(token) + 1:]
        return chosen[:size]

    def _account(self) -> dict[str, Any]:
        value = sum((held.qty * self._prices[s] for s, held in self.holdings.items() if held.qty), Decimal(0))
        equity = self.cash + value
        power = text(self._buying_power())
        return {
            "id": self._account_id,
            "account_number": "PA0FAKE00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": power,
            "regt_buying_power": power,
            "non_marginable_buying_power": power,
            "cash": text(self.cash),
            "accrued_fees": "0",
            "pending_transfer_out": None,
            "pending_transfer_in": "0",
            "portfolio_value": text(equity),
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T14:30:00Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": text(equity),
            "last_equity": text(equity),
            "long_market_value": text(value),
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "options_buying_power": power,
            "options_approved_level": 0,
            "options_trading_level": 0,
        }

    def _position(self, symbol: str) -> dict[str, Any]:
        held = self.holdings[symbol]
        price = self._prices[symbol]
        reserved = sum((o.remaining for o in self.orders if o.is_open and o.symbol == symbol and o.side == "sell"),
                       Decimal(0))
        value = held.qty * price
        average = held.cost / held.qty
        return {
            "asset_id": asset_id(symbol),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "qty": text(held.qty),
            "qty_available": text(held.qty - reserved),
            "avg_entry_price": text(average),
            "side": "long" if held.qty > 0 else "short",
            "market_value": text(value),
            "cost_basis": text(held.cost),
            "unrealized_pl": text(value - held.cost),
            "unrealized_plpc": text((value - held.cost) / held.cost) if held.cost else "0",
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": text(price),
            "lastday_price": text(price),
            "change_today": "0",
        }

    def _by_id(self, order_id: str) -> VenueOrder | None:
        return next((o for o in self.orders if o.id == order_id), None)

    def _by_client_id(self, client_id: str) -> VenueOrder | None:
        return next((o for o in self.orders if o.client_order_id == client_id), None)


def _priced(body: dict[str, Any], name: str, required: bool) -> Decimal | None:
    """An order's ``limit_price`` or ``stop_price``: positive, in whole cents (hundredths of a cent below $1)."""
    value = decimal_field(body, name)
    if value is None:
        if required:
            raise Refused(422, 40010001, f"{name} is required for this order type and must be > 0")
        return None
    if not required:
        raise Refused(422, 40010001, f"{name} is not allowed for this order type")
    if value <= 0:
        raise Refused(422, 40010001, f"{name} must be > 0")
    if value != value.quantize(PENNY if value >= 1 else SUB_PENNY, ROUND_DOWN):
        raise Refused(422, 42210000, f"invalid {name} {text(value)}. sub-penny increment does not fulfill minimum "
                                     "pricing criteria")
    return value


def _quantity(body: dict[str, Any]) -> Decimal:
    qty = decimal_field(body, "qty")
    if qty is None:
        raise Refused(422, 40010001, "qty is required")
    if qty <= 0:
        raise Refused(422, 40010001, "qty must be > 0")
    if qty != qty.quantize(QTY_QUANTUM, ROUND_DOWN):
        raise Refused(422, 40010001, "qty must have at most 9 decimal places")
    return qty
