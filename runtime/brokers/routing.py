"""The one order flow of the venue brokers (ccxt, Alpaca): ``VenueRouting``.

After each bar, for one sleeve, ``route``:

1. follows the sleeve's working orders: their new fills are booked in the engine, their end (filled, cancelled,
   rejected, expired) ends them; an order whose fate was unknown and that the venue does not hold never reached
   it;
2. cancels the working orders whose day has ended (``Intent.expires_ms`` reached by the bar's close): their
   fills are booked and their unfilled rest released (``Engine.release``);
3. sends the engine's new intents, each as its kind (market, limit or stop) at its price, under a deterministic
   client order id. A new decision replaces the sleeve's working orders: they are cancelled first and the
   unfilled rest of each is added to the new order (the engine sized the intent against its position plus the
   units in flight, so the new order carries what the cancelled ones will not fill); a stop the market has
   already crossed is refused by the venue and goes out as a market order (``…-<n>m``). Before an exit that
   reduces the position, the resting protective stop is cancelled too; units it sold (or bought back) that
   the engine did not know of when it decided shrink the exit, which so never sells more than the ledger holds;
4. keeps exactly one protective stop resting per sleeve, matching ``Engine.protective_stop``: placed while a
   position is held and none rests, cancelled and placed again when its quantity or trigger moved (a trailing
   stop), cancelled when the position is flat. It covers the position less what working exits already sell. It
   is an order on record like any other (status new, kind stop, its reason ``stop_loss`` or ``trailing_stop``),
   so after a restart ``resume`` takes it over and the fills the venue made while the runtime was down are
   booked once, with its reason. A stop the market has already crossed when it is placed is refused by the
   venue; a market exit is sent in its place, as the triggered stop would have done. While no stop rests (a
   working exit of the strategy's holds the units, or the venue refused the stop) and a bar reaches the stop's
   level, the working exits are cancelled and the position is sold at market at that bar's close.

Between bars, ``catch_up`` does step 1 alone for a sleeve (the reconciliation's booking of fills the venue made
meanwhile), once the sleeve has had a bar in this process (its engine books a fill into its last bar).

Nothing here raises into the runtime loop for a venue's sake: a venue that cannot be asked, or an order whose
fate is unknown, is logged and looked at again on the next bar. A venue broker provides its conversions
(``_size``, ``_tick_size``, ``_venue_id``) and the booking of what a venue order says (``_book``, with ``_fill``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from pipeline.domain.trading import Fill, Order, OrderStatus, OrderType, Side
from pipeline.engine.core import Engine, Intent
from runtime.brokers.base import (
    OpenOnRecord,
    Working,
    client_order_id,
    open_on_record,
    protective_order_id,
)
from runtime.brokers.submission import OrderRequest, Submission, VenueUnavailable

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One ``route`` call: the sleeve, its engine, the bar, and what it records."""

    sleeve: str
    symbol: str
    engine: Engine
    bar_ms: int
    orders: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    stopped: float = 0.0
    """Signed units protective orders filled in this call that no exit has absorbed yet."""


class VenueRouting:
    """The order flow every venue broker shares (the module documentation says what it does).

    A venue broker sets ``open`` (its working orders by client id), ``orders`` (its idempotent submission,
    ``runtime.brokers.submission``), ``seen`` (the fill ids booked) and ``routed`` (empty: the open time of the
    last bar routed per sleeve), and provides ``_size``, ``_tick_size``, ``_venue_id`` and ``_book``.
    """

    open: dict[str, Working]
    orders: Submission[Any]
    seen: set[str]
    routed: dict[str, int]

    # ------------------------------------------------------------------ the broker protocol
    def route(self, sleeve: str, symbol: str, engine: Engine, bar_ms: int) -> tuple[list[Order], list[Fill]]:
        """Follow the sleeve's working orders, end the expired ones, send the engine's new intents and keep the
        protective stop; returns the orders and fills to record."""
        step = Step(sleeve, symbol, engine, bar_ms)
        self.routed[sleeve] = bar_ms
        for entry in self._working(sleeve):
            self._follow(entry, step)
        self._expire(step)
        for number, intent in enumerate(engine.take_intents()):
            self._execute(intent, number, step)
        self._protect(step)
        return step.orders, step.fills

    def catch_up(self, sleeve: str, symbol: str, engine: Engine) -> tuple[list[Order], list[Fill]]:
        """Between bars: follow the sleeve's working orders (their new fills booked in its last bar, their end
        recorded) and send nothing; a sleeve not routed yet in this process is left to its next bar."""
        bar_ms = self.routed.get(sleeve)
        if bar_ms is None:
            return [], []
        step = Step(sleeve, symbol, engine, bar_ms)
        for entry in self._working(sleeve):
            self._follow(entry, step)
        return step.orders, step.fills

    def settle(self, sleeve: str, symbol: str, fills: Any) -> tuple[list[Order], list[Fill]]:
        """Venue fills were recorded when routed; the engine's own fill frame adds nothing."""
        return [], []

    def resume(self, orders: Sequence[Order], fills: Sequence[Fill]) -> None:
        """Take over the orders on record still open, with their stored fills (booked again never)."""
        for found in open_on_record(orders, fills):
            if found.order.client_order_id not in self.open:
                self.open[found.order.client_order_id] = self._resumed(found)
                self.seen |= found.fill_ids

    def _resumed(self, found: OpenOnRecord) -> Working:
        return Working.of_record(found)

    # ------------------------------------------------------------------ following orders
    def _working(self, sleeve: str, which: Callable[[Working], bool] = lambda _e: True) -> list[Working]:
        return [e for e in self.open.values() if e.sleeve == sleeve and which(e)]

    def _follow(self, entry: Working, step: Step, release: bool = True) -> None:
        """Look at an order placed earlier: new fills, or its end (filled, cancelled, rejected, expired)."""
        try:
            order = self.orders.find(entry.client_id, entry.symbol)
        except VenueUnavailable as exc:
            log.warning("%s: order %s could not be looked up (%s); tried again next bar", entry.sleeve,
                        entry.client_id, exc)
            return
        if order is None:
            if not entry.venue_id:  # it never reached the venue: its units stop counting as in flight
                del self.open[entry.client_id]
                if release and not entry.protective:
                    step.engine.release(float(entry.rest))
                step.orders.append(entry.record(OrderStatus.REJECTED, f"{entry.reason}: never reached the venue"))
            return
        self._track(entry, order, step, release)

    def _track(self, entry: Working, order: Any, step: Step, release: bool = True) -> None:
        """Take the venue's answer about an order: its venue id, its new fills and, once done, its end (the
        unfilled rest of an order that ended is released, unless ``release`` is false: a replaced order's rest
        goes on in its replacement)."""
        entry.venue_id = self._venue_id(order)
        status = self._book(entry, order, step)
        step.orders.append(entry.record(status))
        if not status.final:
            return
        del self.open[entry.client_id]
        if status is not OrderStatus.FILLED and release and not entry.protective and entry.rest:
            step.engine.release(float(entry.rest), unreached=True)

    def _fill(self, entry: Working, step: Step, qty: Decimal, price: Decimal, fee: Decimal, fill_id: str,
              at: Any) -> None:
        """Book one venue fill of ``qty`` units (a size) of ``entry`` at ``price`` with ``fee`` (quote currency)."""
        signed = qty if entry.qty > 0 else -qty
        engine = step.engine
        engine.apply_fill(float(signed), float(price), float(fee), entry.reason, counted=not entry.protective)
        if entry.protective:
            step.stopped += float(signed)
        entry.filled += qty
        entry.notional += qty * price
        step.fills.append(Fill(fill_id=fill_id, client_order_id=entry.client_id, sleeve=entry.sleeve,
                               symbol=entry.symbol, side=entry.side, qty=qty, price=price, fee=fee, at=at,
                               reason=entry.reason))

    def _withdraw(self, step: Step, which: Callable[[Working], bool], release: bool = False) -> float:
        """Cancel the sleeve's working orders that ``which`` selects; returns the signed units they will never
        fill (released when ``release``). One that cannot be cancelled now stays working and counts in flight."""
        gone = 0.0
        for entry in self._working(step.sleeve, which):
            if not entry.venue_id:  # its fate first: an order of unknown fate cannot be cancelled by id
                self._follow(entry, step, release)
            if entry.client_id in self.open and entry.venue_id:
                failure = self.orders.cancel(entry.venue_id, entry.symbol)  # gone meanwhile: following books it
                if failure is not None:
                    log.warning("%s: could not cancel %s (%s); it keeps working", step.sleeve, entry.client_id,
                                failure)
                    continue
                self._follow(entry, step, release)
            if entry.client_id not in self.open:
                gone += float(entry.rest)
        return gone

    def _expire(self, step: Step) -> None:
        """Cancel the day orders whose day has ended; their fills are booked and their rest released."""
        def expired(entry: Working) -> bool:
            closed = step.bar_ms + (step.engine.bar_length_ms or 0)  # the bar just closed: its close time
            return entry.expires_ms is not None and closed >= entry.expires_ms and not entry.protective

        self._withdraw(step, expired, release=True)

    # ------------------------------------------------------------------ sending
    def _execute(self, intent: Intent, number: int, step: Step) -> None:
        """Send one intent: the sleeve's working orders are replaced, a reducing exit lifts the stop first."""
        engine = step.engine
        qty = intent.qty + self._withdraw(step, lambda e: not e.protective)
        units = engine.ledger.units
        if qty * units < 0.0 or qty * step.stopped > 0.0:
            self._withdraw(step, lambda e: e.protective)
        if qty * step.stopped > 0.0:  # the stop already sold (bought back) some of what this exit would
            shrunk = qty - step.stopped if (qty - step.stopped) * qty > 0.0 else 0.0
            engine.release(qty - shrunk)
            step.stopped -= qty - shrunk
            qty = shrunk
        if qty == 0.0:
            return
        client_id = client_order_id(step.sleeve, step.bar_ms, number)
        side = Side.of(qty)
        size = self._size(step.symbol, abs(qty))
        kind = OrderType(intent.kind)
        price = None if intent.price is None else self._tick(step.symbol, intent.price, side)
        if size <= 0 or (kind is not OrderType.MARKET and (price is None or price <= 0)):
            engine.release(qty)  # as close as the venue's precision allows: sending it again would not help
            what = "amount" if size <= 0 else "price"
            step.orders.append(self._entry(step, client_id, qty, intent, kind, None, None).record(
                OrderStatus.REJECTED, f"{intent.reason}: below the venue's {what} precision"))
            return
        signed = size if qty > 0 else -size
        if float(signed) != qty:
            engine.release(qty - float(signed))  # rounded to the venue's precision
        limit = price if kind is OrderType.LIMIT else None
        stop = price if kind is OrderType.STOP else None
        entry = self._entry(step, client_id, signed, intent, kind, limit, stop)
        refused = self._place(entry, step)
        if refused is not None and refused.startswith("triggered: "):  # crossed already: as a stop would, at once
            refused = self._place(self._entry(step, f"{client_id}m", signed, intent, OrderType.MARKET, None, None),
                                  step)
        if refused is not None:
            engine.release(float(signed))

    def _entry(self, step: Step, client_id: str, qty: float | Decimal, intent: Intent, kind: OrderType,
               price: Decimal | None, stop: Decimal | None) -> Working:
        amount = qty if isinstance(qty, Decimal) else Decimal(repr(qty))
        return Working(step.sleeve, step.symbol, "", client_id, amount, intent.reason, step.bar_ms, kind, price, stop,
                       intent.expires_ms)

    def _place(self, entry: Working, step: Step) -> str | None:
        """Submit ``entry``; it is followed from now on unless the venue refused it (then returns why, with
        ``"triggered: "`` in front for a stop the market has already crossed)."""
        request = OrderRequest(entry.client_id, entry.symbol, entry.side, abs(entry.qty), entry.price, entry.kind,
                               entry.stop_price, "gtc" if entry.expires_ms is None else "day")
        sent = self.orders.submit(request)
        if sent.outcome == "rejected":
            step.orders.append(entry.record(OrderStatus.REJECTED, f"{entry.reason}: {sent.reason}"))
            log.warning("%s: %s %s %s %s rejected by the venue: %s", step.sleeve, entry.kind, entry.side,
                        abs(entry.qty), entry.symbol, sent.reason)
            return ("triggered: " if sent.triggered else "") + sent.reason
        self.open[entry.client_id] = entry
        if sent.order is None:  # on record as new without a venue id; looked up from the next bar
            log.error("%s: %s %s %s could not be sent (%s); looked up again next bar", step.sleeve, entry.side,
                      abs(entry.qty), entry.symbol, sent.reason)
            step.orders.append(entry.record(OrderStatus.NEW))
            return None
        self._track(entry, sent.order, step)
        return None

    # ------------------------------------------------------------------ the protective stop
    def _protect(self, step: Step) -> None:
        """Keep one stop resting at the venue that matches the engine's ``protective_stop``."""
        resting = self._working(step.sleeve, lambda e: e.protective)
        if any(e.kind is OrderType.MARKET for e in resting):
            return  # a market exit in the stop's place is still working: nothing to protect beside it
        level = step.engine.protective_stop()
        if level is not None and step.engine.crossed(level):
            # the bar reached the stop while a working exit held units no stop covers (or the venue refused the
            # stop): the working exits give way, and the stop below (or its market exit) covers everything
            self._withdraw(step, lambda e: not e.protective and float(e.rest) * level.qty > 0.0, release=True)
        target = self._stop_target(step)
        for entry in resting:
            if target is not None and (entry.rest, entry.stop_price) == target:
                return
        if resting:
            self._withdraw(step, lambda e: e.protective)
            if self._working(step.sleeve, lambda e: e.protective):
                return  # not cancelled (the venue could not be asked): tried again next bar
            target = self._stop_target(step)  # it may have filled meanwhile
        stop = step.engine.protective_stop()
        if target is None or stop is None:
            return
        qty, price = target
        entry = Working(step.sleeve, step.symbol, "", protective_order_id(step.sleeve, step.bar_ms), qty,
                        stop.reason, step.bar_ms, OrderType.STOP, None, price)
        refused = self._place(entry, step)
        if refused is not None and (refused.startswith("triggered: ") or step.engine.crossed(stop)):
            log.warning("%s: the market has crossed the %s at %s: %s sent as a market exit", step.sleeve,
                        stop.reason, price, qty)
            exit_now = Working(step.sleeve, step.symbol, "", protective_order_id(step.sleeve, step.bar_ms,
                                                                                exit_now=True), qty, stop.reason,
                               step.bar_ms)
            self._place(exit_now, step)

    def _stop_target(self, step: Step) -> tuple[Decimal, Decimal] | None:
        """The protective stop the venue should hold: signed units at the venue's precision and its trigger at
        the venue's tick (triggering no later than the engine's level); None when nothing needs it."""
        stop = step.engine.protective_stop()
        if stop is None:
            return None
        exiting = sum(float(e.rest) for e in self._working(step.sleeve, lambda e: not e.protective)
                      if float(e.rest) * stop.qty > 0.0)
        qty = stop.qty - exiting
        if qty * stop.qty <= 0.0:
            return None
        side = Side.of(qty)
        size = self._size(step.symbol, abs(qty))
        price = self._tick(step.symbol, stop.price, side)
        if size <= 0 or price is None or price <= 0:
            return None
        return (size if qty > 0 else -size), price

    # ------------------------------------------------------------------ what a venue broker provides
    def _size(self, symbol: str, qty: float) -> Decimal:
        """``qty`` (a size) at the venue's amount precision; 0 when it cannot be sized."""
        raise NotImplementedError

    def _tick(self, symbol: str, price: float, side: Side) -> Decimal | None:
        """``price`` on the venue's price grid (``_tick_size``): a sell's limit and stop round up, a buy's down, so
        a limit is never worse than asked and a stop never triggers later; None when it cannot be priced."""
        if not math.isfinite(price) or price <= 0:
            return None
        exact = Decimal(repr(float(price)))
        try:
            tick = self._tick_size(symbol, exact)
        except VenueUnavailable as exc:
            log.warning("a price for %s cannot be set (%s)", symbol, exc)
            return None
        if tick is None:
            return exact
        return (exact / tick).to_integral_value(ROUND_CEILING if side == "sell" else ROUND_FLOOR) * tick

    def _tick_size(self, symbol: str, price: Decimal) -> Decimal | None:
        """The venue's price increment for ``symbol`` at ``price`` (None: prices are not rounded);
        ``VenueUnavailable`` when it cannot be known now."""
        raise NotImplementedError

    def _venue_id(self, order: Any) -> str:
        raise NotImplementedError

    def _book(self, entry: Working, order: Any, step: Step) -> OrderStatus:
        """Book the venue order's new fills (``_fill``); returns the order's status (final once it is done)."""
        raise NotImplementedError
