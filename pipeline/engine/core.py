"""One strategy's sub-ledger around the compiled kernel: the per-bar step API and the fast history driver.

``Engine.step`` (what the runtime calls once per closed bar) and ``run`` (what the backtest calls on a whole
history) drive the same compiled ``kernel.step`` on the same state, so they produce the same fills, trades and
equity; ``tests/pipeline/engine/test_engine.py`` checks it bar by bar on real data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pipeline.domain import epoch_ms
from pipeline.domain.orders import KIND_NAMES, MARKET, MARKET_ORDERS, OrderKind
from pipeline.engine import booking, kernel, layout, working
from pipeline.engine.config import EngineConfig
from pipeline.engine.ledger import Ledger
from pipeline.engine.marks import Marks
from pipeline.engine.results import ENGINE_REASONS, EngineResult

MS_PER_DAY = 86_400_000


def day_ids(timestamps: pd.Series, boundary_hour: int) -> np.ndarray:
    """The trading-day number of each bar: days start at ``boundary_hour`` UTC."""
    return np.asarray((epoch_ms(timestamps) - boundary_hour * 3_600_000) // MS_PER_DAY, dtype=np.int64)


def run(
    bars: pd.DataFrame,
    aims: np.ndarray,
    reason_codes: np.ndarray,
    reasons: tuple[str, ...],
    config: EngineConfig,
    sessions: np.ndarray | None = None,
    orders: np.ndarray | None = None,
) -> EngineResult:
    """Drive the kernel over a whole history (the backtest's fast path); ``orders`` is the strategy's order
    table (``pipeline.domain.orders``; None: market orders)."""
    n = len(bars)
    ledger = Ledger(config)
    days = day_ids(bars["timestamp"], config.day_boundary_hour)
    opens, highs, lows, closes = (np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64)) for c in
                                  ("open", "high", "low", "close"))
    in_session = np.ones(n, dtype=np.bool_) if sessions is None else np.ascontiguousarray(sessions, dtype=np.bool_)
    aims = np.ascontiguousarray(aims, dtype=np.float64)
    codes = np.ascontiguousarray(reason_codes, dtype=np.int64)
    table = MARKET_ORDERS if orders is None else np.ascontiguousarray(orders, dtype=np.float64)
    equity = np.empty(n)
    cash = np.empty(n)
    units = np.empty(n)
    paused = np.zeros(n, dtype=np.bool_)
    position = 0
    while position < n:
        position = kernel.run_range(
            position, n, days, opens, highs, lows, closes, in_session, aims, codes, table, ledger.params,
            ledger.fstate, ledger.istate, ledger.fills, ledger.trades, ledger.events, ledger.rejects,
            ledger.intents, equity, cash, units, paused,
        )
        ledger.ensure_room()
    return ledger.frames(epoch_ms(bars["timestamp"]), reasons, equity, cash, units, closes, paused)


@dataclass(frozen=True)
class Intent:
    """An order the engine wants sent to a venue now: ``qty`` signed units of a ``kind`` order
    (``pipeline.domain.orders``: ``market``, ``limit`` at ``price`` or better, ``stop`` triggered at ``price``),
    working until it fills, the strategy decides again, or ``expires_ms`` (epoch ms; None: good till
    cancelled)."""

    number: int
    bar: int
    qty: float
    reference_price: float
    reason: str
    kind: OrderKind = "market"
    price: float | None = None
    expires_ms: int | None = None

    def resized(self, qty: float) -> Intent:
        return replace(self, qty=qty)


@dataclass(frozen=True)
class ProtectiveStop:
    """The stop that must rest at the venue while a position is held: sell (or buy back) ``qty`` signed units
    when the market trades at ``price``; ``reason`` is ``stop_loss`` or ``trailing_stop``."""

    qty: float
    price: float
    reason: str


class Engine:
    """One strategy's sub-ledger advanced one closed bar at a time (the runtime's entry point).

    With ``external=True`` the engine does not simulate fills: its orders are ``Intent`` s for a venue
    (``take_intents``), and the venue's fills are booked with ``apply_fill``; a rejected or cancelled rest is
    given back with ``release``.
    """

    def __init__(self, config: EngineConfig, reasons: tuple[str, ...], external: bool = False,
                 bar_length_ms: int | None = None) -> None:
        self.ledger = Ledger(config, external)
        self.bar_length_ms = bar_length_ms
        """The length of the bars it steps (a venue's day order ends with the last bar that closes in its day)."""
        self._intents_taken = 0
        self.reasons = reasons
        self._marks = Marks()
        self._drained: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._drained_bars = 0
        self._offset = 0  # bars numbered before this process (a restored ledger continues the count)
        self._earlier: dict[int, int] = {}  # bar number -> open time (ms) of bars before the restore
        self._range: tuple[float, float] | None = None  # the last bar's low and high

    @property
    def bars_seen(self) -> int:
        return self._offset + len(self._marks)

    def _time_of(self, numbers: np.ndarray) -> np.ndarray:
        out = np.empty(len(numbers), dtype=np.int64)
        for i, number in enumerate(numbers):
            position = int(number) - self._offset
            out[i] = self._marks.time_at(position) if position >= 0 else self._earlier[int(number)]
        return out

    def snapshot(self) -> str:
        """The ledger's exact state plus the bar numbering, for a restart that continues seamlessly."""
        entry = self.ledger.entry_bar
        entry_ms = None
        if self.ledger.units != 0.0:
            entry_ms = int(self._time_of(np.array([entry], dtype=np.int64))[0])
        return json.dumps({"ledger": self.ledger.snapshot(), "bars_seen": self.bars_seen, "entry_bar": entry,
                           "entry_ms": entry_ms}, separators=(",", ":"))

    def restore(self, snapshot: str) -> None:
        """Continue from ``snapshot`` (see ``snapshot``); this engine must not have stepped yet."""
        if len(self._marks):
            raise ValueError("an engine can only be restored before its first step")
        data = json.loads(snapshot)
        self._offset = int(data["bars_seen"])
        self.ledger.restore(data["ledger"], next_bar=self._offset)
        self._drained_bars = 0
        if data["entry_ms"] is not None:
            self._earlier[int(data["entry_bar"])] = int(data["entry_ms"])

    def step(
        self,
        timestamp: pd.Timestamp | int,
        o: float,
        h: float,
        low: float,
        c: float,
        aim: float,
        reason: int,
        in_session: bool = True,
        order: np.ndarray | None = None,
    ) -> float:
        """Process one closed bar (``timestamp``: its open time, a Timestamp or epoch ms) and the strategy's
        decision at its close (executed as ``order``, a row of an order table; None: a market order); returns
        equity at the close."""
        ledger = self.ledger
        ledger.ensure_room()
        # an int is epoch milliseconds; Timestamp.value is in nanoseconds
        ms = timestamp if isinstance(timestamp, int) else int(pd.Timestamp(timestamp).value // 1_000_000)
        day = (ms - ledger.config.day_boundary_hour * 3_600_000) // MS_PER_DAY
        equity: float = kernel.step(
                self.bars_seen, day, float(o), float(h), float(low), float(c), bool(in_session), float(aim),
                int(reason), MARKET_ORDERS[0] if order is None else order, ledger.params, ledger.fstate,
                ledger.istate, ledger.fills, ledger.trades,
                ledger.events, ledger.rejects, ledger.intents,
        )
        self._marks.append(ms, equity, ledger.cash, ledger.units, float(c), ledger.tripped_mask != 0)
        self._range = (float(low), float(h))
        return equity

    def record(self, times: np.ndarray, equity: np.ndarray, cash: np.ndarray, units: np.ndarray, closes: np.ndarray,
               paused: np.ndarray) -> None:
        """Append the marks of bars stepped by a compiled driver (``portfolio_kernel``) in one call."""
        self._marks.extend(times, equity, cash, units, closes, paused)

    def take_intents(self) -> list[Intent]:
        """Orders the engine decided since the last call (external mode)."""
        count = self.ledger.counts()[4]
        rows = self.ledger.intents[self._intents_taken:count]
        intents = []
        boundary = self.ledger.config.day_boundary_hour * 3_600_000
        for offset, row in enumerate(rows):
            code = int(row[3])
            text = ENGINE_REASONS[code] if code < 0 else (self.reasons[code] if code < len(self.reasons) else "")
            kind = int(row[4])
            expires = None
            if not np.isnan(row[6]):  # a day order: its day is the one its first bar (after this one) is in
                opens = int(self._time_of(np.array([int(row[0])], dtype=np.int64))[0]) + (self.bar_length_ms or 0)
                expires = ((opens - boundary) // MS_PER_DAY + 1) * MS_PER_DAY + boundary
            intents.append(Intent(self._intents_taken + offset, int(row[0]), float(row[1]), float(row[2]), text,
                                  KIND_NAMES[kind], None if kind == MARKET else float(row[5]), expires))
        self._intents_taken = count
        return intents

    def crossed(self, stop: ProtectiveStop) -> bool:
        """Whether the last bar stepped reached ``stop`` (its low for a stop that sells, its high for one that
        buys back)."""
        if self._range is None:
            return False
        low, high = self._range
        return low <= stop.price if stop.qty < 0 else high >= stop.price

    def protective_stop(self) -> ProtectiveStop | None:
        """The stop the venue must hold for the open position (external mode), None when flat or unprotected.

        Its level is the position's stop-loss or, when higher (lower for a short), its trailing stop; it moves
        as the trailing stop follows the market, bar by bar.
        """
        units = self.ledger.units
        if units == 0.0:
            return None
        level, code = working.stop_level(self.ledger.params, self.ledger.fstate)
        if np.isnan(level):
            return None
        return ProtectiveStop(-units, float(level), ENGINE_REASONS[code])

    def apply_fill(self, qty: float, price: float, fee: float, reason: str, *, counted: bool = True) -> None:
        """Book a venue fill of ``qty`` signed units at ``price`` with ``fee`` (quote currency) in this bar;
        ``counted=False``: a fill of an order the engine never counted in flight (the venue's protective stop)."""
        self.ledger.ensure_room()
        code = self._reason_code(reason)
        inflight = self.ledger.inflight
        booking.apply_fill(self.bars_seen - 1, float(qty), float(price), float(fee), code, self.ledger.params,
                     self.ledger.fstate, self.ledger.istate, self.ledger.fills, self.ledger.trades,
                     self.ledger.events)
        if not counted:
            self.ledger.inflight = inflight

    def release(self, qty: float, *, unreached: bool = False) -> None:
        """Units ordered but never to be filled (refused, trimmed to the venue's precision, cancelled) stop
        counting as in flight. ``unreached``: the order ended at the venue unfilled (cancelled or expired there),
        so the exposure it aimed at is not taken as reached and the strategy's next decision for it is sent, as
        a day order that expires in a backtest."""
        inflight = self.ledger.inflight
        self.ledger.inflight = 0.0 if abs(qty) >= abs(inflight) else inflight - qty
        if unreached and qty != 0.0:
            self.ledger.forget_aim()

    def _reason_code(self, reason: str) -> int:
        for code, text in ENGINE_REASONS.items():
            if text == reason and code != layout.REASON_NONE:
                return code
        return self.reasons.index(reason) if reason in self.reasons else layout.REASON_NONE

    def drain(self, *, last_mark_only: bool = False) -> EngineResult:
        """What happened since the previous ``drain``: new fills, trades, events, rejections and bar marks
        (with ``last_mark_only``, the equity curve holds only the last bar's mark: what a runtime stores)."""
        fills, trades, events, rejects, _ = self.ledger.counts()
        counts = (fills, trades, events, rejects)
        first = max(self._drained_bars, len(self._marks) - 1) if last_mark_only else self._drained_bars
        marks = self._marks.since(first)
        result = self.ledger.frames(
            marks["times"], self.reasons, marks["equity"], marks["cash"], marks["units"], marks["closes"],
            marks["paused"], start=self._drained,
            time_of=self._time_of,
        )
        self._drained = counts
        self._drained_bars = len(self._marks)
        self._forget()
        return result

    def _forget(self) -> None:
        """Drop what ``drain`` handed over, so a runtime's memory does not grow with its uptime: the bar marks
        (keeping the times of the last bar and of the open position's entry) and the fill, trade, event and
        rejection rows. ``result``
        then covers only bars stepped after this drain."""
        kept = [self.bars_seen - 1] if self.bars_seen else []  # a venue's fill is booked in the last bar
        if self.ledger.units != 0.0:
            kept.append(self.ledger.entry_bar)
        # a bar of an earlier process (restored, not stepped since) has no time here unless it was kept then
        kept = [bar for bar in dict.fromkeys(kept) if bar >= self._offset or bar in self._earlier]
        numbers = np.array(kept, dtype=np.int64)
        self._earlier = dict(zip(kept, self._time_of(numbers).tolist(), strict=True))
        self._offset += len(self._marks)
        self._marks.clear()
        self._drained_bars = 0
        self.ledger.forget_rows()
        self._drained = (0, 0, 0, 0)

    def result(self) -> EngineResult:
        marks = self._marks.since(0)
        return self.ledger.frames(
            marks["times"], self.reasons, marks["equity"], marks["cash"], marks["units"], marks["closes"],
            marks["paused"],
            time_of=self._time_of,
        )
