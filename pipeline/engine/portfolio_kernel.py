"""The compiled portfolio step: every sleeve's ledger, the gross-exposure cap and the portfolio breaker.

``run_times`` advances a portfolio of sleeves (one kernel ledger each, ``pipeline.engine.kernel``) through bar
times ``start..end-1`` in one compiled call. At each time, in this order:

1. the portfolio breaker's release is applied (an operator's reset recorded, or the cool-down elapsed: the
   peak is re-based to the portfolio's equity);
2. with a gross-exposure cap, each sleeve's max-position fraction is lowered to the room the other sleeves
   leave (measured at the latest close);
3. every sleeve with a bar at that time advances by ``kernel.step``;
4. the portfolio is marked (equity, cash, position value, gross exposure), its peak raised, its drawdown
   checked against the breaker (a trip blocks every sleeve's entries, rule ``RULE_PORTFOLIO``).

It is the only implementation of the portfolio's rules: the backtest (``run_portfolio``) steps a whole history
in one call, the runtime a whole batch of closed bars (replay, catch-up) or one bar time when a venue must
answer between bars. Sums run over the sleeves in their order, starting from 0, so the marks are the same bits
whichever way the bars are batched.

The sleeves' ledger arrays come as tuples (one array per sleeve), which numba compiles, and caches on disk,
once per number of sleeves. The call stops early, returning the next time to step, when a sleeve's output
buffer runs low; the driver grows the buffers and calls again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.engine import kernel, layout

Arrays = tuple[np.ndarray, ...]
"""One array per sleeve."""

# portfolio float state
PF_PEAK = 0
N_PF = 1
# portfolio int state
PI_TRIPPED = 0
PI_TRIPPED_AT = 1
PI_RESET_PENDING = 2
PI_STEPS = 3
PI_N_EVENTS = 4
N_PI = 5
# portfolio caps
CAP_GROSS = 0
CAP_DRAWDOWN = 1
CAP_COOLDOWN = 2
CAP_RESERVE = 3
N_CAPS = 4
# portfolio events: time index, action (0 trip, 1 release), released by (0 none, 1 operator, 2 cool-down),
# value, bars tripped
PE_COLUMNS = 5
RELEASED_BY_OPERATOR = 1
RELEASED_BY_COOLDOWN = 2
# marks per time
M_EQUITY = 0
M_CASH = 1
M_VALUE = 2
M_GROSS = 3
M_PAUSED = 4
N_MARKS = 5


@njit(cache=True)
def _room(fills: Arrays, trades: Arrays, events: Arrays, rejects: Arrays, intents: Arrays, istates: Arrays,
          s: int) -> bool:  # pragma: no cover - compiled
    st = istates[s]
    spare = 2 * layout.SPARE_ROWS
    room: bool = (st[layout.I_N_FILLS] <= fills[s].shape[0] - spare
                  and st[layout.I_N_TRADES] <= trades[s].shape[0] - spare
                  and st[layout.I_N_EVENTS] <= events[s].shape[0] - spare
                  and st[layout.I_N_REJECTS] <= rejects[s].shape[0] - spare
                  and st[layout.I_N_INTENTS] <= intents[s].shape[0] - spare)
    return room


@njit(cache=True)
def _set_portfolio_rule(on: bool, istates: Arrays) -> None:  # pragma: no cover - compiled
    bit = np.int64(1) << layout.RULE_PORTFOLIO
    for s in range(len(istates)):
        if on:
            istates[s][layout.I_TRIPPED] |= bit
        else:
            istates[s][layout.I_TRIPPED] &= ~bit


@njit(cache=True)
def _event(t: int, action: int, released_by: int, value: float, bars: int, pi: np.ndarray,
           pevents: np.ndarray) -> None:  # pragma: no cover - compiled
    n = pi[PI_N_EVENTS]
    pevents[n, 0] = t
    pevents[n, 1] = action
    pevents[n, 2] = released_by
    pevents[n, 3] = value
    pevents[n, 4] = bars
    pi[PI_N_EVENTS] = n + 1


@njit(cache=True)
def run_times(start: int, end: int, present: np.ndarray, days: np.ndarray, opens: np.ndarray, highs: np.ndarray,
              lows: np.ndarray, closes: np.ndarray, aims: np.ndarray, reasons: np.ndarray, orders: np.ndarray,
              bar_index: np.ndarray,
              params: Arrays, fstates: Arrays, istates: Arrays, fills: Arrays, trades: Arrays, events: Arrays,
              rejects: Arrays, intents: Arrays, base_position: np.ndarray, caps: np.ndarray, pf: np.ndarray,
              pi: np.ndarray, pevents: np.ndarray, sleeve_equity: np.ndarray, sleeve_value: np.ndarray,
              out_equity: np.ndarray, out_cash: np.ndarray, out_units: np.ndarray, out_paused: np.ndarray,
              marks: np.ndarray) -> int:  # pragma: no cover - compiled
    """Step bar times ``start..end-1`` (arrays are (sleeves, times); ``present[s, t]``: sleeve s has a bar;
    ``orders`` is (sleeves, times or 1, order columns): each sleeve's order table)."""
    per_bar = orders.shape[1] > 1
    n_sleeves = present.shape[0]
    gross_cap = caps[CAP_GROSS]
    drawdown_cap = caps[CAP_DRAWDOWN]
    cooldown = caps[CAP_COOLDOWN]
    reserve = caps[CAP_RESERVE]
    for t in range(start, end):
        for s in range(n_sleeves):
            if not _room(fills, trades, events, rejects, intents, istates, s):
                return t
        if pi[PI_N_EVENTS] + 2 > pevents.shape[0]:
            return t
        # 1. releases of the portfolio breaker
        total = 0.0
        for s in range(n_sleeves):
            total += sleeve_equity[s]
        equity = total + reserve
        drawdown = 1.0 - equity / pf[PF_PEAK] if pf[PF_PEAK] > 0 else 0.0
        if pi[PI_RESET_PENDING] != 0:
            pi[PI_RESET_PENDING] = 0
            _event(t, 1, RELEASED_BY_OPERATOR, drawdown, pi[PI_STEPS] - pi[PI_TRIPPED_AT], pi, pevents)
            _set_portfolio_rule(False, istates)
        if pi[PI_TRIPPED] != 0 and cooldown > 0 and pi[PI_STEPS] - pi[PI_TRIPPED_AT] >= cooldown:
            pi[PI_TRIPPED] = 0
            _event(t, 1, RELEASED_BY_COOLDOWN, drawdown, pi[PI_STEPS] - pi[PI_TRIPPED_AT], pi, pevents)
            pf[PF_PEAK] = equity
            _set_portfolio_rule(False, istates)
        # 2. the gross-exposure cap
        if gross_cap > 0:
            gross = 0.0
            for s in range(n_sleeves):
                gross += abs(sleeve_value[s])
            for s in range(n_sleeves):
                room = gross_cap * total - (gross - abs(sleeve_value[s]))
                allowed = max(room, 0.0) / sleeve_equity[s] if sleeve_equity[s] > 0 else 0.0
                params[s][layout.P_MAX_POSITION] = min(base_position[s], allowed)
        # 3. the sleeves
        for s in range(n_sleeves):
            if not present[s, t]:
                continue
            fs = fstates[s]
            st = istates[s]
            sleeve_equity[s] = kernel.step(bar_index[s], days[s, t], opens[s, t], highs[s, t], lows[s, t], closes[s, t],
                                      True, aims[s, t], reasons[s, t], orders[s, t if per_bar else 0], params[s], fs,
                                      st, fills[s], trades[s],
                                      events[s], rejects[s], intents[s])
            bar_index[s] += 1
            sleeve_value[s] = fs[layout.F_UNITS] * closes[s, t]
            out_equity[s, t] = sleeve_equity[s]
            out_cash[s, t] = fs[layout.F_CASH]
            out_units[s, t] = fs[layout.F_UNITS]
            out_paused[s, t] = st[layout.I_TRIPPED] != 0
        # 4. the portfolio's marks and breaker
        total = 0.0
        cash = 0.0
        value = 0.0
        gross = 0.0
        paused = False
        for s in range(n_sleeves):
            total += sleeve_equity[s]
            cash += fstates[s][layout.F_CASH]
            value += sleeve_value[s]
            gross += abs(sleeve_value[s])
        equity = total + reserve
        marks[t, M_EQUITY] = equity
        marks[t, M_CASH] = cash + reserve
        marks[t, M_VALUE] = value
        marks[t, M_GROSS] = gross / equity if equity > 0 else 0.0
        pf[PF_PEAK] = max(pf[PF_PEAK], equity)
        if drawdown_cap > 0 and pi[PI_TRIPPED] == 0:
            drawdown = 1.0 - equity / pf[PF_PEAK]
            if drawdown > drawdown_cap:
                pi[PI_TRIPPED] = 1
                pi[PI_TRIPPED_AT] = pi[PI_STEPS]
                _event(t, 0, 0, drawdown, 0, pi, pevents)
                _set_portfolio_rule(True, istates)
        pi[PI_STEPS] += 1
        for s in range(n_sleeves):
            if istates[s][layout.I_TRIPPED] != 0:
                paused = True
        marks[t, M_PAUSED] = 1.0 if paused else 0.0
    return end
