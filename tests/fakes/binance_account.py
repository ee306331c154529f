"""The fake Binance account: balances, the current prices, the order book and the fills it books.

The ledger: starting ``balances`` (free amounts per asset), a current price per symbol (``set_price``; by default
the close of the last bar the klines endpoint would serve) and a commission of ``commission_rate`` (0.1 % by
default) of what each fill gives. ``commission_asset`` says where it is charged:

* ``"quote"`` (the default): always in the quote asset, ``commission_rate`` of the fill's quote amount: a buy pays
  ``qty * price + commission`` quote, a sell receives ``qty * price - commission`` quote;
* ``"received"`` (Binance's own rule when the fee is not paid in BNB): in the asset the fill gives, so a buy
  pays ``qty * price`` quote and receives ``qty - commission`` base (``commission_rate`` of ``qty``), a sell
  receives ``qty * price - commission`` quote. The fill reports the commission in that asset.

Amounts are kept to 8 decimals (commission rounded half up). Market orders fill at once at the current price (as
taker). A limit order that is marketable when placed fills at once at the current price (taker); otherwise it
rests, locking ``qty * price`` of the quote, commission included when it is charged in the quote (a buy), or
``qty`` of the base (a sell), and fills in full at its limit price (maker) once
``set_price`` crosses it. A stop-market order (``STOP_LOSS``) rests, locking funds as a limit order at its trigger
would, until ``set_price`` reaches its trigger (a sell stop at or below it, a buy stop at or above it); it then
fills in full at that price (taker). A market order can be made to fill in part (``queue_partial``): it stays
open, its remainder's funds locked, until ``complete_partial`` or the next ``set_price`` of its symbol. So can the
next resting order a price reaches (``queue_resting_partial``): a limit order's rest fills at the next price that
reaches it again, a triggered stop's rest at the next price whatever it is.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from tests.fakes.binance_market import MarketData
from tests.fakes.binance_records import Balance, VenueOrder, VenueTrade, q8

CommissionAsset = Literal["quote", "received"]
"""Where the commission is charged: always in the quote asset, or in the asset each fill gives (the base on a buy)."""


class Ledger:
    """The account's books, guarded by the fake's ``lock`` (the booking methods expect it held)."""

    def __init__(
        self,
        market: MarketData,
        lock: threading.RLock,
        balances: Mapping[str, Decimal | int | str],
        commission_rate: Decimal,
        commission_asset: CommissionAsset = "quote",
    ) -> None:
        if commission_asset not in ("quote", "received"):
            raise ValueError(f"commission_asset {commission_asset!r} is not valid: use 'quote' or 'received'")
        self.market = market
        self.commission_rate = commission_rate
        self.commission_asset: CommissionAsset = commission_asset
        self._lock = lock
        self._starting_balances = {asset: Decimal(value) for asset, value in balances.items()}
        self.free: dict[str, Decimal] = {}
        self.locked: dict[str, Decimal] = {}
        self.orders: list[VenueOrder] = []
        self.trades: list[VenueTrade] = []
        self._prices: dict[str, Decimal] = {}
        self._partial_fractions: list[Decimal] = []
        self._resting_fractions: list[Decimal] = []
        self._order_ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)
        self._generated_ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        """The starting balances, no orders, no trades, no set prices, no partial fills queued."""
        with self._lock:
            self.free = dict(self._starting_balances)
            self.locked = {}
            self._prices.clear()
            self.orders.clear()
            self.trades.clear()
            self._partial_fractions.clear()
            self._resting_fractions.clear()

    # --- scripting --------------------------------------------------------------------------------

    def queue_partial(self, fraction: float | Decimal | str, *, resting: bool = False) -> None:
        value = Decimal(str(fraction))
        if not 0 < value < 1:
            raise ValueError(f"a partial fill fraction must be between 0 and 1, not {fraction}")
        with self._lock:
            (self._resting_fractions if resting else self._partial_fractions).append(value)

    def set_price(self, symbol: str, price: Decimal | float | str | int) -> None:
        market_id = self.market.market_id(symbol)
        value = Decimal(str(price))
        if value <= 0:
            raise ValueError(f"a price must be positive, not {price}")
        with self._lock:
            self._prices[market_id] = value
            for order in self.orders:
                if not order.is_open or order.symbol != market_id:
                    continue
                if order.type == "MARKET" or order.triggered:
                    self._fill(order, order.remaining, value, is_maker=False)
                elif order.type == "STOP_LOSS":
                    if value <= order.stop_price if order.side == "SELL" else value >= order.stop_price:
                        order.triggered = True
                        self._fill_resting(order, value, is_maker=False)
                elif (order.side == "BUY" and value <= order.price) or (order.side == "SELL" and value >= order.price):
                    self._fill_resting(order, order.price, is_maker=True)

    def _fill_resting(self, order: VenueOrder, price: Decimal, *, is_maker: bool) -> None:
        """A resting order the price reached: filled in full, or in the part a queued resting fraction says."""
        qty = order.remaining
        if self._resting_fractions:
            qty = self.market.listings[order.symbol].floor_to_step(qty * self._resting_fractions.pop(0))
        if qty > 0:
            self._fill(order, qty, price, is_maker=is_maker)

    def complete_partial(self, ref: str) -> VenueOrder:
        with self._lock:
            target = self.find(ref)
            if target is None or not target.is_open:
                raise ValueError(f"order {ref!r} is not open on the fake exchange")
            if target.type == "MARKET" or target.type == "STOP_LOSS":
                price = self.current_price(target.symbol)
                if price is None:
                    raise ValueError(f"no price for {target.symbol}: call set_price first")
                self._fill(target, target.remaining, price, is_maker=False)
            else:
                self._fill(target, target.remaining, target.price, is_maker=True)
            return target.copy()

    def set_balance(self, asset: str, free: Decimal | int | str) -> None:
        with self._lock:
            self.free[asset.upper()] = Decimal(free)

    # --- reading ----------------------------------------------------------------------------------

    def balances(self) -> dict[str, Balance]:
        """Every asset the account holds or has held, and every listed asset, with its free and locked amounts."""
        listings = self.market.listings.values()
        with self._lock:
            assets = sorted(
                {*self.free, *self.locked}
                | {listing.base for listing in listings}
                | {listing.quote for listing in listings}
            )
            return {
                asset: Balance(self.free.get(asset, Decimal(0)), self.locked.get(asset, Decimal(0)))
                for asset in assets
            }

    def current_price(self, market_id: str) -> Decimal | None:
        """The last ``set_price``; else the close of the latest bar the klines endpoint would serve."""
        with self._lock:
            price = self._prices.get(market_id)
            return price if price is not None else self.market.last_close(market_id)

    def find(self, ref: int | str) -> VenueOrder | None:
        """An order by id (an int) or client id (a str: the latest order with that client id)."""
        with self._lock:
            if isinstance(ref, int):
                return next((order for order in self.orders if order.order_id == ref), None)
            return next((order for order in reversed(self.orders) if order.client_order_id == ref), None)

    # --- booking (the lock held) ------------------------------------------------------------------

    def next_order_id(self) -> int:
        return next(self._order_ids)

    def generated_id(self) -> int:
        """A number for an id the venue makes up (a client order id not sent, a cancel's own id)."""
        return next(self._generated_ids)

    def commission(self, given: Decimal) -> Decimal:
        """The commission on a fill that gives ``given`` (of the asset it is charged in)."""
        return q8(given * self.commission_rate)

    def buy_cost(self, notional: Decimal) -> Decimal:
        """The quote a buy of ``notional`` takes: with the commission when it is charged in the quote."""
        return notional + self.commission(notional) if self.commission_asset == "quote" else notional

    def submit(self, order: VenueOrder, current: Decimal | None) -> list[VenueTrade]:
        """Book a new, checked order: fill what fills now, lock what rests (GTC); returns its fills."""
        self.orders.append(order)
        first_trade = len(self.trades)
        if order.type == "MARKET":
            assert current is not None
            fraction = self._partial_fractions.pop(0) if self._partial_fractions else None
            if fraction is None:
                self._fill(order, order.quantity, current, is_maker=False)
            else:
                partial = self.market.listings[order.symbol].floor_to_step(order.quantity * fraction)
                if partial > 0:
                    self._fill(order, partial, current, is_maker=False)
                self._lock_funds(order, current)
        elif order.type == "STOP_LOSS":  # placement refuses a stop the price has reached: it rests
            self._lock_funds(order, order.stop_price)
        elif current is not None and (
            (order.side == "BUY" and current <= order.price) or (order.side == "SELL" and current >= order.price)
        ):
            self._fill(order, order.quantity, current, is_maker=False)
        else:
            self._lock_funds(order, order.price)
        return self.trades[first_trade:]

    def cancel(self, order: VenueOrder) -> None:
        self._release(order)
        order.status = "CANCELED"
        order.update_ms = self.market.server_time_ms()

    def _move(self, book: dict[str, Decimal], asset: str, amount: Decimal) -> None:
        book[asset] = book.get(asset, Decimal(0)) + amount

    def _lock_funds(self, order: VenueOrder, price: Decimal) -> None:
        """Lock what the order's remainder may need at ``price``: quote and commission (buy) or base (sell)."""
        listing = self.market.listings[order.symbol]
        if order.side == "BUY":
            amount, asset = self.buy_cost(q8(order.remaining * price)), listing.quote
        else:
            amount, asset = order.remaining, listing.base
        amount = min(amount, self.free.get(asset, Decimal(0)))
        self._move(self.free, asset, -amount)
        self._move(self.locked, asset, amount)
        order.locked += amount

    def _release(self, order: VenueOrder) -> None:
        """Give back to free whatever the order still holds locked."""
        listing = self.market.listings[order.symbol]
        asset = listing.quote if order.side == "BUY" else listing.base
        self._move(self.locked, asset, -order.locked)
        self._move(self.free, asset, order.locked)
        order.locked = Decimal(0)

    def _spend(self, order: VenueOrder, asset: str, amount: Decimal) -> None:
        """Take ``amount`` of ``asset`` for ``order``: from its lock first, the rest from free."""
        from_lock = min(order.locked, amount)
        order.locked -= from_lock
        self._move(self.locked, asset, -from_lock)
        self._move(self.free, asset, -(amount - from_lock))

    def _fill(self, order: VenueOrder, qty: Decimal, price: Decimal, *, is_maker: bool) -> None:
        """Book a fill of ``qty`` at ``price``: move the balances, record the trade, update the order."""
        listing = self.market.listings[order.symbol]
        quote_qty = q8(qty * price)
        commission, commission_asset = self.commission(quote_qty), listing.quote
        if order.side == "BUY" and self.commission_asset == "received":
            commission, commission_asset = self.commission(qty), listing.base
            self._spend(order, listing.quote, quote_qty)
            self._move(self.free, listing.base, qty - commission)
        elif order.side == "BUY":
            self._spend(order, listing.quote, quote_qty + commission)
            self._move(self.free, listing.base, qty)
        else:
            self._spend(order, listing.base, qty)
            self._move(self.free, listing.quote, quote_qty - commission)
        now = self.market.server_time_ms()
        trade = VenueTrade(
            trade_id=next(self._trade_ids),
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=quote_qty,
            commission=commission,
            commission_asset=commission_asset,
            time_ms=now,
            is_maker=is_maker,
        )
        self.trades.append(trade)
        order.executed_qty += qty
        order.quote_qty += quote_qty
        order.update_ms = now
        order.status = "FILLED" if order.remaining <= 0 else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self._release(order)
