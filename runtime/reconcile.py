"""Reconciliation of a trading node with its venue: at start-up and every ``reconcile_seconds`` on the node's clock.

A pass (``Reconciler.run``) first books what the venue filled of the orders the broker follows (``catch_up``:
the broker's own booking path, each fill once by its id), then reads the venue (``Broker.venue_view``: open
orders on the traded symbols, whoever placed them; each symbol's fills from the last one seen of it on, so a
symbol whose fills were read only in part, at the broker's page limit, goes on from there however far another
symbol's reading got; holdings; cash) and compares:

* **open orders**: one the runtime follows (on record as new or partly filled) is its own; one carrying this
  runtime's client id but not on record is, at start-up, an order of the batch in flight at the stop (found again
  when that batch is re-run), later a mismatch; any other is a **foreign order** (placed by hand): a mismatch.
* **fills**: a fill booked already (its fill id, or its order's cumulative quantity, is on record) is fine; one of
  an order the runtime follows and has not booked yet (at start-up, or for a sleeve without a bar since) is booked
  by the sleeve's next bar; one of an order of this runtime not on record is, at start-up, the batch in flight's;
  any other (a **foreign fill**, or a fill of an order on record as ended that was never booked) is a mismatch.
* **positions** (``judge_holdings``): the venue may hold more than the ledgers (units the runtime does not trade);
  less than the ledgers beyond what the open orders on record may still fill, and beyond the tolerance, is a
  mismatch (at start-up only once the batch in flight at the stop is re-run).
* **cash**, per quote currency: the venue's account may hold more than the sleeves' allocation, so the rule
  compares changes. The *gap* is the venue's cash less the sleeves' ledger cash less the cash effect of the
  runtime's fills not booked yet. The first pass of a process records the gap as the baseline (so cash moved while
  the runtime was down is not seen); each later pass compares the gap with the previous pass's, less the cash
  effect of the fills it reports as mismatches itself. A change beyond ``tolerance`` of the ledgers' cash (at least
  one unit of the currency) is cash moved outside the runtime (a deposit, a withdrawal, a fee it does not know, a
  trade on a symbol it does not trade): a mismatch. The new gap becomes the baseline, so one movement is reported
  once. A venue whose cash changed while it was read skips positions and cash for that pass; the cash effect of
  the fills that pass reported as mismatches is then left out of the next comparison of cash (a fill is reported
  once, not again as cash moved).

Of the state store a pass reads what can matter to it, never the whole history (``runtime.reconcile_records``).
Each new finding is a runtime event of kind ``reconcile`` with its numbers; every pass ends with an event of kind
``reconcile_verdict`` whose text starts with ``ok``, ``mismatch`` (the mismatches standing, with their numbers) or
``unavailable``. A new mismatch pauses new entries of the sleeves it concerns (those of the symbol; for cash, those
trading in that currency) until an operator resumes them, and raises an alert (``Node._emit("error", ...)``, which
goes to Telegram); one still standing at the next pass is not alerted or paused again. What a pass books or
pauses is committed at once (with the next batch while a sleeve restored at start-up has had no bar: an engine
books into its last bar). A venue that cannot be asked is an event (alerted once until it answers again), never a
crash: the next pass is due ``reconcile_seconds`` later. A paper runtime has no venue: nothing is reconciled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.domain import utc_from_ms
from pipeline.retry import describe
from runtime.brokers.base import OPEN_STATUSES, VenueFill, VenueView, is_ours, open_on_record, plain
from runtime.reconcile_records import OnRecord, fills_of_orders

if TYPE_CHECKING:
    from runtime.node import Node

log = logging.getLogger(__name__)

FINDING, VERDICT = "reconcile", "reconcile_verdict"
"""The runtime event kinds of a finding and of a pass's verdict (``pipeline.reports.trading`` reads them)."""
SETTLED_MS = 300_000
"""A fill shows at the venue within this long of its time (the node's clock keeps within a second of the venue's)."""
START, RECHECK, PERIODIC = "start", "recheck", "periodic"
"""A pass at start-up, after the first batch (when start-up deferred a judgement), and every ``every_s``."""


@dataclass(frozen=True)
class Finding:
    """Something a pass found: ``key`` names it across passes (it is recorded, alerted and acted on once while it
    stands); a ``mismatch`` pauses ``sleeves``."""

    key: str
    text: str
    sleeves: tuple[str, ...] = ()
    mismatch: bool = False


class Reconciler:
    """A node's reconciliation with its broker's venue (the module documentation gives the rules)."""

    def __init__(self, node: Node, every_s: float, tolerance: float) -> None:
        if not every_s > 0:
            raise ValueError(f"reconcile_seconds {every_s} is not valid: it must be positive")
        if not tolerance >= 0:
            raise ValueError(f"reconcile_tolerance {tolerance} is not valid: it must be 0 or more")
        self.node, self.every_s, self.tolerance = node, every_s, tolerance
        self.last_run: float | None = None
        """When the last pass ran (the node's clock, epoch seconds)."""
        self.since_ms: dict[str, int] = {}
        """Per symbol, its fills are read from this venue time on (epoch ms): the last one seen."""
        self.recheck = False
        """Start-up deferred a judgement to the first batch (the batch in flight at the stop is re-run first)."""
        self._judged: dict[str, tuple[str, int]] = {}  # fill id -> its symbol and venue time: fills judged already
        self._pending: dict[str, VenueFill] = {}  # fills of the runtime's orders not booked yet
        self._gaps: dict[str, Decimal] = {}  # per currency: venue cash less what the ledgers account for
        self._carried: dict[str, Decimal] = {}  # per currency: cash effect of fills reported while cash was moving
        self._standing: set[str] = set()  # keys of the findings of the last pass
        self._unreachable = False

    # ------------------------------------------------------------------ when
    def due(self, now: pd.Timestamp) -> bool:
        return self.last_run is None or now.timestamp() - self.last_run >= self.every_s

    def idle(self, now: pd.Timestamp) -> None:
        """Between bars, at ``now`` (the node's clock read once for the tick): a pass when one is due."""
        if self.due(now):
            self.run(PERIODIC, now)

    def after_batch(self) -> None:
        """After a committed batch: the deferred start-up judgement (its notes are recovery events too), else a
        pass when one is due."""
        now = self.node.clock.now()
        if self.recheck:
            self.recheck = False
            for note in self.run(RECHECK, now):
                self.node.store.record_event("recovery", note)
        elif self.due(now):
            self.run(PERIODIC, now)

    # ------------------------------------------------------------------ a pass
    def run(self, stage: str, now: pd.Timestamp | None = None) -> list[str]:
        """One pass at ``now`` (the node's clock by default); returns the positions' notes (what start-up
        recovery records)."""
        node = self.node
        now = node.clock.now() if now is None else now
        self.last_run = now.timestamp()
        symbols = sorted({s.symbol for s in node.stepper.sleeves})
        if not self.since_ms.keys() >= set(symbols):
            start = self._start_since(now)
            for symbol in symbols:
                self.since_ms.setdefault(symbol, start)
        booked = [] if stage == START else self._catch_up()
        records = OnRecord(node, utc_from_ms(min(self.since_ms.values(), default=_ms(now))))
        try:
            view = node.broker.venue_view(symbols, dict(self.since_ms), records.known())
        except Exception as exc:  # a venue that cannot be asked never stops the runtime
            log.warning("reconciliation: %s could not be asked", node.broker.name, exc_info=True)
            return self._unavailable(exc, now, stage)
        if view is None:
            return []
        self._unreachable = False
        findings = booked + self._orders(view, records.following(), stage)
        fills, explained = self._fills(view, records, stage)
        findings += fills
        notes: list[str] = []
        numbers: list[str] = []
        if view.steady:
            notes, held = judge_holdings(node, view.holdings, stage != START, self.tolerance)
            findings += held
            findings += self._cash(view, _plus(self._carried, explained), now, numbers)
            self._carried = {}
        else:  # the fills it reports are not compared with the cash now: their effect is left out next time
            self._carried = _plus(self._carried, explained)
            numbers.append("the venue's cash changed while it was read: positions and cash compared next time")
        numbers.append(f"{len(view.open_orders)} open order(s), {len(view.fills)} fill(s) read, "
                       f"{len(self._pending)} not booked yet")
        self._act(findings, notes, numbers, now)
        self._read_on(view, now)
        return notes

    def _read_on(self, view: VenueView, now: pd.Timestamp) -> None:
        """Each symbol's fills are read next from where this view read them to: a symbol read in part from its last
        fill read, one read to the end from its last fill or ``SETTLED_MS`` before now, whichever is later."""
        for symbol, since in self.since_ms.items():
            to = view.read_to_ms.get(symbol)
            if to is None:
                to = max([_ms(now) - SETTLED_MS, *(f.at_ms for f in view.fills if f.symbol == symbol)])
            self.since_ms[symbol] = max(since, to)
        self._judged = {k: (symbol, at) for k, (symbol, at) in self._judged.items()
                        if at >= self.since_ms.get(symbol, at)}

    def _start_since(self, now: pd.Timestamp) -> int:
        """Where the first pass reads fills from: the last commit before the stop, or the oldest order still open
        on record (a fresh runtime: now)."""
        state = self.node.store.bot_state()
        times = [o.created_at for o in self.node.store.orders(set(OPEN_STATUSES))]
        if state is not None and state.heartbeat_at is not None:
            times.append(state.heartbeat_at)
        return min(_ms(t) for t in times) if times else _ms(now)

    def _catch_up(self) -> list[Finding]:
        """Book what the venue filled of the followed orders since they were last looked at."""
        node, found, changed = self.node, [], False
        for sleeve in node.stepper.sleeves:
            orders, fills = node.broker.catch_up(sleeve.key, sleeve.symbol, node.stepper.engines[sleeve.key])
            node._routed_orders += orders
            node._routed_fills += fills
            changed = changed or bool(orders or fills)
            found += [Finding(f"booked:{f.fill_id}", f"{sleeve.key}: fill found at the venue between bars and booked: "
                              f"{f.side} {plain(f.qty)} {f.symbol} @ {plain(f.price)} fee {plain(f.fee)} (order "
                              f"{f.client_order_id}, fill {f.fill_id})") for f in fills]
        if changed:
            self._commit()  # before the venue is compared with the ledgers
        return found

    def _orders(self, view: VenueView, following: set[str], stage: str) -> list[Finding]:
        keys = [s.key for s in self.node.stepper.sleeves]
        found = []
        for order in view.open_orders:
            if order.client_id in following:
                continue
            ours = is_ours(order.client_id, keys)
            if ours and stage == START:
                self.recheck = True
                text = (f"{order.symbol}: open order of this runtime not on record, sent by the batch in flight at "
                        f"the stop (found again when it is re-run): {order.describe()}")
                found.append(Finding(f"in flight:{order.venue_id}", text))
                continue
            sleeves = self._sleeves_of(order.symbol)
            what = "of this runtime that it does not follow" if ours else "not placed by the runtime"
            text = (f"{order.symbol}: open order {what}: {order.describe()}; new entries of {', '.join(sleeves)} "
                    "paused")
            found.append(Finding(f"order:{order.venue_id}", text, sleeves, mismatch=True))
        return found

    def _fills(self, view: VenueView, records: OnRecord, stage: str) -> tuple[list[Finding], dict[str, Decimal]]:
        """The findings about the fills read and those still not booked; the cash effect per currency of the fills
        reported as mismatches (so the cash rule does not count them again)."""
        keys = [s.key for s in self.node.stepper.sleeves]
        candidates = {**self._pending, **{f.fill_id: f for f in view.fills if f.fill_id not in self._judged}}
        self._judged.update((f.fill_id, (f.symbol, f.at_ms)) for f in view.fills)
        if not candidates:
            return [], {}
        records.look_up(candidates.values())
        rows, booked = records.booked(candidates.values())  # booked fills (on record or routed), units per order
        pending: dict[str, VenueFill] = {}
        found: list[Finding] = []
        explained: dict[str, Decimal] = {}
        for fill_id, fill in candidates.items():
            order = records.order_of(fill)
            if fill_id in rows or (fill.order_filled is not None and order is not None
                                  and booked.get(order.client_order_id, Decimal(0)) >= fill.order_filled):
                continue
            text = fill.describe()  # a finding's key says what it found: a fill may be pending, then a mismatch
            if order is not None and order.status in OPEN_STATUSES:
                pending[fill_id] = fill
                found.append(Finding(f"unbooked:{fill_id}", f"{order.sleeve}: fill at the venue not booked yet, booked "
                                     f"when the sleeve's next bar follows order {order.client_order_id}: {text}"))
            elif order is None and is_ours(fill.client_id, keys) and stage == START:
                pending[fill_id] = fill
                self.recheck = True
                found.append(Finding(f"in flight:{fill_id}", f"{fill.symbol}: fill of an order of this runtime not on "
                                     "record, sent by the batch in flight at the stop (booked when it is re-run): "
                                     f"{text}"))
            else:
                sleeves = self._sleeves_of(fill.symbol)
                what = (f"of order {order.client_order_id} (on record as {order.status}) never booked" if order
                        else "of an order not placed by the runtime" if not is_ours(fill.client_id, keys)
                        else "of an order of this runtime never recorded")
                currency = view.currency_of.get(fill.symbol, "")
                explained[currency] = explained.get(currency, Decimal(0)) + fill.cash_effect
                found.append(Finding(f"fill:{fill_id}", f"{fill.symbol}: fill {what}: {text}; new entries of "
                                     f"{', '.join(sleeves)} paused", sleeves, mismatch=True))
        self._pending = pending
        return found, explained

    def _cash(self, view: VenueView, explained: Mapping[str, Decimal], now: pd.Timestamp,
              numbers: list[str]) -> list[Finding]:
        found = []
        for currency, venue in sorted(view.cash.items()):
            sleeves = [s.key for s in self.node.stepper.sleeves if view.currency_of.get(s.symbol) == currency]
            ledgers = Decimal(repr(float(sum(self.node.stepper.engines[k].ledger.cash for k in sleeves))))
            unbooked = sum((f.cash_effect for f in self._pending.values()
                            if view.currency_of.get(f.symbol) == currency), Decimal(0))
            gap = venue - ledgers - unbooked
            before = self._gaps.get(currency)
            self._gaps[currency] = gap
            change = Decimal(0) if before is None else gap - before - explained.get(currency, Decimal(0))
            limit = max(Decimal(repr(self.tolerance)) * abs(ledgers), Decimal(1))
            numbers.append(f"{currency}: venue {venue:,.2f}, ledgers {ledgers:,.2f}"
                           + (f", unbooked fills {unbooked:+,.2f}" if unbooked else "")
                           + ("" if before is None else f", change outside the runtime {change:+,.2f}"))
            if abs(change) > limit:
                found.append(Finding(f"cash:{currency}:{_ms(now)}", (
                    f"{currency}: cash changed outside the runtime by {change:+,.2f} since the last reconciliation "
                    f"(venue {venue:,.2f}, ledgers {ledgers:,.2f}, gap {before:,.2f} then {gap:,.2f}; tolerance "
                    f"{limit:,.2f}); new entries of {', '.join(sleeves)} paused"), tuple(sleeves), mismatch=True))
        return found

    # ------------------------------------------------------------------ acting
    def _act(self, findings: list[Finding], notes: list[str], numbers: list[str], now: pd.Timestamp) -> None:
        """Record the new findings, pause and alert for the new mismatches, record the verdict."""
        node, at = self.node, now.to_pydatetime()
        new = [f for f in findings if f.key not in self._standing]
        for finding in new:
            node.store.record_event(FINDING, finding.text, at=at)
        paused = False
        for finding in (f for f in new if f.mismatch):
            for key in finding.sleeves:
                node.stepper.engines[key].ledger.pause()
                paused = True
            node._emit("error", f"reconciliation: {finding.text}")
        self._standing = {f.key for f in findings}
        mismatches = [f.text for f in findings if f.mismatch]
        positions = [n for n in notes if n not in mismatches]
        summary = "; ".join([*positions, *numbers])
        verdict = (f"mismatch: {len(mismatches)} finding(s): {' | '.join(mismatches)}; compared: {summary}"
                   if mismatches else f"ok: {summary}")
        node.store.record_event(VERDICT, verdict, at=at)
        if paused:
            self._commit()  # the pause is committed before the next bar

    def _commit(self) -> None:
        """Commit what a pass changed (fills booked, pauses) now, when every sleeve has had a bar in this process
        (an engine restored at start-up is committed once it has stepped); else with the next batch."""
        node = self.node
        if all(s.key in node.stepped for s in node.stepper.sleeves):
            node._persist(None)
        else:
            log.info("reconciliation: its changes are committed with the next batch (a sleeve has had no bar yet)")

    def _unavailable(self, exc: Exception, now: pd.Timestamp, stage: str) -> list[str]:
        text = (f"positions not reconciled: {self.node.broker.name} could not be asked ({describe(exc)}); asked "
                f"again in {self.every_s:g} s")
        at = now.to_pydatetime()
        if not self._unreachable:
            self.node.store.record_event(FINDING, text, at=at)
            self.node._emit("error", text)
        self._unreachable = True
        self.node.store.record_event(VERDICT, f"unavailable: {text}", at=at)
        return [text] if stage == START else []

    def _sleeves_of(self, symbol: str) -> tuple[str, ...]:
        return tuple(s.key for s in self.node.stepper.sleeves if s.symbol == symbol)


def judge_holdings(node: Node, held: Mapping[str, Decimal], final: bool, tolerance: float
                   ) -> tuple[list[str], list[Finding]]:
    """The venue's holdings against the ledgers, beyond what open orders on record may still fill: a note per
    symbol, and a mismatch where the venue holds less (beyond ``tolerance`` of the ledgers' units).

    Holding more is noted (units the runtime does not trade). Holding less is a mismatch, but at start-up
    (``final`` False) only once the first batch is re-run: a runtime killed after the venue filled an order and
    before the batch was committed finds that fill when it sends the same client order id again, so the venue
    legitimately holds what the ledgers will hold then (``Reconciler.recheck``)."""
    symbols = sorted({s.symbol for s in node.stepper.sleeves})
    notes: list[str] = []
    found: list[Finding] = []
    open_orders = node.store.orders(set(OPEN_STATUSES))
    pending = (open_on_record(open_orders, fills_of_orders(node.store, {o.client_order_id for o in open_orders}))
               if open_orders else [])
    for symbol in symbols:
        sleeves = [s for s in node.stepper.sleeves if s.symbol == symbol]
        ours = sum(node.stepper.engines[s.key].ledger.units for s in sleeves)
        rests = [float(o.signed_qty) - (float(o.filled) if o.order.side == "buy" else -float(o.filled))
                 for o in pending if o.order.symbol == symbol]  # what open orders may still fill
        venue = float(held.get(symbol, 0))
        margin = max(tolerance * abs(ours), 1e-9 * max(1.0, abs(ours)))
        low = ours + sum(r for r in rests if r < 0)
        high = ours + sum(r for r in rests if r > 0)
        if low - margin <= venue <= high + margin:
            notes.append(f"{symbol}: venue holds {venue:g}, the ledgers {ours:g}: reconciled")
        elif venue > high:
            notes.append(f"{symbol}: venue holds {venue:g}, more than the ledgers' {ours:g}; the difference "
                         "is not the runtime's and is left alone")
        elif not final:
            node.reconciler.recheck = True
            notes.append(f"{symbol}: venue holds {venue:g}, less than the ledgers' {ours:g}; checked again "
                         "once the batch in flight at the stop is re-run (its orders are recovered by client id)")
        else:
            keys = tuple(s.key for s in sleeves)
            text = (f"{symbol}: venue holds {venue:g} but the ledgers hold {ours:g}: new entries of "
                    f"{', '.join(keys)} paused until an operator resumes them")
            found.append(Finding(f"holdings:{symbol}", text, keys, mismatch=True))
            notes.append(text)
    return notes, found


def compare_holdings(node: Node, final: bool) -> list[str]:
    """The venue's holdings (``Broker.holdings``) against the ledgers (``judge_holdings``), now: a holding short
    beyond tolerance pauses the sleeves of that symbol and raises an alert; returns the notes."""
    symbols = sorted({s.symbol for s in node.stepper.sleeves})
    try:
        held = node.broker.holdings(symbols)
    except Exception as exc:  # a venue that cannot be asked must not stop the runtime
        text = f"positions not reconciled: {node.broker.name} could not be asked ({type(exc).__name__}: {exc})"
        node._emit("error", text)
        return [text]
    if held is None:
        return []
    notes, found = judge_holdings(node, held, final, node.reconciler.tolerance)
    for finding in found:
        for key in finding.sleeves:
            node.stepper.engines[key].ledger.pause()
        node._emit("error", finding.text)
    return notes


def _plus(one: Mapping[str, Decimal], other: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Two amounts per currency added up."""
    return {c: one.get(c, Decimal(0)) + other.get(c, Decimal(0)) for c in {*one, *other}}


def _ms(at: object) -> int:
    return int(pd.Timestamp(at).value // 1_000_000)  # type: ignore[arg-type]


__all__ = ["FINDING", "VERDICT", "Finding", "Reconciler", "compare_holdings", "judge_holdings"]
