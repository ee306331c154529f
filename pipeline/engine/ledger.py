"""One strategy's sub-ledger: the kernel's state arrays and output buffers, with named access to them.

The compiled step (``pipeline.engine.kernel``) works on flat arrays laid out by ``pipeline.engine.layout``;
``Ledger`` owns them, grows the buffers, snapshots and restores them bit for bit, applies an operator's
commands (pause, resume, flatten, reset) and names the state (``units``, ``cash``, ``equity`` ...), so nothing
outside the engine reads a slot by number.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.engine import layout, working
from pipeline.engine.config import EngineConfig
from pipeline.engine.results import RULES, EngineResult, result_frames, stamps


class Ledger:
    """The kernel's state vectors and output buffers, grown on demand."""

    def __init__(self, config: EngineConfig, external: bool = False) -> None:
        self.config = config
        self.params = config.params()
        self.params[layout.P_EXTERNAL] = 1.0 if external else 0.0
        self.fstate, self.istate = layout.new_state()
        self.fstate[layout.F_CASH] = config.cash
        self.fstate[layout.F_EQUITY] = config.cash
        self.fills = np.zeros((64, layout.FILL_COLUMNS))
        self.trades = np.zeros((64, layout.TRADE_COLUMNS))
        self.events = np.zeros((32, layout.EVENT_COLUMNS))
        self.rejects = np.zeros((16, layout.REJECT_COLUMNS))
        self.intents = np.zeros((16, layout.INTENT_COLUMNS))
        self._limits: tuple[int, ...] = ()
        self._set_limits()

    def ensure_room(self) -> None:
        """Double any buffer with fewer than ``kernel.SPARE_ROWS`` free rows (cheap when there is room)."""
        st = self.istate
        if (
            st[layout.I_N_FILLS] <= self._limits[0]
            and st[layout.I_N_TRADES] <= self._limits[1]
            and st[layout.I_N_EVENTS] <= self._limits[2]
            and st[layout.I_N_REJECTS] <= self._limits[3]
            and st[layout.I_N_INTENTS] <= self._limits[4]
        ):
            return
        for name, count in (
            ("fills", layout.I_N_FILLS),
            ("trades", layout.I_N_TRADES),
            ("events", layout.I_N_EVENTS),
            ("rejects", layout.I_N_REJECTS),
            ("intents", layout.I_N_INTENTS),
        ):
            buffer: np.ndarray = getattr(self, name)
            if int(self.istate[count]) > buffer.shape[0] - 2 * layout.SPARE_ROWS:
                grown = np.zeros((buffer.shape[0] * 2, buffer.shape[1]))
                grown[: buffer.shape[0]] = buffer
                setattr(self, name, grown)
        self._set_limits()

    def _set_limits(self) -> None:
        self._limits = tuple(
            buffer.shape[0] - 2 * layout.SPARE_ROWS
            for buffer in (self.fills, self.trades, self.events, self.rejects, self.intents)
        )

    def snapshot(self) -> str:
        """The ledger's exact state as JSON (floats as hex, so a restore is bit for bit)."""
        return json.dumps(
            {"f": [float(x).hex() for x in self.fstate], "i": [int(x) for x in self.istate]}, separators=(",", ":")
        )

    def restore(self, snapshot: str, next_bar: int = 0) -> None:
        """Load a ``snapshot``; the output buffers start empty (what they held was already stored).

        A snapshot of the float state before order types is completed: its pending order is a market order and
        its position keeps the configured protections. A snapshot of the earlier, shorter int state (without
        release bookkeeping) is completed: the rules it has tripped count their cool-down from ``next_bar``.
        """
        data = json.loads(snapshot)
        fstate = np.array([float.fromhex(x) for x in data["f"]])
        istate = np.array(data["i"], dtype=np.int64)
        if fstate.shape == (layout.LEGACY_FSTATE_SLOTS,):  # before order types: a market order, no protections
            fresh_f, _ = layout.new_state()
            fresh_f[: layout.LEGACY_FSTATE_SLOTS] = fstate
            fstate = fresh_f
        if istate.shape == (layout.LEGACY_ISTATE_SLOTS,):
            _, fresh = layout.new_state()
            fresh[: layout.LEGACY_ISTATE_SLOTS] = istate
            for rule in RULES:
                fresh[layout.I_TRIP_BAR + rule] = next_bar
            istate = fresh
        if fstate.shape != self.fstate.shape or istate.shape != self.istate.shape:
            raise ValueError("ledger snapshot does not match this engine version's state layout")
        for counter in (layout.I_N_FILLS, layout.I_N_TRADES, layout.I_N_EVENTS, layout.I_N_REJECTS, layout.I_N_INTENTS):
            istate[counter] = 0
        self.fstate[:] = fstate
        self.istate[:] = istate

    def forget_aim(self) -> None:
        """The exposure aimed at was not reached (its order ended unfilled): any next decision acts."""
        self.fstate[layout.F_AIM] = np.nan

    def pause(self) -> None:
        """Block new entries until ``resume`` (exits, stops and take-profits still run)."""
        self.istate[layout.I_TRIPPED] |= 1 << layout.RULE_MANUAL_PAUSE

    def resume(self) -> None:
        self.istate[layout.I_TRIPPED] &= ~(1 << layout.RULE_MANUAL_PAUSE)

    def flatten(self, reason: int = layout.REASON_OPERATOR_FLATTEN) -> None:
        """Close the position at the next fill opportunity (the next bar's open, or this close)."""
        working.place_market(0.0, self.fstate)
        self.fstate[layout.F_AIM] = 0.0
        self.istate[layout.I_PENDING_REASON] = reason

    def reset_breakers(self) -> None:
        """Clear every tripped breaker (an operator's decision); a manual pause stays until resumed.

        The breakers are clear at once. At the next bar the reset is recorded (a release per rule it cleared)
        and the measures restart from the last close's equity: the equity peak, the day's opening equity and
        the consecutive-loss count (and the day's fill count when that rule was tripped).
        """
        pause = 1 << layout.RULE_MANUAL_PAUSE
        cleared = int(self.istate[layout.I_TRIPPED]) & ~pause & layout.ENGINE_RULES_MASK
        self.istate[layout.I_TRIPPED] &= pause
        self.istate[layout.I_RESET_PENDING] |= 1 | cleared

    @property
    def tripped(self) -> list[str]:
        mask = int(self.istate[layout.I_TRIPPED])
        return [name for rule, name in RULES.items() if mask & (1 << rule)]

    # ------------------------------------------------------------------ the state, by name
    @property
    def cash(self) -> float:
        return float(self.fstate[layout.F_CASH])

    @property
    def units(self) -> float:
        """The position in units (signed; negative is short)."""
        return float(self.fstate[layout.F_UNITS])

    @property
    def equity(self) -> float:
        """Cash plus the position marked at the last close."""
        return float(self.fstate[layout.F_EQUITY])

    @property
    def position_value(self) -> float:
        """The position marked at the last close (equity less cash)."""
        return self.equity - self.cash

    @property
    def entry_units(self) -> float:
        """Units bought (or sold short) into the open position so far."""
        return float(self.fstate[layout.F_ENTRY_UNITS])

    @property
    def entry_value(self) -> float:
        """Notional paid for ``entry_units`` (fees excluded)."""
        return float(self.fstate[layout.F_ENTRY_VALUE])

    @property
    def average_price(self) -> float:
        """The open position's average entry price; 0 when flat."""
        entry_units = self.entry_units
        return self.entry_value / entry_units if self.units and entry_units else 0.0

    @property
    def entry_bar(self) -> int:
        """The number of the bar at which the open (or last) position was entered."""
        return int(self.istate[layout.I_ENTRY_BAR])

    @property
    def inflight(self) -> float:
        """Units ordered from a venue and not filled yet (signed; external mode)."""
        return float(self.fstate[layout.F_INFLIGHT])

    @inflight.setter
    def inflight(self, value: float) -> None:
        self.fstate[layout.F_INFLIGHT] = value

    @property
    def consecutive_losses(self) -> int:
        """Closed trades lost in a row (the loss-streak breaker's measure)."""
        return int(self.istate[layout.I_CONSECUTIVE_LOSSES])

    @property
    def tripped_mask(self) -> int:
        """The tripped rules as bits (``1 << rule``), an operator's pause and the portfolio breaker included."""
        return int(self.istate[layout.I_TRIPPED])

    @property
    def portfolio_paused(self) -> bool:
        """Whether the portfolio breaker blocks this sleeve's entries (set and cleared by the portfolio)."""
        return bool(self.tripped_mask & (1 << layout.RULE_PORTFOLIO))

    @portfolio_paused.setter
    def portfolio_paused(self, value: bool) -> None:
        bit = 1 << layout.RULE_PORTFOLIO
        if value:
            self.istate[layout.I_TRIPPED] |= bit
        else:
            self.istate[layout.I_TRIPPED] &= ~bit

    def counts(self) -> tuple[int, int, int, int, int]:
        """Rows written so far to the fills, trades, events, rejections and intents buffers."""
        st = self.istate
        return (int(st[layout.I_N_FILLS]), int(st[layout.I_N_TRADES]), int(st[layout.I_N_EVENTS]),
                int(st[layout.I_N_REJECTS]), int(st[layout.I_N_INTENTS]))

    def forget_rows(self) -> None:
        """Empty the fills, trades, events and rejections buffers (their rows were handed over)."""
        for counter in (layout.I_N_FILLS, layout.I_N_TRADES, layout.I_N_EVENTS, layout.I_N_REJECTS):
            self.istate[counter] = 0

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
            self.fills[s_fills:int(self.istate[layout.I_N_FILLS])],
            self.trades[s_trades:int(self.istate[layout.I_N_TRADES])],
            self.events[s_events:int(self.istate[layout.I_N_EVENTS])],
            self.rejects[s_rejects:int(self.istate[layout.I_N_REJECTS])],
            stamp, reasons, marks, float(self.fstate[layout.F_UNITS]), float(self.fstate[layout.F_CASH]),
        )
