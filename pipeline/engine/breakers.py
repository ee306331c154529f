"""The circuit breakers inside the compiled step: trips, releases and the events that record them.

``step`` (``pipeline.engine.kernel``) calls ``releases`` before anything else of a bar, and ``trip`` when a
limit is crossed. Breakers whose release is due are released first (so an order decided at the previous close
fills at this open when its breaker releases here):

* an operator's reset (``Ledger.reset_breakers``) clears the tripped rules at once; at the next step it is
  recorded (one release per rule it cleared), the equity peak and the day's opening equity are re-based to
  the last close's equity and the consecutive-loss count restarts;
* the **daily** rules (``daily_loss``, ``trades_per_day``) release at the first bar of the next trading day
  (``P_DAILY_RELEASE``); that bar's day starts afresh (opening equity = the last close's, fill count 0);
* the other rules (``max_drawdown``, ``consecutive_losses``, and the daily ones when they do not release
  daily) wait for an operator's reset. With a cool-down of ``N`` bars (``P_COOLDOWN``) a rule tripped at
  bar ``t`` releases at the start of bar ``t + N`` as an operator's reset would: a drawdown release re-bases
  the peak to the last close's equity, a loss-streak release restarts the count, a daily-loss release
  re-bases the day's opening equity and a trades-per-day release restarts the day's fill count;
* an operator's pause (``RULE_MANUAL_PAUSE``) and the portfolio breaker (``RULE_PORTFOLIO``, set and
  released by the portfolio stepper) are never released here.

Every trip and every release is a row of the ``events`` buffer (``bar, rule, value, threshold, action,
bars_tripped``). For a trip, ``value`` is the rule's measure and ``threshold`` its limit; for a release,
``value`` is the measure just before the release (the drawdown from the old peak, the day's loss or fill
count, the loss streak), ``action`` says what released it (``ACTION_RELEASE_*``) and ``bars_tripped`` how
many bars the rule had been tripped. A bar whose close leaves any rule tripped (an operator's pause included)
is a *paused* bar: the decision at that close cannot open or grow a position.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.engine.layout import (
    ACTION_RELEASE_COOLDOWN,
    ACTION_RELEASE_NEW_DAY,
    ACTION_RELEASE_OPERATOR,
    ACTION_TRIP,
    ENGINE_RULES_MASK,
    F_DAY_OPEN,
    F_EQUITY,
    F_PEAK,
    F_UNITS,
    I_CONSECUTIVE_LOSSES,
    I_FILLS_TODAY,
    I_N_EVENTS,
    I_PENDING_REASON,
    I_RESET_PENDING,
    I_TRIP_BAR,
    I_TRIPPED,
    P_COOLDOWN,
    P_DAILY_LOSS,
    P_DAILY_RELEASE,
    P_FLATTEN_ON_TRIP,
    P_MAX_CONSECUTIVE_LOSSES,
    P_MAX_DRAWDOWN,
    P_MAX_TRADES_PER_DAY,
    REASON_BREAKER_FLATTEN,
    RULE_CONSECUTIVE_LOSSES,
    RULE_DAILY_LOSS,
    RULE_DRAWDOWN,
    RULE_TRADES_PER_DAY,
)
from pipeline.engine.working import place_market


@njit(cache=True, inline="always")
def record_event(i: int, rule: int, value: float, threshold: float, action: int, bars: int, st: np.ndarray,
           events: np.ndarray) -> None:  # pragma: no cover - compiled
    k = st[I_N_EVENTS]
    events[k, 0] = i
    events[k, 1] = rule
    events[k, 2] = value
    events[k, 3] = threshold
    events[k, 4] = action
    events[k, 5] = bars
    st[I_N_EVENTS] = k + 1


@njit(cache=True, inline="always")
def trip(i: int, rule: int, value: float, threshold: float, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
          events: np.ndarray) -> None:  # pragma: no cover - compiled
    bit = 1 << rule
    if st[I_TRIPPED] & bit:
        return
    st[I_TRIPPED] |= bit
    st[I_TRIP_BAR + rule] = i
    record_event(i, rule, value, threshold, ACTION_TRIP, 0, st, events)
    if p[P_FLATTEN_ON_TRIP] > 0 and fs[F_UNITS] != 0.0:
        place_market(0.0, fs)
        st[I_PENDING_REASON] = REASON_BREAKER_FLATTEN


@njit(cache=True, inline="always")
def measure(rule: int, fs: np.ndarray, st: np.ndarray) -> float:  # pragma: no cover - compiled
    """The current value of ``rule``'s measure at the last close (what its limit is compared with)."""
    equity = fs[F_EQUITY]
    if rule == RULE_DRAWDOWN:
        return 1.0 - equity / fs[F_PEAK] if fs[F_PEAK] > 0.0 else 0.0
    if rule == RULE_DAILY_LOSS:
        return 1.0 - equity / fs[F_DAY_OPEN] if fs[F_DAY_OPEN] > 0.0 else 0.0
    if rule == RULE_CONSECUTIVE_LOSSES:
        return float(st[I_CONSECUTIVE_LOSSES])
    return float(st[I_FILLS_TODAY])


@njit(cache=True, inline="always")
def limit(rule: int, p: np.ndarray) -> float:  # pragma: no cover - compiled
    if rule == RULE_DRAWDOWN:
        return float(p[P_MAX_DRAWDOWN])
    if rule == RULE_DAILY_LOSS:
        return float(p[P_DAILY_LOSS])
    if rule == RULE_CONSECUTIVE_LOSSES:
        return float(p[P_MAX_CONSECUTIVE_LOSSES])
    return float(p[P_MAX_TRADES_PER_DAY])


@njit(cache=True, inline="always")
def rebase(rule: int, fs: np.ndarray, st: np.ndarray) -> None:  # pragma: no cover - compiled
    """Restart ``rule``'s measure from the last close, as an operator's reset does."""
    if rule == RULE_DRAWDOWN:
        fs[F_PEAK] = fs[F_EQUITY]
    elif rule == RULE_DAILY_LOSS:
        fs[F_DAY_OPEN] = fs[F_EQUITY]
    elif rule == RULE_CONSECUTIVE_LOSSES:
        st[I_CONSECUTIVE_LOSSES] = 0
    else:
        st[I_FILLS_TODAY] = 0


@njit(cache=True, inline="always")
def release(i: int, rule: int, action: int, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
             events: np.ndarray) -> None:  # pragma: no cover - compiled
    """Release a tripped ``rule`` at the start of bar ``i``: record it, clear it, re-base its measure."""
    record_event(i, rule, measure(rule, fs, st), limit(rule, p), action, i - st[I_TRIP_BAR + rule], st, events)
    st[I_TRIPPED] &= ~(1 << rule)
    rebase(rule, fs, st)


@njit(cache=True)
def releases(i: int, new_day: bool, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
              events: np.ndarray) -> None:  # pragma: no cover - compiled
    """The releases due at the start of bar ``i`` (module docstring), before the day rolls over."""
    pending = st[I_RESET_PENDING]
    if pending != 0:  # an operator's reset since the last step: record it, then re-base
        for rule in (RULE_DRAWDOWN, RULE_DAILY_LOSS, RULE_CONSECUTIVE_LOSSES, RULE_TRADES_PER_DAY):
            if pending & (1 << rule):
                record_event(i, rule, measure(rule, fs, st), limit(rule, p), ACTION_RELEASE_OPERATOR,
                       i - st[I_TRIP_BAR + rule], st, events)
        fs[F_PEAK] = fs[F_EQUITY]
        fs[F_DAY_OPEN] = fs[F_EQUITY]
        st[I_CONSECUTIVE_LOSSES] = 0
        if pending & (1 << RULE_TRADES_PER_DAY):
            st[I_FILLS_TODAY] = 0
        st[I_RESET_PENDING] = 0
    tripped = st[I_TRIPPED] & ENGINE_RULES_MASK
    if tripped == 0:
        return
    daily = p[P_DAILY_RELEASE] > 0
    if new_day and daily:
        for rule in (RULE_DAILY_LOSS, RULE_TRADES_PER_DAY):
            if tripped & (1 << rule):
                release(i, rule, ACTION_RELEASE_NEW_DAY, p, fs, st, events)
    cooldown = p[P_COOLDOWN]
    if cooldown > 0:
        waiting = ENGINE_RULES_MASK if not daily else (1 << RULE_DRAWDOWN) | (1 << RULE_CONSECUTIVE_LOSSES)
        for rule in (RULE_DRAWDOWN, RULE_DAILY_LOSS, RULE_CONSECUTIVE_LOSSES, RULE_TRADES_PER_DAY):
            if st[I_TRIPPED] & waiting & (1 << rule) and i - st[I_TRIP_BAR + rule] >= cooldown:
                release(i, rule, ACTION_RELEASE_COOLDOWN, p, fs, st, events)
