"""The fake Binance's signed spot endpoints, the ones ccxt's ``binance`` class calls to trade, over the ``Ledger``:

* ``GET /api/v3/account`` — balances, ``free`` and ``locked`` per asset (``omitZeroBalances`` honoured);
* ``POST /api/v3/order`` — ``MARKET`` (``quantity`` or ``quoteOrderQty``), ``LIMIT`` (``quantity``,
  ``price``, ``timeInForce`` GTC) and ``STOP_LOSS`` (``quantity``, ``stopPrice``; no ``price`` and no
  ``timeInForce``: a stop-market order, what ccxt sends for a ``market`` order with a ``stopPrice`` or
  ``triggerPrice`` param on a spot market) orders, ``newClientOrderId``; answered as ``newOrderRespType`` FULL
  (ccxt's choice, and Binance's default for these types: the order and its ``fills``), the only answer type
  served;
* ``GET /api/v3/order`` (by ``orderId`` or ``origClientOrderId``), ``DELETE /api/v3/order``,
  ``GET /api/v3/openOrders`` and ``DELETE /api/v3/openOrders`` (cancel all) of a symbol, ``GET /api/v3/allOrders``
  (a symbol's latest 500 orders);
* ``GET /api/v3/myTrades`` — ``symbol``, ``orderId``, ``fromId``, ``startTime``, ``endTime``, ``limit``, in the
  combinations Binance accepts (else ``-1128``), ``startTime`` and ``endTime`` at most 24 hours apart (else
  ``-1127``); ``startTime`` alone reads from that time on, as far as ``limit`` goes.

Orders are checked as Binance does: unknown symbol ``-1121``, missing parameters ``-1102``, PRICE_FILTER /
LOT_SIZE / MARKET_LOT_SIZE / NOTIONAL violations ``-1013 Filter failure: <FILTER>``, a ``newClientOrderId``
already used by an open or filled order ``-2010 Duplicate order sent.``, too little free balance ``-2010 Account
has insufficient balance for requested action.`` (all HTTP 400), and a stop the current price has already reached
``-2010 Stop price would trigger immediately.`` (a sell stop at or above the price, a buy stop at or below it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from tests.fakes.binance_account import Ledger
from tests.fakes.binance_records import (
    DEFAULT_LIMIT,
    DUPLICATE_ORDER,
    INSUFFICIENT_BALANCE,
    MAX_LIMIT,
    NO_SUCH_ORDER,
    UNKNOWN_ORDER,
    Rejection,
    VenueOrder,
    VenueTrade,
    amount,
    decimal_param,
    int_param,
    missing,
    q8,
)

_CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

DAY_MS = 86_400_000
_MY_TRADES_COMBINATIONS = frozenset(frozenset(names) for names in (
    (), ("orderId",), ("startTime",), ("endTime",), ("fromId",), ("startTime", "endTime"), ("orderId", "fromId")))
"""The optional parameters ``GET /api/v3/myTrades`` accepts together (besides ``symbol``, ``limit``)."""

Handler = Callable[[dict[str, str]], Any]
"""A signed endpoint: the request's parameters in, the JSON payload out (or a ``Rejection``)."""


class SignedEndpoints:
    """The signed endpoints' answers; called with the fake's lock held, after the request was authenticated."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.market = ledger.market

    def handlers(self) -> dict[tuple[str, str], Handler]:
        """Each served ``(method, endpoint)`` with its handler."""
        return {
            ("GET", "account"): self.account,
            ("POST", "order"): self.place,
            ("GET", "order"): self.query_order,
            ("DELETE", "order"): self.cancel,
            ("GET", "openOrders"): self.open_orders,
            ("DELETE", "openOrders"): self.cancel_all,
            ("GET", "allOrders"): self.all_orders,
            ("GET", "myTrades"): self.my_trades,
        }

    def account(self, params: dict[str, str]) -> dict[str, Any]:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        rate = self.ledger.commission_rate
        maker_bps = int(rate * 10_000)
        rate_text, zero = amount(rate), amount(Decimal(0))
        balances = [
            {"asset": asset, "free": amount(balance.free), "locked": amount(balance.locked)}
            for asset, balance in self.ledger.balances().items()
            if not (omit_zero and balance.total == 0)
        ]
        return {
            "makerCommission": maker_bps,
            "takerCommission": maker_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": rate_text, "taker": rate_text, "buyer": zero, "seller": zero},
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.market.server_time_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 354937868,
        }

    def place(self, params: dict[str, str]) -> dict[str, Any]:
        """``POST /api/v3/order``: validate, check funds, place, fill what can fill, answer FULL."""
        listing = self.market.listing_of(params)
        side = params.get("side", "")
        if not side:
            raise missing("side")
        if side not in ("BUY", "SELL"):
            raise Rejection((-1100, "Illegal characters found in parameter 'side'; legal range is 'BUY, SELL'."))
        order_type = params.get("type", "")
        if not order_type:
            raise missing("type")
        if order_type not in ("MARKET", "LIMIT", "STOP_LOSS"):
            raise Rejection((-1116, "Invalid orderType."))
        if params.get("newOrderRespType", "FULL") != "FULL":
            raise Rejection((-1100, "Illegal characters found in parameter 'newOrderRespType'; the fake answers FULL."))
        client_order_id = params.get("newClientOrderId") or f"fake{self.ledger.generated_id():018d}"
        if not _CLIENT_ORDER_ID.match(client_order_id):
            raise Rejection((-1100, "Illegal characters found in parameter 'newClientOrderId'."))
        if any(
            order.client_order_id == client_order_id and order.status in ("NEW", "PARTIALLY_FILLED", "FILLED")
            for order in self.ledger.orders
        ):
            raise Rejection(DUPLICATE_ORDER)

        quantity = decimal_param(params, "quantity")
        current = self.ledger.current_price(listing.market_id)
        orig_quote_qty = stop_price = Decimal(0)
        if order_type == "STOP_LOSS":
            time_in_force, price, stop_price = "GTC", Decimal(0), _stop_price(params, quantity, side, current)
            reference = stop_price
        elif order_type == "LIMIT":
            time_in_force = params.get("timeInForce", "")
            if not time_in_force:
                raise missing("timeInForce")
            if time_in_force != "GTC":
                raise Rejection((-1115, "Invalid timeInForce; the fake serves GTC."))
            price = decimal_param(params, "price")
            if price is None:
                raise missing("price")
            if quantity is None:
                raise missing("quantity")
            reference = price
        else:
            time_in_force, price = "GTC", Decimal(0)
            quote_order_qty = decimal_param(params, "quoteOrderQty")
            if quantity is None and quote_order_qty is None:
                raise Rejection((-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"))
            if current is None:
                raise Rejection(
                    (-2010, f"The fake exchange has no price for {listing.market_id}: call set_price or serve_bars.")
                )
            reference = current
            if quantity is None and quote_order_qty is not None:
                orig_quote_qty = quote_order_qty
                quantity = listing.floor_to_step(quote_order_qty / current)
        assert quantity is not None
        failure = listing.filter_failure(order_type, quantity, reference)
        if failure is not None:
            raise Rejection((-1013, f"Filter failure: {failure}"))
        if side == "BUY":
            needed, asset = self.ledger.buy_cost(q8(quantity * reference)), listing.quote
        else:
            needed, asset = quantity, listing.base
        if self.ledger.free.get(asset, Decimal(0)) < needed:
            raise Rejection(INSUFFICIENT_BALANCE)

        now = self.market.server_time_ms()
        order = VenueOrder(
            order_id=self.ledger.next_order_id(),
            client_order_id=client_order_id,
            symbol=listing.market_id,
            side=side,
            type=order_type,
            time_in_force=time_in_force,
            quantity=quantity,
            price=price,
            status="NEW",
            time_ms=now,
            update_ms=now,
            orig_quote_qty=orig_quote_qty,
            stop_price=stop_price,
        )
        return self._placement(order, self.ledger.submit(order, current))

    @staticmethod
    def _placement(order: VenueOrder, fills: list[VenueTrade]) -> dict[str, Any]:
        """The FULL answer to a placement: the ids, the order and its fills."""
        return {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time_ms,
            **order.summary(),
            "workingTime": order.time_ms,
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "fills": [trade.as_fill() for trade in fills],
        }

    def query_order(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._order_of(params)
        if order is None:
            raise Rejection(NO_SUCH_ORDER)
        return order.as_query()

    def cancel(self, params: dict[str, str]) -> dict[str, Any]:
        """``DELETE /api/v3/order``: as Binance, ``clientOrderId`` in the answer is the cancel's own id.

        The order's client id is in ``origClientOrderId``; the cancel's is generated.
        """
        order = self._order_of(params)
        if order is None or not order.is_open:
            raise Rejection(UNKNOWN_ORDER)
        return self._cancelled(order)

    def _cancelled(self, order: VenueOrder) -> dict[str, Any]:
        self.ledger.cancel(order)
        return {
            "symbol": order.symbol,
            "origClientOrderId": order.client_order_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": f"cancel{self.ledger.generated_id():016d}",
            "transactTime": order.update_ms,
            **order.summary(),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def cancel_all(self, params: dict[str, str]) -> list[dict[str, Any]]:
        market_id = self.market.listing_of(params).market_id
        open_orders = [order for order in self.ledger.orders if order.is_open and order.symbol == market_id]
        if not open_orders:
            raise Rejection(UNKNOWN_ORDER)
        return [self._cancelled(order) for order in open_orders]

    def open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        market_id = self.market.listing_of(params).market_id
        return [order.as_query() for order in self.ledger.orders if order.is_open and order.symbol == market_id]

    def all_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /api/v3/allOrders``: a symbol's latest 500 orders, oldest first."""
        market_id = self.market.listing_of(params).market_id
        orders = [order for order in self.ledger.orders if order.symbol == market_id]
        return [order.as_query() for order in orders[-DEFAULT_LIMIT:]]

    def my_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /api/v3/myTrades``: from ``fromId`` or ``startTime`` the oldest first, else the latest ``limit``
        (up to ``endTime`` when sent)."""
        market_id = self.market.listing_of(params).market_id
        order_id = int_param(params, "orderId")
        from_id = int_param(params, "fromId")
        start = int_param(params, "startTime")
        end = int_param(params, "endTime")
        given = frozenset(name for name, value in
                          (("orderId", order_id), ("fromId", from_id), ("startTime", start), ("endTime", end))
                          if value is not None)
        if given not in _MY_TRADES_COMBINATIONS:
            raise Rejection((-1128, "Combination of optional parameters invalid."))
        if start is not None and end is not None and end - start > DAY_MS:
            raise Rejection((-1127, "More than 24 hours between startTime and endTime."))
        limit = _limit(params)
        trades = [
            trade
            for trade in self.ledger.trades
            if trade.symbol == market_id
            and (order_id is None or trade.order_id == order_id)
            and (from_id is None or trade.trade_id >= from_id)
            and (start is None or trade.time_ms >= start)
            and (end is None or trade.time_ms <= end)
        ]
        chosen = trades[:limit] if from_id is not None or start is not None else trades[-limit:]
        return [trade.as_my_trade() for trade in chosen]

    def _order_of(self, params: Mapping[str, str]) -> VenueOrder | None:
        """The order a query or cancel names by ``orderId`` or ``origClientOrderId``, on its symbol."""
        listing = self.market.listing_of(params)
        order_id = int_param(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise Rejection((-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"))
        found = self.ledger.find(order_id if order_id is not None else str(client_id))
        if found is None or found.symbol != listing.market_id:
            return None
        if client_id and found.client_order_id != client_id:
            return None
        return found


def _stop_price(params: Mapping[str, str], quantity: Decimal | None, side: str, current: Decimal | None) -> Decimal:
    """A ``STOP_LOSS`` order's checked ``stopPrice``: sent with a quantity, without a price or time in force, and
    not already reached by the current price."""
    for name in ("price", "timeInForce"):
        if params.get(name):
            raise Rejection((-1106, f"Parameter '{name}' sent when not required."))
    stop_price = decimal_param(params, "stopPrice")
    if stop_price is None:
        raise missing("stopPrice")
    if quantity is None:
        raise missing("quantity")
    if current is not None and (current <= stop_price if side == "SELL" else current >= stop_price):
        raise Rejection((-2010, "Stop price would trigger immediately."))
    return stop_price


def _limit(params: Mapping[str, str]) -> int:
    limit = int_param(params, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Rejection((-1130, "Data sent for parameter 'limit' is not valid."))
    return limit
