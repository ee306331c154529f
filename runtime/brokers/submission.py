"""One idempotent order submission for every venue broker: an order reaches its venue at most once.

Every order travels under its deterministic client order id (``runtime.brokers.base.client_order_id``), so its fate
can always be asked:

1. Before anything is sent, the venue is asked whether it already holds the id: an order sent just before a crash,
   or by a bar processed again, is found instead of being sent twice.
2. The order is placed. A refusal (funds, filters, an invalid order) is final: nothing was placed. A refusal
   because the id is already taken means an earlier attempt arrived after all: that order is looked up.
3. A transient failure (a timeout, a lost answer, 429, 5xx) leaves the outcome unknown: the order is looked up by
   its id, and sent again only when the venue says it has none, after the retry policy's wait
   (``pipeline.retry``).
4. When the venue cannot be asked, or the attempts run out, the outcome is ``unknown``: the broker keeps the order on
   record without a venue id and looks it up again on the next bar (and after a restart).

Quantities and prices are exact ``Decimal`` here. An order is a market, limit or stop(-market) order
(``OrderRequest``), good till cancelled or for the day. A broker provides a ``Venue``: its calls (place, find by
client id, cancel) through its own client, with its conversions, and which of its errors are transient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, Literal, Protocol, TypeVar

from pipeline.domain.orders import TimeInForce
from pipeline.domain.trading import OrderType, Side
from pipeline.retry import RetriesExhausted, RetryPolicy, describe

log = logging.getLogger(__name__)


class VenueUnavailable(RuntimeError):
    """The venue could not be asked (network, timeout, rate limit or outage after every retry)."""

O = TypeVar("O")  # noqa: E741 - the venue's order object
O_co = TypeVar("O_co", covariant=True)
Outcome = Literal["placed", "rejected", "unknown"]


@dataclass(frozen=True)
class OrderRequest:
    """An order as the broker decided it: ``qty`` units (positive, exact) on ``side``, of ``kind``: a market
    order, a limit order at ``price`` or better, or a stop(-market) order triggered at ``stop_price``; ``tif``
    ``gtc`` (good till cancelled) or ``day``.

    A limit order needs a positive ``price`` and no ``stop_price``, a stop order a positive ``stop_price`` and no
    ``price``, a market order neither; ``ValueError`` names the order and what is wrong.
    """

    client_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal | None = None
    kind: OrderType = OrderType.MARKET
    stop_price: Decimal | None = None
    tif: TimeInForce = "gtc"

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError(f"order {self.client_id}: quantity {self.qty} is not valid: it must be positive")
        try:
            object.__setattr__(self, "kind", OrderType(self.kind))
        except ValueError:
            raise ValueError(f"order {self.client_id}: kind {self.kind!r} is not one of market, limit, stop") from None
        if self.tif not in ("gtc", "day"):
            raise ValueError(f"order {self.client_id}: time in force {self.tif!r} is not gtc or day")
        wants = {"price": self.kind == OrderType.LIMIT, "stop_price": self.kind == OrderType.STOP}
        for name, needed in wants.items():
            value = getattr(self, name)
            if needed and (value is None or not value.is_finite() or value <= 0):
                raise ValueError(f"order {self.client_id}: a {self.kind} order needs a positive {name}, got {value}")
            if not needed and value is not None:
                raise ValueError(f"order {self.client_id}: a {self.kind} order takes no {name}, got {value}")


class OrderRejected(Exception):
    """The venue refused the order and placed nothing (``duplicate``: it already holds an order with its id;
    ``triggered``: a stop the market has already reached, which would have filled at once)."""

    def __init__(self, reason: str, *, duplicate: bool = False, triggered: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.duplicate = duplicate
        self.triggered = triggered


class Venue(Protocol[O_co]):
    """A venue's order calls, each one attempt (the submission retries them)."""

    name: str
    errors: tuple[type[BaseException], ...]
    """The venue client's own failures (any other error is a fault of the program and is raised as it is)."""

    def transient(self, exc: BaseException) -> bool:
        """Whether another attempt may succeed (network faults, timeouts, 429, 5xx)."""
        ...

    def place(self, order: OrderRequest) -> O_co:
        """Send ``order``; ``OrderRejected`` when the venue refuses it."""
        ...

    def find(self, client_id: str, symbol: str) -> O_co | None:
        """The venue's order with ``client_id``; None when the venue says it has none."""
        ...

    def cancel(self, venue_id: str, symbol: str) -> None:
        """Cancel an open order; returns quietly when it is no longer open (filled or gone meanwhile)."""
        ...


@dataclass(frozen=True)
class Submitted(Generic[O]):
    """What became of an order: ``placed`` (``order`` is the venue's), ``rejected`` or ``unknown`` (``reason``);
    ``triggered``: rejected as a stop the market has already reached."""

    outcome: Outcome
    order: O | None = None
    reason: str = ""
    triggered: bool = False


class Submission(Generic[O]):
    """Places, finds and cancels orders at ``venue`` by client order id, retried by ``retry``."""

    def __init__(self, venue: Venue[O], retry: RetryPolicy) -> None:
        self.venue = venue
        self.retry = retry

    def find(self, client_id: str, symbol: str) -> O | None:
        """The venue's order with ``client_id``, None when it has none; ``VenueUnavailable`` when the venue
        cannot be asked (so "unknown" is never taken for "absent")."""

        def unavailable(exc: BaseException, attempts: int) -> BaseException:
            return VenueUnavailable(f"{self.venue.name}: order {client_id} could not be looked up "
                                    f"({describe(exc)} after {attempts} attempts)")

        try:
            return self.retry.call(lambda: self.venue.find(client_id, symbol), what=f"{self.venue.name} look-up of "
                                   f"{client_id}", transient=self.venue.transient, give_up=unavailable)
        except self.venue.errors as exc:
            raise VenueUnavailable(f"{self.venue.name}: order {client_id} could not be looked up "
                                   f"({describe(exc)})") from exc

    def submit(self, order: OrderRequest) -> Submitted[O]:
        """Place ``order`` once: found if the venue already holds its id, looked up before any resend."""
        try:
            found = self.find(order.client_id, order.symbol)
        except VenueUnavailable as exc:
            return Submitted("unknown", reason=f"not sent: {exc}")
        if found is not None:
            return Submitted("placed", found)
        try:
            placed = self.retry.call(lambda: self._place_once(order), what=f"{self.venue.name} {order.side} "
                                     f"{order.qty} {order.symbol} ({order.client_id})", transient=self.venue.transient)
        except OrderRejected as exc:
            if not exc.duplicate:
                return Submitted("rejected", reason=exc.reason, triggered=exc.triggered)
            try:  # an earlier attempt arrived after all
                found = self.find(order.client_id, order.symbol)
            except VenueUnavailable as unavailable:
                return Submitted("unknown", reason=str(unavailable))
            return Submitted("placed", found) if found is not None else Submitted("rejected", reason=exc.reason)
        except RetriesExhausted as exc:
            return Submitted("unknown", reason=describe(exc.last))
        except self.venue.errors as exc:  # neither a refusal nor worth a resend now: its fate is unknown
            found = self._find_quietly(order)
            return Submitted("placed", found) if found is not None else Submitted("unknown", reason=describe(exc))
        return Submitted("placed", placed)

    def cancel(self, venue_id: str, symbol: str) -> str | None:
        """Cancel an open order: None once it is cancelled or no longer open, else why it could not be."""
        try:
            self.retry.call(lambda: self.venue.cancel(venue_id, symbol), what=f"{self.venue.name} cancel of "
                            f"{venue_id}", transient=self.venue.transient)
        except RetriesExhausted as exc:
            return describe(exc.last)
        except self.venue.errors as exc:
            return describe(exc)
        return None

    def _place_once(self, order: OrderRequest) -> O:
        """One placement; after a transient failure the order is looked up, and the failure stands (so the
        policy waits and sends it again) only when the venue says it has none."""
        try:
            return self.venue.place(order)
        except OrderRejected:
            raise
        except Exception as exc:
            if not self.venue.transient(exc):
                raise
            found = self._find_quietly(order)
            if found is None:
                raise
            log.info("%s: %s arrived although its answer did not (%s)", self.venue.name, order.client_id,
                     describe(exc))
            return found

    def _find_quietly(self, order: OrderRequest) -> O | None:
        try:
            return self.find(order.client_id, order.symbol)
        except VenueUnavailable:
            return None
