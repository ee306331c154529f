"""One strategy's sub-ledger around the compiled kernel: the per-bar step API and the fast history driver.

``Engine.step`` (what the runtime calls once per closed bar) and ``run`` (what the backtest calls on a whole
history) drive the same compiled ``kernel.step`` on the same state, so they produce the same fills, trades and
equity; ``tests/test_engine.py`` checks it bar by bar on real data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.domain import epoch_ms
from pipeline.engine import kernel as k
from pipeline.engine.config import EngineConfig
from pipeline.engine.marks import Marks
from pipeline.engine.results import (
    ENGINE_REASONS,
    RULES,
    EngineResult,
    result_frames,
    stamps,
)

MS_PER_DAY = 86_400_000


def day_ids(timestamps: pd.Series, boundary_hour: int) -> np.ndarray:
    """The trading-day number of each bar: days start at ``boundary_hour`` UTC."""
    return np.asarray((epoch_ms(timestamps) - boundary_hour * 3_600_000) // MS_PER_DAY, dtype=np.int64)


class Ledger:
    """The kernel's state vectors and output buffers, grown on demand."""

    def __init__(self, config: EngineConfig, external: bool = False) -> None:
        self.config = config
        self.params = config.params()
        self.params[k.P_EXTERNAL] = 1.0 if external else 0.0
        self.fstate, self.istate = k.new_state()
        self.fstate[k.F_CASH] = config.cash
        self.fstate[k.F_EQUITY] = config.cash
        self.fills = np.zeros((64, k.FILL_COLUMNS))
        self.trades = np.zeros((64, k.TRADE_COLUMNS))
        self.events = np.zeros((32, k.EVENT_COLUMNS))
        self.rejects = np.zeros((16, k.REJECT_COLUMNS))
        self.intents = np.zeros((16, k.INTENT_COLUMNS))
        self._limits: tuple[int, ...] = ()
        self._set_limits()

    def ensure_room(self) -> None:
        """Double any buffer with fewer than ``kernel.SPARE_ROWS`` free rows (cheap when there is room)."""
        st = self.istate
        if (
            st[k.I_N_FILLS] <= self._limits[0]
            and st[k.I_N_TRADES] <= self._limits[1]
            and st[k.I_N_EVENTS] <= self._limits[2]
            and st[k.I_N_REJECTS] <= self._limits[3]
            and st[k.I_N_INTENTS] <= self._limits[4]
        ):
            return
        for name, count in (
            ("fills", k.I_N_FILLS),
            ("trades", k.I_N_TRADES),
            ("events", k.I_N_EVENTS),
            ("rejects", k.I_N_REJECTS),
            ("intents", k.I_N_INTENTS),
        ):
            buffer: np.ndarray = getattr(self, name)
            if int(self.istate[count]) > buffer.shape[0] - 2 * k.SPARE_ROWS:
                grown = np.zeros((buffer.shape[0] * 2, buffer.shape[1]))
                grown[: buffer.shape[0]] = buffer
                setattr(self, name, grown)
        self._set_limits()

    def _set_limits(self) -> None:
        self._limits = tuple(
            buffer.shape[0] - 2 * k.SPARE_ROWS
            for buffer in (self.fills, self.trades, self.events, self.rejects, self.intents)
        )

    def snapshot(self) -> str:
        """The ledger's exact state as JSON (floats as hex, so a restore is bit for bit)."""
        return json.dumps(
            {"f": [float(x).hex() for x in self.fstate], "i": [int(x) for x in self.istate]}, separators=(",", ":")
        )

    def restore(self, snapshot: str, next_bar: int = 0) -> None:
        """Load a ``snapshot``; the output buffers start empty (what they held was already stored).

        A snapshot of the earlier, shorter state layout (without release bookkeeping) is completed: the rules
        it has tripped count their cool-down from ``next_bar``.
        """
        data = json.loads(snapshot)
        fstate = np.array([float.fromhex(x) for x in data["f"]])
        istate = np.array(data["i"], dtype=np.int64)
        if istate.shape == (k.I_RESET_PENDING,):
            _, fresh = k.new_state()
            fresh[: k.I_RESET_PENDING] = istate
            for rule in RULES:
                fresh[k.I_TRIP_BAR + rule] = next_bar
            istate = fresh
        if fstate.shape != self.fstate.shape or istate.shape != self.istate.shape:
            raise ValueError("ledger snapshot does not match this engine version's state layout")
        for counter in (k.I_N_FILLS, k.I_N_TRADES, k.I_N_EVENTS, k.I_N_REJECTS, k.I_N_INTENTS):
            istate[counter] = 0
        self.fstate[:] = fstate
        self.istate[:] = istate

    def pause(self) -> None:
        """Block new entries until ``resume`` (exits, stops and take-profits still run)."""
        self.istate[k.I_TRIPPED] |= 1 << k.RULE_MANUAL_PAUSE

    def resume(self) -> None:
        self.istate[k.I_TRIPPED] &= ~(1 << k.RULE_MANUAL_PAUSE)

    def flatten(self, reason: int = k.REASON_OPERATOR_FLATTEN) -> None:
        """Close the position at the next fill opportunity (the next bar's open, or this close)."""
        self.fstate[k.F_PENDING] = 0.0
        self.fstate[k.F_AIM] = 0.0
        self.istate[k.I_PENDING_REASON] = reason

    def reset_breakers(self) -> None:
        """Clear every tripped breaker (an operator's decision); a manual pause stays until resumed.

        The breakers are clear at once. At the next bar the reset is recorded (a release per rule it cleared)
        and the measures restart from the last close's equity: the equity peak, the day's opening equity and
        the consecutive-loss count (and the day's fill count when that rule was tripped).
        """
        pause = 1 << k.RULE_MANUAL_PAUSE
        cleared = int(self.istate[k.I_TRIPPED]) & ~pause & k.ENGINE_RULES_MASK
        self.istate[k.I_TRIPPED] &= pause
        self.istate[k.I_RESET_PENDING] |= 1 | cleared

    @property
    def tripped(self) -> list[str]:
        mask = int(self.istate[k.I_TRIPPED])
        return [name for rule, name in RULES.items() if mask & (1 << rule)]

    def frames(
        self,
        times: np.ndarray,
        reasons: tuple[str, ...],
        equity: np.ndarray,
        cash: np.ndarray,
        units: np.ndarray,
        closes: np.ndarray,
        paused: np.ndarray,
        start: tuple[int, int, int, int] = (0, 0, 0, 0),
        bar_start: int = 0,
        time_of: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> EngineResult:
        """Convert the buffers to frames; ``times`` are the bars' open times as int64 ms (all bars so far).

        ``start`` (fills, trades, events, rejections already taken) and ``bar_start`` (bars already taken;
        ``equity``, ``cash``, ``units``, ``closes`` and ``paused`` then cover only the later bars) select what
        is new.
        ``time_of`` maps bar numbers to open times (default: ``times[number]``).
        """
        s_fills, s_trades, s_events, s_rejects = start

        def stamp(index: np.ndarray) -> pd.Series:
            numbers = index.astype(np.int64)
            return stamps(times[numbers] if time_of is None else time_of(numbers))

        marks = {"times": times[bar_start:], "equity": equity, "cash": cash, "units": units, "closes": closes,
                 "paused": paused}
        return result_frames(
            self.fills[s_fills:int(self.istate[k.I_N_FILLS])],
            self.trades[s_trades:int(self.istate[k.I_N_TRADES])],
            self.events[s_events:int(self.istate[k.I_N_EVENTS])],
            self.rejects[s_rejects:int(self.istate[k.I_N_REJECTS])],
            stamp, reasons, marks, float(self.fstate[k.F_UNITS]), float(self.fstate[k.F_CASH]),
        )


def run(
    bars: pd.DataFrame,
    aims: np.ndarray,
    reason_codes: np.ndarray,
    reasons: tuple[str, ...],
    config: EngineConfig,
    sessions: np.ndarray | None = None,
) -> EngineResult:
    """Drive the kernel over a whole history (the backtest's fast path)."""
    n = len(bars)
    ledger = Ledger(config)
    days = day_ids(bars["timestamp"], config.day_boundary_hour)
    opens, highs, lows, closes = (np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64)) for c in
                                  ("open", "high", "low", "close"))
    in_session = np.ones(n, dtype=np.bool_) if sessions is None else np.ascontiguousarray(sessions, dtype=np.bool_)
    aims = np.ascontiguousarray(aims, dtype=np.float64)
    codes = np.ascontiguousarray(reason_codes, dtype=np.int64)
    equity = np.empty(n)
    cash = np.empty(n)
    units = np.empty(n)
    paused = np.zeros(n, dtype=np.bool_)
    position = 0
    while position < n:
        position = k.run_range(
            position, n, days, opens, highs, lows, closes, in_session, aims, codes, ledger.params,
            ledger.fstate, ledger.istate, ledger.fills, ledger.trades, ledger.events, ledger.rejects,
            ledger.intents, equity, cash, units, paused,
        )
        ledger.ensure_room()
    return ledger.frames(epoch_ms(bars["timestamp"]), reasons, equity, cash, units, closes, paused)


@dataclass(frozen=True)
class Intent:
    """An order the engine wants sent to a venue now: ``qty`` signed units, a market order."""

    number: int
    bar: int
    qty: float
    reference_price: float
    reason: str


class Engine:
    """One strategy's sub-ledger advanced one closed bar at a time (the runtime's entry point).

    With ``external=True`` the engine does not simulate fills: its orders are ``Intent`` s for a venue
    (``take_intents``), and the venue's fills are booked with ``apply_fill``; a rejected or cancelled rest is
    given back with ``release``.
    """

    def __init__(self, config: EngineConfig, reasons: tuple[str, ...], external: bool = False) -> None:
        self.ledger = Ledger(config, external)
        self._intents_taken = 0
        self.reasons = reasons
        self._marks = Marks()
        self._drained: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._drained_bars = 0
        self._offset = 0  # bars numbered before this process (a restored ledger continues the count)
        self._earlier: dict[int, int] = {}  # bar number -> open time (ms) of bars before the restore

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
        entry = int(self.ledger.istate[k.I_ENTRY_BAR])
        entry_ms = None
        if float(self.ledger.fstate[k.F_UNITS]) != 0.0:
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
    ) -> float:
        """Process one closed bar (``timestamp``: its open time, a Timestamp or epoch ms) and the strategy's
        decision at its close; returns equity at the close."""
        ledger = self.ledger
        ledger.ensure_room()
        # an int is epoch milliseconds; Timestamp.value is in nanoseconds
        ms = timestamp if isinstance(timestamp, int) else int(pd.Timestamp(timestamp).value // 1_000_000)
        day = (ms - ledger.config.day_boundary_hour * 3_600_000) // MS_PER_DAY
        equity: float = k.step(
                self.bars_seen, day, float(o), float(h), float(low), float(c), bool(in_session), float(aim),
                int(reason), ledger.params, ledger.fstate, ledger.istate, ledger.fills, ledger.trades,
                ledger.events, ledger.rejects, ledger.intents,
        )
        self._marks.append(ms, equity, float(ledger.fstate[k.F_CASH]), float(ledger.fstate[k.F_UNITS]), float(c),
                           bool(ledger.istate[k.I_TRIPPED] != 0))
        return equity

    def record(self, times: np.ndarray, equity: np.ndarray, cash: np.ndarray, units: np.ndarray, closes: np.ndarray,
               paused: np.ndarray) -> None:
        """Append the marks of bars stepped by a compiled driver (``portfolio_kernel``) in one call."""
        self._marks.extend(times, equity, cash, units, closes, paused)

    def take_intents(self) -> list[Intent]:
        """Orders the engine decided since the last call (external mode)."""
        count = int(self.ledger.istate[k.I_N_INTENTS])
        rows = self.ledger.intents[self._intents_taken:count]
        intents = []
        for offset, row in enumerate(rows):
            code = int(row[3])
            text = ENGINE_REASONS[code] if code < 0 else (self.reasons[code] if code < len(self.reasons) else "")
            intents.append(Intent(self._intents_taken + offset, int(row[0]), float(row[1]), float(row[2]), text))
        self._intents_taken = count
        return intents

    def apply_fill(self, qty: float, price: float, fee: float, reason: str) -> None:
        """Book a venue fill of ``qty`` signed units at ``price`` with ``fee`` (quote currency) in this bar."""
        self.ledger.ensure_room()
        code = self._reason_code(reason)
        k.apply_fill(self.bars_seen - 1, float(qty), float(price), float(fee), code, self.ledger.params,
                     self.ledger.fstate, self.ledger.istate, self.ledger.fills, self.ledger.trades,
                     self.ledger.events)

    def release(self, qty: float) -> None:
        """Units ordered but never to be filled (rejected or cancelled) stop counting as in flight."""
        inflight = float(self.ledger.fstate[k.F_INFLIGHT])
        self.ledger.fstate[k.F_INFLIGHT] = 0.0 if abs(qty) >= abs(inflight) else inflight - qty

    def _reason_code(self, reason: str) -> int:
        for code, text in ENGINE_REASONS.items():
            if text == reason and code != k.REASON_NONE:
                return code
        return self.reasons.index(reason) if reason in self.reasons else k.REASON_NONE

    def drain(self, *, last_mark_only: bool = False) -> EngineResult:
        """What happened since the previous ``drain``: new fills, trades, events, rejections and bar marks
        (with ``last_mark_only``, the equity curve holds only the last bar's mark: what a runtime stores)."""
        counts = (
            int(self.ledger.istate[k.I_N_FILLS]),
            int(self.ledger.istate[k.I_N_TRADES]),
            int(self.ledger.istate[k.I_N_EVENTS]),
            int(self.ledger.istate[k.I_N_REJECTS]),
        )
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
        if float(self.ledger.fstate[k.F_UNITS]) != 0.0:
            kept.append(int(self.ledger.istate[k.I_ENTRY_BAR]))
        numbers = np.array(kept, dtype=np.int64)
        self._earlier = dict(zip(kept, self._time_of(numbers).tolist(), strict=True))
        self._offset += len(self._marks)
        self._marks.clear()
        self._drained_bars = 0
        for counter in (k.I_N_FILLS, k.I_N_TRADES, k.I_N_EVENTS, k.I_N_REJECTS):
            self.ledger.istate[counter] = 0
        self._drained = (0, 0, 0, 0)

    def result(self) -> EngineResult:
        marks = self._marks.since(0)
        return self.ledger.frames(
            marks["times"], self.reasons, marks["equity"], marks["cash"], marks["units"], marks["closes"],
            marks["paused"],
            time_of=self._time_of,
        )
