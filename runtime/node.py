"""The trading node: startup is recovery, then closed bars → decisions → engine → broker → state, until stopped.

Startup: open the state store → restore every sleeve's ledger bit for bit (or start fresh, only when asked
with ``fresh``) → reconcile: the broker takes over the orders still open on record (their later fills are
booked exactly once) and the venue is reconciled with the ledgers (``runtime.reconcile``, again every
``reconcile_seconds`` on the node's clock) → resume the feed after the last processed bar (bars missed while down
are caught up first) → trade. Every finding is recorded as a runtime event.

A live feed also yields empty batches while it waits for the next bar: the node then applies commands, writes
its heartbeat and judges staleness (only then: a feed still handing over bars it caught up on is not silent) —
a feed whose last bar closed more than ``stale_after_bars`` bars ago (while its market is open) pauses new
entries of its sleeves and raises an alert; its next bar lifts that pause again (a pause given by an operator
meanwhile stays).

Each batch of closed bars (one bar when live; up to a few thousand when replaying or catching up):

1. control commands from the store (pause, resume, flatten, reset_breaker, stop) are applied and acknowledged;
2. every sleeve's decision stream (``runtime.decisions``: strategy, and model score for an ML sleeve) advances
   by the batch's bars, in constant work per bar whatever the uptime (the other series a strategy reads are
   feed keys of their own, ``series_keys``, with cursors and staleness like the sleeves' own);
3. the portfolio stepper advances every sleeve bar by bar through the engine core (``pipeline.engine``);
4. the broker turns the engine's fills into orders and fills on record;
5. everything the batch changed is written in ONE transaction: orders, fills (de-duplicated by fill id),
   positions, trades, ledgers (exact engine state), breaker events, equity marks, feed cursors, the decision
   streams' state, heartbeat.

A crash at any moment therefore loses at most the batch in flight, which is recomputed identically from the
last committed state on restart: no order or fill is lost or duplicated.

The start-up recovery lives in ``runtime.recovery``, the operator commands in ``runtime.commands`` and the
record committed after each batch in ``runtime.persist``; this module is the loop.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest.portfolio import Bar, PortfolioConfig, PortfolioStepper, Sleeve, sleeves_of
from pipeline.clock import Clock, SystemClock
from pipeline.domain import Timeframe
from pipeline.domain.orders import market_rows
from pipeline.domain.trading import Fill, Order
from pipeline.state import StateStore
from pipeline.strategies.other_series import empty_columns
from runtime.brokers.base import Broker
from runtime.commands import apply_commands
from runtime.decisions import Decided, SleeveDecisions
from runtime.feeds import Batch, Feed
from runtime.feeds.frames import key_timeframe
from runtime.models import ModelScorer
from runtime.persist import step_record
from runtime.reconcile import Reconciler
from runtime.recovery import PORTFOLIO, reconcile, restore, restore_decisions

log = logging.getLogger(__name__)
__all__ = ["PORTFOLIO", "Node", "RunSummary", "StartupError"]


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
        series_keys: dict[str, tuple[str, ...]] | None = None,
        reconcile_seconds: float = 60.0,
        reconcile_tolerance: float = 0.001,
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
        self._routed_orders: list[Order] = []
        self._routed_fills: list[Fill] = []
        self._own_keys = set(feed_of.values())
        self.series_keys = series_keys or {}
        """The feed keys of the other series each sleeve's strategy reads (``pipeline.strategies.other_series``)."""
        self.cursors: dict[str, int | None] = {
            key: None for key in set(feed_of.values()).union(*self.series_keys.values())}
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
        self.decisions = {s.key: SleeveDecisions(s.strategy, self.scorers.get(s.key), Timeframe.parse(s.spec.timeframe),
                                                 self.series_keys.get(s.key, ())) for s in self.stepper.sleeves}
        self._saved_decisions: dict[str, Any] = {}
        self.stepped: set[str] = set()  # sleeves stepped in this process: their engines can be committed
        self.reconciler = Reconciler(self, reconcile_seconds, reconcile_tolerance)

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
        notes = ([] if fresh else restore(self, ledgers)) + reconcile(self)
        for key in self.cursors:
            cursor = self.store.cursor(key)
            self.cursors[key] = None if cursor is None else int(pd.Timestamp(cursor).value // 1_000_000)
        resumed = [f"{k} after {pd.Timestamp(v, unit='ms', tz='UTC')}" for k, v in self.cursors.items() if v]
        notes += [f"feed {text}" for text in resumed] or ["feeds from their first bar"]
        self._poll_models()
        notes += restore_decisions(self)
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
                apply_commands(self)
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
            gc.unfreeze()  # the process ends: what start-up built is collected as usual (no leak reports at exit)
        return self.summary

    def _reasons(self, sleeve: Sleeve) -> tuple[str, ...]:
        """The strategy's reason texts (from a run on no bars, with every column it reads present)."""
        empty = self.feed.history(self.feed_of[sleeve.key], -1)
        empty = empty.assign(**{column: np.nan for column in sleeve.strategy.requires if column not in empty})
        return sleeve.strategy.targets(empty_columns(sleeve.strategy, empty)).reasons

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
        decisions: dict[str, Decided] = {}
        ohlc: dict[str, tuple[np.ndarray, ...]] = {}
        for sleeve in self.stepper.sleeves:
            key = self.feed_of[sleeve.key]
            rows = batch.rows[key]
            if not (rows >= 0).any():
                continue
            frame = self.feed.frames[key]
            if key not in ohlc:
                ohlc[key] = tuple(frame[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close"))
            decisions[sleeve.key] = self.decisions[sleeve.key].decide(frame, rows, self.feed.frames)
        self.stepped.update(decisions)
        if not decisions:  # only bars of other series: nothing to step
            pass
        elif self.broker.external_fills:
            self._step_bar_by_bar(batch, decisions, ohlc)
        else:
            self._step_batch(batch, decisions, ohlc)
        own = [rows >= 0 for key, rows in batch.rows.items() if key in self._own_keys]
        stepped = batch.times[np.logical_or.reduce(own)] if own else batch.times[:0]  # not other series' times
        self.summary.bars += len(stepped)
        for key, rows in batch.rows.items():
            present = batch.times[rows >= 0]
            if len(present):
                self.cursors[key] = int(present[-1])
                if key in self.stale:
                    self._fresh_again(key)
        self._persist(int(stepped[-1]) if len(stepped) else None)
        self._last_beat = self.clock.now().timestamp()
        self.reconciler.after_batch()

    def _step_batch(self, batch: Batch, decisions: dict[str, Decided], ohlc: dict[str, tuple[np.ndarray, ...]]) -> None:
        """Every sleeve through the whole batch in one compiled call (the paper broker fills in the engine)."""
        sleeves = self.stepper.sleeves
        n, times = len(sleeves), len(batch.times)
        present = np.zeros((n, times), dtype=np.bool_)
        prices = np.full((4, n, times), np.nan)
        aims = np.full((n, times), np.nan)
        reasons = np.full((n, times), -1, dtype=np.int64)
        ordered = any(d.orders is not None for d in decisions.values())
        orders = market_rows(n, times if ordered else 1)
        for s, sleeve in enumerate(sleeves):
            if sleeve.key not in decisions:
                continue
            decided = decisions[sleeve.key]
            here = decided.rows >= 0
            present[s] = here
            for c, column in enumerate(ohlc[self.feed_of[sleeve.key]]):
                prices[c, s, here] = column[decided.rows[here]]
            aims[s, here] = decided.exposure[here]
            reasons[s, here] = decided.reason[here]
            if decided.orders is not None:
                orders[s, here] = decided.orders[here]
        due = present.any(axis=0)  # bar times at which no sleeve has a bar are not stepped
        if not due.all():
            present, prices, aims, reasons = present[:, due], prices[:, :, due], aims[:, due], reasons[:, due]
            orders = orders[:, due] if ordered else orders
        self.stepper.run(batch.times[due], present, prices[0], prices[1], prices[2], prices[3], aims, reasons,
                         orders)

    def _step_bar_by_bar(self, batch: Batch, decisions: dict[str, Decided],
                         ohlc: dict[str, tuple[np.ndarray, ...]]) -> None:
        """One bar time at a time, the venue broker routing each sleeve's orders between bars."""
        for position, ms in enumerate(batch.times):
            due: dict[str, Bar] = {}
            for sleeve_key, decided in decisions.items():
                row = int(decided.rows[position])
                if row < 0:
                    continue
                o, h, low, c = ohlc[self.feed_of[sleeve_key]]
                due[sleeve_key] = Bar(float(o[row]), float(h[row]), float(low[row]), float(c[row]),
                                      float(decided.exposure[position]), int(decided.reason[position]),
                                      None if decided.orders is None else decided.orders[position])
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
        """Between bars: the reconciliation when due, a heartbeat every ``heartbeat_s`` and the model poll."""
        now = self.clock.now()
        self.reconciler.idle(now)
        if now.timestamp() - self._last_beat >= self.heartbeat_s:
            self.store.heartbeat(now.to_pydatetime())
            self._last_beat = now.timestamp()
        self._poll_models()

    def _judge_staleness(self) -> None:
        """A live feed whose last bar closed more than ``stale_after_bars`` bars ago goes stale."""
        if not self.feed.live:
            return
        now_ms = int(self.clock.now().value // 1_000_000)
        for key, cursor in self.cursors.items():
            if key in self.stale:
                continue
            bar_ms = key_timeframe(key, self.feed.timeframe).millis
            frame = self.feed.frames.get(key)
            last = cursor  # or the feed's last bar: a bar held back for another series is not silence
            if frame is not None and len(frame):
                last = max(last or 0, int(frame["timestamp"].iloc[-1].value // 1_000_000))
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
                    f"{pd.Timestamp(last, unit='ms', tz='UTC')}); "
                    + (f"new entries paused for {', '.join(paused)}" if paused else "new entries paused"
                       if key in self._own_keys else "another series read by strategies: their rows go on with it"))
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

    # ------------------------------------------------------------------ control
    def _persist(self, last_ms: int | None) -> None:
        """Commit everything since the last commit in one transaction (``runtime.persist``)."""
        record = step_record(self, last_ms)
        outcome = self.store.apply_step(record)
        self.summary.orders += len(record.orders)
        self.summary.fills += outcome.new_fills
        self.summary.duplicate_fills += outcome.duplicate_fills

    # ------------------------------------------------------------------ helpers
    def _emit(self, kind: str, text: str) -> None:
        """Report an event: ``kind`` is start, stop, fill, breaker, command, model, stale, fresh or error."""
        log.info(text)
        if self.on_event is not None:
            self.on_event(kind, text)

