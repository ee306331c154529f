"""The trading node: startup is recovery, then closed bars → decisions → engine → broker → state, until stopped.

Startup: open the state store → restore every sleeve's ledger bit for bit (or start fresh, only when asked
with ``fresh``) → reconcile: the broker takes over the orders still open on record (their later fills are
booked exactly once) and the venue's holdings are compared with the ledgers (a venue holding less than the
ledgers pauses the sleeves of that symbol and raises an alert) → resume the feed after the last processed bar
(bars missed while down are caught up first) → trade. Every finding is recorded as a runtime event.

A live feed also yields empty batches while it waits for the next bar: the node then applies commands, writes
its heartbeat and judges staleness (only then: a feed still handing over bars it caught up on is not silent) —
a feed whose last bar closed more than ``stale_after_bars`` bars ago (while its market is open) pauses new
entries of its sleeves and raises an alert; its next bar lifts that pause again (a pause given by an operator
meanwhile stays).

Each batch of closed bars (one bar when live; up to a few thousand when replaying or catching up):

1. control commands from the store (pause, resume, flatten, reset_breaker, stop) are applied and acknowledged;
2. every sleeve's decision stream (``runtime.decisions``: strategy, and model score for an ML sleeve) advances
   by the batch's bars, in constant work per bar whatever the uptime;
3. the portfolio stepper advances every sleeve bar by bar through the engine core (``pipeline.engine``);
4. the broker turns the engine's fills into orders and fills on record;
5. everything the batch changed is written in ONE transaction: orders, fills (de-duplicated by fill id),
   positions, trades, ledgers (exact engine state), breaker events, equity marks, feed cursors, the decision
   streams' state, heartbeat.

A crash at any moment therefore loses at most the batch in flight, which is recomputed identically from the
last committed state on restart: no order or fill is lost or duplicated.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from pipeline.clock import Clock, SystemClock
from pipeline.engine import kernel as k
from pipeline.engine.results import EngineResult
from pipeline.portfolio import Bar, PortfolioConfig, PortfolioStepper, Sleeve, sleeves_of
from pipeline.state import (
    BreakerRecord,
    CursorRecord,
    EquityRecord,
    FillRecord,
    LedgerRecord,
    LedgerRow,
    OrderRecord,
    PositionRecord,
    StateStore,
    StepRecord,
    TradeRecord,
)
from runtime.brokers.base import Broker, open_on_record
from runtime.decisions import SleeveDecisions
from runtime.feeds import Batch, Feed
from runtime.models import ModelScorer

log = logging.getLogger(__name__)
PORTFOLIO = "portfolio"


class StartupError(RuntimeError):
    """The node cannot start safely; the message says why and what to do."""


@dataclass
class RunSummary:
    bars: int = 0
    orders: int = 0
    fills: int = 0
    duplicate_fills: int = 0
    trades: int = 0
    breaker_events: int = 0
    commands: int = 0
    final_equity: float = 0.0
    stopped_by: str = "end of data"
    recovery: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "bars": self.bars,
            "orders": self.orders,
            "fills": self.fills,
            "duplicate_fills": self.duplicate_fills,
            "trades": self.trades,
            "breaker_events": self.breaker_events,
            "commands": self.commands,
            "final_equity": self.final_equity,
            "stopped_by": self.stopped_by,
            "recovery": self.recovery,
        }


def _money(value: Any) -> Decimal:
    """A float from the engine's float64 ledger as the Decimal with the same shortest repr (exact round trip)."""
    return Decimal(repr(float(value)))


def _number(value: Any) -> float:
    return float(value)


def _when(value: Any) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """The rows of ``frame`` as named tuples (nothing to build for an empty frame, the usual case)."""
    return frame.itertuples(index=False) if len(frame) else iter(())


def _utc(ms: int) -> datetime:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").to_pydatetime()


class Node:
    """One runtime process: a portfolio of sleeves on a feed, a broker and a state store."""

    def __init__(
        self,
        store: StateStore,
        portfolio: PortfolioConfig,
        feed: Feed,
        feed_of: dict[str, str],
        broker: Broker,
        mode: str = "paper",
        clock: Clock | None = None,
        on_event: Callable[[str, str], None] | None = None,
        scorers: dict[str, ModelScorer] | None = None,
        stale_after_bars: int = 3,
        heartbeat_s: float = 5.0,
    ) -> None:
        self.store = store
        self.portfolio = portfolio
        self.feed = feed
        self.feed_of = feed_of
        self.broker = broker
        self.mode = mode
        self.clock = clock or SystemClock()
        self.on_event = on_event
        self.scorers = scorers or {}
        self.stepper = PortfolioStepper(portfolio, {s.key: self._reasons(s) for s in sleeves_of(portfolio)},
                                        external=broker.external_fills)
        self._routed_orders: list[OrderRecord] = []
        self._routed_fills: list[FillRecord] = []
        self.cursors: dict[str, int | None] = {key: None for key in set(feed_of.values())}
        self.summary = RunSummary()
        self._stop_requested: str | None = None
        self._portfolio_events_saved = 0
        self.stale_after_bars = stale_after_bars
        self.heartbeat_s = heartbeat_s
        self.stale: set[str] = set()
        """Feed keys judged stale (no bar for ``stale_after_bars`` bars while their market is open)."""
        self._stale_paused: set[str] = set()
        """Sleeves whose entries were paused because their feed went stale (lifted when bars return)."""
        self._last_beat = 0.0
        self.decisions = {s.key: SleeveDecisions(s.strategy, self.scorers.get(s.key)) for s in self.stepper.sleeves}
        self._saved_decisions: dict[str, Any] = {}
        self._recheck_holdings = False
        """A start-up found the venue holding less than the ledgers: compare again after the first batch."""

    # ------------------------------------------------------------------ startup
    def start(self, fresh: bool) -> list[str]:
        """Recover (or start fresh); returns what recovery found and did."""
        state = self.store.bot_state()
        ledgers = self.store.ledgers()
        if fresh and (state is not None or ledgers):
            raise StartupError(
                f"--fresh refused: the state store already holds a runtime's state ({self.store.engine.url!r}); "
                "restore it (the default), or point TRADEFORGE_DATABASE_URL / TRADEFORGE_DATA_DIR elsewhere"
            )
        if not fresh and state is None:
            raise StartupError(
                f"no saved runtime state in {self.store.engine.url!r}: start with --fresh for a new runtime"
            )
        notes: list[str] = []
        if not fresh:
            notes += self._restore(ledgers)
            notes += self._reconcile()
        for key in self.cursors:
            cursor = self.store.cursor(key)
            self.cursors[key] = None if cursor is None else int(pd.Timestamp(cursor).value // 1_000_000)
        resumed = [f"{k} after {pd.Timestamp(v, unit='ms', tz='UTC')}" for k, v in self.cursors.items() if v]
        notes += [f"feed {text}" for text in resumed] or ["feeds from their first bar"]
        self._poll_models()
        notes += self._restore_decisions()
        missing = [s.model_name for s in self.scorers.values() if s.model is None]
        reason = "started" if fresh else "restored"
        if missing:
            reason += f"; no production model for {', '.join(missing)}: those sleeves make no entries"
        self.store.set_status("running", reason, mode=self.mode)
        self.summary.recovery = notes
        for note in notes:
            self.store.record_event("recovery", note)
        self._emit("start", f"runtime started in {self.mode} mode ({'fresh' if fresh else 'restored'})")
        return notes

    def _restore(self, ledgers: dict[str, LedgerRow]) -> list[str]:
        notes: list[str] = []
        positions = {(p.sleeve, p.symbol): p for p in self.store.positions()}
        for sleeve in self.stepper.sleeves:
            row = ledgers.get(sleeve.key)
            if row is None:
                notes.append(f"{sleeve.key}: no saved ledger, starts with its allocation")
                continue
            engine = self.stepper.engines[sleeve.key]
            engine.restore(row.kernel_state)
            self.stepper.restore_sleeve(sleeve.key)
            units = float(engine.ledger.fstate[k.F_UNITS])
            cash = float(engine.ledger.fstate[k.F_CASH])
            stored = positions.get((sleeve.key, sleeve.symbol))
            stored_units = float(stored.qty) if stored is not None else 0.0
            if abs(stored_units - units) > 1e-9 * max(1.0, abs(units)):
                notes.append(f"{sleeve.key}: position on record {stored_units} differs from the ledger {units}; "
                             "the ledger's (committed with it) is kept and the record corrected")
            tripped = engine.ledger.tripped
            notes.append(f"{sleeve.key}: restored, units {units:g}, cash {cash:,.2f}"
                         + (f", breakers still latched: {', '.join(tripped)}" if tripped else ""))
        saved = ledgers.get(PORTFOLIO)
        if saved is not None:
            data = json.loads(saved.kernel_state)
            self.stepper.peak = float.fromhex(data["peak"])
            self.stepper.tripped = bool(data["tripped"])
            self._portfolio_events_saved = len(self.stepper.events)
            self.stale = set(data.get("stale", []))
            self._stale_paused = set(data.get("stale_paused", []))
            self._saved_decisions = dict(data.get("decisions", {}))
        return notes

    def _restore_decisions(self) -> list[str]:
        """Continue every sleeve's decision stream from its saved state (after the models are loaded)."""
        notes = []
        for key, decisions in self.decisions.items():
            saved = self._saved_decisions.get(key)
            if saved is not None:
                notes.append(f"{key}: {decisions.restore(saved)}")
            elif self._saved_decisions or self.store.ledgers():
                notes.append(f"{key}: no saved decision state; decisions rebuilt from the first bar the feed holds")
        return notes

    def _reconcile(self) -> list[str]:
        """Hand the orders still open on record to the broker, then compare the venue's holdings with the
        ledgers (``_compare_holdings``)."""
        notes: list[str] = []
        open_orders = self.store.orders({"new", "partially_filled"})
        if open_orders:
            self.broker.resume(open_orders, self.store.fills())
            notes.append(f"{len(open_orders)} open order(s) taken over from the store: "
                         + ", ".join(o.client_order_id for o in open_orders))
        return notes + self._compare_holdings(final=False)

    def _compare_holdings(self, final: bool) -> list[str]:
        """The venue's holdings against the ledgers, beyond what open orders on record may still fill.

        Holding more is noted (units the runtime does not trade). Holding less pauses the sleeves of that symbol
        and raises an alert, but at start-up (``final`` False) only once the first batch is re-run: a runtime
        killed after the venue filled an order and before the batch was committed finds that fill when it sends
        the same client order id again, so the venue legitimately holds what the ledgers will hold then."""
        symbols = sorted({s.symbol for s in self.stepper.sleeves})
        try:
            held = self.broker.holdings(symbols)
        except Exception as exc:  # a venue that cannot be asked must not stop the start
            text = f"positions not reconciled: {self.broker.name} could not be asked ({type(exc).__name__}: {exc})"
            self._emit("error", text)
            return [text]
        if held is None:
            return []
        notes: list[str] = []
        open_orders = self.store.orders({"new", "partially_filled"})
        pending = open_on_record(open_orders, self.store.fills()) if open_orders else []
        for symbol in symbols:
            sleeves = [s for s in self.stepper.sleeves if s.symbol == symbol]
            ours = sum(float(self.stepper.engines[s.key].ledger.fstate[k.F_UNITS]) for s in sleeves)
            rests = [float(o.signed_qty) - (float(o.filled) if o.order.side == "buy" else -float(o.filled))
                     for o in pending if o.order.symbol == symbol]  # what open orders may still fill
            venue = float(held.get(symbol, 0))
            tolerance = 1e-9 * max(1.0, abs(ours))
            low = ours + sum(r for r in rests if r < 0)
            high = ours + sum(r for r in rests if r > 0)
            if low - tolerance <= venue <= high + tolerance:
                notes.append(f"{symbol}: venue holds {venue:g}, the ledgers {ours:g}: reconciled")
            elif venue > high:
                notes.append(f"{symbol}: venue holds {venue:g}, more than the ledgers' {ours:g}; the difference "
                             "is not the runtime's and is left alone")
            elif not final:
                self._recheck_holdings = True
                notes.append(f"{symbol}: venue holds {venue:g}, less than the ledgers' {ours:g}; checked again "
                             "once the batch in flight at the stop is re-run (its orders are recovered by client id)")
            else:
                text = (f"{symbol}: venue holds {venue:g} but the ledgers hold {ours:g}: new entries of "
                        f"{', '.join(s.key for s in sleeves)} paused until an operator resumes them")
                for sleeve in sleeves:
                    self.stepper.engines[sleeve.key].ledger.pause()
                self._emit("error", text)
                notes.append(text)
        return notes

    # ------------------------------------------------------------------ the loop
    def request_stop(self, reason: str) -> None:
        """Stop after the batch in flight (safe to call from a signal handler or another thread)."""
        self._stop_requested = reason
        self.feed.stop()

    def run(self) -> RunSummary:
        """Process batches until the feed ends or a stop is requested (signal or command)."""
        gc.collect()
        gc.freeze()  # what start-up built lives as long as the process: later full collections skip it
        try:
            for batch in self.feed.batches(self.cursors):
                self._apply_commands()
                if self._stop_requested is not None:
                    break
                if len(batch.times):
                    self._process(batch)
                else:  # the feed has delivered all it has: only now can its silence be judged
                    self._idle()
                    self._judge_staleness()
                if self._stop_requested is not None:
                    break
        finally:
            reason = self._stop_requested or "end of data"
            self.summary.stopped_by = reason
            self.summary.final_equity = self.stepper.equity
            self.store.set_status("stopped", reason, mode=self.mode)
            self._emit("stop", f"runtime stopped: {reason}")
        return self.summary

    def _reasons(self, sleeve: Sleeve) -> tuple[str, ...]:
        """The strategy's reason texts (from a run on no bars, with every column it reads present)."""
        empty = self.feed.history(self.feed_of[sleeve.key], -1)
        empty = empty.assign(**{column: np.nan for column in sleeve.strategy.requires if column not in empty})
        return sleeve.strategy.targets(empty).reasons

    def _poll_models(self) -> None:
        """Swap to the version carrying the production alias, at this bar boundary, and record it."""
        for sleeve_key, scorer in self.scorers.items():
            switch = scorer.poll()
            if switch is None:
                continue
            if switch.version is not None and switch.run_id is not None:
                self.store.record_deployment(sleeve_key, switch.model_name, switch.version, switch.run_id,
                                             switch.reason, activated_at=self.clock.now().to_pydatetime())
            self._emit("model", f"{sleeve_key}: model {switch.model_name} "
                                f"{'v' + switch.version if switch.version else '(none)'}: {switch.reason}")

    def _process(self, batch: Batch) -> None:
        self._poll_models()
        decisions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        ohlc: dict[str, tuple[np.ndarray, ...]] = {}
        for sleeve in self.stepper.sleeves:
            key = self.feed_of[sleeve.key]
            rows = batch.rows[key]
            if not (rows >= 0).any():
                continue
            frame = self.feed.frames[key]
            if key not in ohlc:
                ohlc[key] = tuple(frame[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))
            aims, reasons = self.decisions[sleeve.key].decide(frame, rows)
            decisions[sleeve.key] = (rows, aims, reasons)
        if self.broker.external_fills:
            self._step_bar_by_bar(batch, decisions, ohlc)
        else:
            self._step_batch(batch, decisions, ohlc)
        self.summary.bars += len(batch.times)
        for key, rows in batch.rows.items():
            present = batch.times[rows >= 0]
            if len(present):
                self.cursors[key] = int(present[-1])
                if key in self.stale:
                    self._fresh_again(key)
        self._persist(int(batch.times[-1]))
        self._last_beat = self.clock.now().timestamp()
        if self._recheck_holdings:
            self._recheck_holdings = False
            for note in self._compare_holdings(final=True):
                self.store.record_event("recovery", note)
            self._persist(None)  # a pause it set is committed before the next bar

    def _step_batch(self, batch: Batch, decisions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    ohlc: dict[str, tuple[np.ndarray, ...]]) -> None:
        """Every sleeve through the whole batch in one compiled call (the paper broker fills in the engine)."""
        sleeves = self.stepper.sleeves
        n, times = len(sleeves), len(batch.times)
        present = np.zeros((n, times), dtype=np.bool_)
        prices = np.full((4, n, times), np.nan)
        aims = np.full((n, times), np.nan)
        reasons = np.full((n, times), -1, dtype=np.int64)
        for s, sleeve in enumerate(sleeves):
            if sleeve.key not in decisions:
                continue
            rows, aim, reason = decisions[sleeve.key]
            here = rows >= 0
            present[s] = here
            for c, column in enumerate(ohlc[self.feed_of[sleeve.key]]):
                prices[c, s, here] = column[rows[here]]
            aims[s, here] = aim[here]
            reasons[s, here] = reason[here]
        due = present.any(axis=0)  # bar times at which no sleeve has a bar are not stepped
        if not due.all():
            present, prices, aims, reasons = present[:, due], prices[:, :, due], aims[:, due], reasons[:, due]
        self.stepper.run(batch.times[due], present, prices[0], prices[1], prices[2], prices[3], aims, reasons)

    def _step_bar_by_bar(self, batch: Batch, decisions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                         ohlc: dict[str, tuple[np.ndarray, ...]]) -> None:
        """One bar time at a time, the venue broker routing each sleeve's orders between bars."""
        for position, ms in enumerate(batch.times):
            due: dict[str, Bar] = {}
            for sleeve_key, (rows, aims, reasons) in decisions.items():
                row = int(rows[position])
                if row < 0:
                    continue
                o, h, low, c = ohlc[self.feed_of[sleeve_key]]
                due[sleeve_key] = Bar(float(o[row]), float(h[row]), float(low[row]), float(c[row]),
                                      float(aims[position]), int(reasons[position]))
            if not due:
                continue
            self.stepper.step(int(ms), due)
            for sleeve in self.stepper.sleeves:
                if sleeve.key in due:
                    orders, fills = self.broker.route(sleeve.key, sleeve.symbol, self.stepper.engines[sleeve.key],
                                                      int(ms))
                    self._routed_orders += orders
                    self._routed_fills += fills

    # ------------------------------------------------------------------ waiting and staleness
    def _idle(self) -> None:
        """Between bars: a heartbeat every ``heartbeat_s`` and the model poll."""
        now = self.clock.now()
        if now.timestamp() - self._last_beat >= self.heartbeat_s:
            self.store.heartbeat(now.to_pydatetime())
            self._last_beat = now.timestamp()
        self._poll_models()

    def _judge_staleness(self) -> None:
        """A live feed whose last bar closed more than ``stale_after_bars`` bars ago goes stale."""
        if not self.feed.live:
            return
        now_ms = int(self.clock.now().value // 1_000_000)
        bar_ms = self.feed.timeframe.seconds * 1000
        for key, cursor in self.cursors.items():
            if key in self.stale:
                continue
            frame = self.feed.frames.get(key)
            last = cursor
            if last is None and frame is not None and len(frame):
                last = int(frame["timestamp"].iloc[-1].value // 1_000_000)
            if last is None or not self.feed.expects_bar(key, now_ms):
                continue
            waited = now_ms - (last + bar_ms)
            if waited <= self.stale_after_bars * bar_ms:
                continue
            self.stale.add(key)
            paused = []
            for sleeve in self.stepper.sleeves:
                ledger = self.stepper.engines[sleeve.key].ledger
                if self.feed_of[sleeve.key] == key and "paused" not in ledger.tripped:
                    ledger.pause()
                    self._stale_paused.add(sleeve.key)
                    paused.append(sleeve.key)
            text = (f"stale data: {key} has had no closed bar for {waited / bar_ms:.1f} bars (last opened "
                    f"{pd.Timestamp(last, unit='ms', tz='UTC')}); new entries paused"
                    + (f" for {', '.join(paused)}" if paused else ""))
            self.store.record_event("stale", text, at=self.clock.now().to_pydatetime())
            self._persist(None)  # the stale pause must survive a crash before the next bar
            self._emit("stale", text)

    def _fresh_again(self, key: str) -> None:
        self.stale.discard(key)
        resumed = []
        for sleeve in self.stepper.sleeves:
            if self.feed_of[sleeve.key] == key and sleeve.key in self._stale_paused:
                self.stepper.engines[sleeve.key].ledger.resume()
                self._stale_paused.discard(sleeve.key)
                resumed.append(sleeve.key)
        text = f"{key} delivers bars again" + (f"; entries resumed for {', '.join(resumed)}" if resumed else "")
        self.store.record_event("fresh", text, at=self.clock.now().to_pydatetime())
        self._emit("fresh", text)

    def _persist(self, last_ms: int | None) -> None:
        orders: list[OrderRecord] = self._routed_orders
        fills: list[FillRecord] = self._routed_fills
        self._routed_orders, self._routed_fills = [], []
        trades: list[TradeRecord] = []
        events: list[BreakerRecord] = []
        ledgers: list[LedgerRecord] = []
        positions: list[PositionRecord] = []
        equity: list[EquityRecord] = []
        now = self.clock.now().to_pydatetime()
        for sleeve in self.stepper.sleeves:
            engine = self.stepper.engines[sleeve.key]
            result = engine.drain(last_mark_only=True)
            new_orders, new_fills = self.broker.settle(sleeve.key, sleeve.symbol, result.fills)
            orders += new_orders
            fills += new_fills
            scorer = self.scorers.get(sleeve.key)
            trades += self._trades(sleeve.key, sleeve.symbol, result, None if scorer is None else scorer.version)
            events += [BreakerRecord(sleeve=sleeve.key, at=_when(e.timestamp), rule=str(e.rule),
                                     value=_number(e.value), threshold=_number(e.threshold), action=str(e.action))
                       for e in _rows(result.breaker_events)]
            ledger = engine.ledger
            units = float(ledger.fstate[k.F_UNITS])
            entry_units = float(ledger.fstate[k.F_ENTRY_UNITS])
            average = float(ledger.fstate[k.F_ENTRY_VALUE]) / entry_units if units and entry_units else 0.0
            positions.append(PositionRecord(sleeve=sleeve.key, symbol=sleeve.symbol, qty=_money(units),
                                            avg_price=_money(average), updated_at=now))
            cash, total = float(ledger.fstate[k.F_CASH]), float(ledger.fstate[k.F_EQUITY])
            ledgers.append(LedgerRecord(sleeve=sleeve.key, cash=_money(cash), units=_money(units),
                                        equity=_money(total), tripped=",".join(ledger.tripped),
                                        kernel_state=engine.snapshot(), bars_seen=engine.bars_seen,
                                        updated_at=now))
            if len(result.equity):
                last = result.equity.iloc[-1]
                equity.append(EquityRecord(at=_when(last["timestamp"]), sleeve=sleeve.key,
                                           equity=_money(last["equity"]), cash=_money(last["cash"]),
                                           position_value=_money(last["position_value"])))
            self.summary.trades += len(result.trades)
            self.summary.breaker_events += len(result.breaker_events)
            for row in _rows(result.fills):
                self._emit("fill", f"{sleeve.key}: {row.side} {row.qty:.8g} @ {row.price:.8g} ({row.reason})")
            for row in _rows(result.breaker_events):
                self._emit("breaker", f"{sleeve.key}: breaker {row.rule} "
                           + (f"tripped ({row.value:.4g} > {row.threshold:.4g})" if row.action == "trip" else
                              f"released ({row.released_by}, after {row.bars_tripped} bars)"))
        for event in self.stepper.events[self._portfolio_events_saved:]:
            events.append(BreakerRecord(sleeve=PORTFOLIO, at=_when(event["timestamp"]),
                                        rule=str(event["rule"]), value=_number(event["value"]),
                                        threshold=_number(event["threshold"]), action=str(event["action"])))
            self._emit("breaker", f"portfolio breaker {event['rule']} tripped" if event["action"] == "trip" else
                       f"portfolio breaker {event['rule']} released ({event['released_by']}, "
                       f"after {event['bars_tripped']} bars)")
        self._portfolio_events_saved = len(self.stepper.events)
        ledgers.append(LedgerRecord(sleeve=PORTFOLIO, cash=_money(0.0), units=_money(0.0),
                                    equity=_money(self.stepper.equity), tripped="drawdown" if self.stepper.tripped
                                    else "", kernel_state=json.dumps({"peak": float(self.stepper.peak).hex(),
                                                                      "tripped": self.stepper.tripped,
                                                                      "stale": sorted(self.stale),
                                                                      "stale_paused": sorted(self._stale_paused),
                                                                      "decisions": {
                                                                          key: d.state() for key, d
                                                                          in self.decisions.items()}}),
                                    bars_seen=self.summary.bars, updated_at=now))
        if last_ms is not None:
            equity.append(EquityRecord(at=_utc(last_ms), sleeve=PORTFOLIO, equity=_money(self.stepper.equity),
                                       cash=_money(self.stepper.cash),
                                       position_value=_money(self.stepper.position_value)))
        cursors = [CursorRecord(feed=key, last_bar=_utc(ms)) for key, ms in self.cursors.items() if ms is not None]
        step = StepRecord(orders=orders, fills=fills, positions=positions, trades=trades, ledgers=ledgers,
                          breakers=events, equity=equity, cursors=cursors, heartbeat_at=now)
        outcome = self.store.apply_step(step)
        self.summary.orders += len(orders)
        self.summary.fills += outcome.new_fills
        self.summary.duplicate_fills += outcome.duplicate_fills

    @staticmethod
    def _trades(sleeve: str, symbol: str, result: EngineResult, model_version: str | None) -> list[TradeRecord]:
        return [
            TradeRecord(sleeve=sleeve, symbol=symbol, side=str(t.side), qty=_money(t.qty),
                        entry_price=_money(t.entry_price), exit_price=_money(t.exit_price), pnl=_money(t.pnl),
                        fees=_money(t.fees), entry_time=_when(t.entry_time),
                        exit_time=_when(t.exit_time), entry_reason=str(t.entry_reason),
                        exit_reason=str(t.exit_reason), model_version=model_version)
            for t in _rows(result.trades)
        ]

    # ------------------------------------------------------------------ control
    def _apply_commands(self) -> None:
        for command in self.store.pending_commands():
            targets = [e for key, e in self.stepper.engines.items() if command.sleeve in (None, key)]
            if command.command == "pause":
                for engine in targets:
                    engine.ledger.pause()
                self._stale_paused -= {key for key in self.stepper.engines if command.sleeve in (None, key)}
                self.store.set_status("paused", f"paused by {command.source}", mode=self.mode)
                result = "paused: no new entries"
            elif command.command == "resume":
                for engine in targets:
                    engine.ledger.resume()
                self._stale_paused -= {key for key in self.stepper.engines if command.sleeve in (None, key)}
                self.store.set_status("running", f"resumed by {command.source}", mode=self.mode)
                result = "resumed"
            elif command.command == "flatten":
                for engine in targets:
                    engine.ledger.flatten()
                result = "flattening at the next fill"
            elif command.command == "reset_breaker":
                for engine in targets:
                    engine.ledger.reset_breakers()
                if command.sleeve is None:
                    self.stepper.tripped = False
                    self.stepper.peak = self.stepper.equity
                result = "breakers reset"
            else:
                self._stop_requested = f"stop command from {command.source}"
                result = "stopping"
            if command.id is not None:
                self.store.acknowledge(command.id, result, self.clock.now().to_pydatetime())
            self.summary.commands += 1
            self._emit("command", f"command {command.command} from {command.source}: {result}")

    # ------------------------------------------------------------------ helpers
    def _emit(self, kind: str, text: str) -> None:
        """Report an event: ``kind`` is start, stop, fill, breaker, command, model, stale, fresh or error."""
        log.info(text)
        if self.on_event is not None:
            self.on_event(kind, text)

