"""The compiled per-bar step: the one implementation of fills, risk checks, breakers and the ledger.

``step`` advances one strategy's sub-ledger by one closed bar. The backtest's fast driver (``run_range``) calls
it in a compiled loop; the runtime calls it once per closed bar. There is no other implementation.

Order of events inside ``step`` for bar i (open o, high h, low l, close c):

1. a new trading day (``day`` changed) resets the day's fill count and takes the previous close's equity as
   the day's opening equity;
2. the order decided at the previous close fills at ``o`` (mode ``next_open``); out of session it waits for
   the next in-session bar or is rejected (``session_wait``);
3. stop-loss / take-profit are checked against the bar's range (a stop is assumed hit before a take-profit
   in the same bar; a gap through a level fills at the open);
4. the ledger is marked at ``c``; the drawdown and daily-loss breakers are checked;
5. the strategy's decision at this close (``aim``, NaN for none) becomes an order when it differs from the
   exposure currently aimed at: it fills at the next open, or at ``c`` in mode ``close``.

Before step 1, breakers whose release is due are released (so an order decided at the previous close fills
at this open when its breaker releases here):

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

An order resizes the position to ``aim × equity / (price × (1 + fee))`` units (so ``aim = 1`` from flat buys
``cash / (price × (1 + fee))``, all in), after the risk checks: the max-position fraction and the gross
leverage cap shrink it (recorded as resized), a breaker blocks anything that increases exposure, an order
below the minimum notional is rejected (closing to flat is always allowed), and lot rounding truncates
toward zero. Fill prices carry slippage (``slippage`` fraction plus ``slippage_vol`` × the previous bar's
high-low range over its close) against the trader and are rounded to the tick (buys up, sells down).
A buy debits ``qty × price × (1 + fee)``; a sale credits ``qty × price × (1 - fee)``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# ----------------------------------------------------------------------------------------------- parameters
P_FEE = 0
P_SLIPPAGE = 1
P_SLIPPAGE_VOL = 2
P_FILL_CLOSE = 3
P_MAX_POSITION = 4
P_LEVERAGE = 5
P_ALLOW_SHORT = 6
P_LOT = 7
P_TICK = 8
P_MIN_NOTIONAL = 9
P_STOP_LOSS = 10
P_TAKE_PROFIT = 11
P_MAX_DRAWDOWN = 12
P_DAILY_LOSS = 13
P_MAX_CONSECUTIVE_LOSSES = 14
P_MAX_TRADES_PER_DAY = 15
P_FLATTEN_ON_TRIP = 16
P_SESSION_WAIT = 17
P_EXTERNAL = 18
"""1: fills come from a venue. Orders become intents (market orders sent at once) and ``apply_fill`` books
what the venue reports; units ordered but not filled yet are tracked in ``F_INFLIGHT``."""
P_COOLDOWN = 19
"""Bars after which a rule that waits for an operator releases by itself; 0 waits for the operator."""
P_DAILY_RELEASE = 20
"""1: ``daily_loss`` and ``trades_per_day`` release at the next trading day; 0: they wait like the others."""
N_PARAMS = 21

# ----------------------------------------------------------------------------------------------- float state
F_CASH = 0
F_UNITS = 1
F_AIM = 2
F_PENDING = 3
F_PEAK = 4
F_DAY_OPEN = 5
F_EQUITY = 6
F_TRADE_FLOW = 7
F_TRADE_FEES = 8
F_TRADE_QTY = 9
F_ENTRY_VALUE = 10
F_ENTRY_UNITS = 11
F_EXIT_VALUE = 12
F_EXIT_UNITS = 13
F_STOP = 14
F_TAKE = 15
F_LAST_RANGE = 16
F_INFLIGHT = 17
N_FSTATE = 18

# ----------------------------------------------------------------------------------------------- int state
I_DAY = 0
I_FILLS_TODAY = 1
I_CONSECUTIVE_LOSSES = 2
I_TRIPPED = 3
I_PENDING_REASON = 4
I_ENTRY_BAR = 5
I_ENTRY_REASON = 6
I_N_FILLS = 7
I_N_TRADES = 8
I_N_EVENTS = 9
I_N_REJECTS = 10
I_EXIT_REASON = 11
I_N_INTENTS = 12
I_RESET_PENDING = 13
"""An operator's reset not yet recorded: bit 0 set, plus the bits of the rules it cleared."""
I_TRIP_BAR = 14
"""``I_TRIP_BAR + rule``: the bar at which ``rule`` last tripped (slots for rules 0 to ``N_RULES - 1``)."""
N_RULES = 7
N_ISTATE = I_TRIP_BAR + N_RULES

# ----------------------------------------------------------------------------------------------- codes
REASON_STOP_LOSS = -2
REASON_TAKE_PROFIT = -3
REASON_BREAKER_FLATTEN = -4
REASON_NONE = -1
REASON_OPERATOR_FLATTEN = -5

RULE_DRAWDOWN = 1
RULE_DAILY_LOSS = 2
RULE_CONSECUTIVE_LOSSES = 3
RULE_TRADES_PER_DAY = 4
RULE_MANUAL_PAUSE = 5
"""Set by an operator's pause command: blocks entries like a breaker until resumed."""
RULE_PORTFOLIO = 6
"""Set by the portfolio's drawdown breaker on every sleeve; the portfolio stepper releases it."""
ENGINE_RULES_MASK = (1 << RULE_DRAWDOWN) | (1 << RULE_DAILY_LOSS) | (1 << RULE_CONSECUTIVE_LOSSES) \
    | (1 << RULE_TRADES_PER_DAY)
"""The rules this kernel trips and releases (and records)."""

ACTION_TRIP = 0
ACTION_RELEASE_NEW_DAY = 1
ACTION_RELEASE_COOLDOWN = 2
ACTION_RELEASE_OPERATOR = 3

REJECT_MAX_POSITION = 1
REJECT_LEVERAGE = 2
REJECT_SESSION = 3
REJECT_MIN_NOTIONAL = 4
REJECT_BREAKER = 5
REJECT_SHORT = 6

FILL_COLUMNS = 6  # bar, side, qty, price, fee, reason
TRADE_COLUMNS = 10  # entry_bar, exit_bar, side, qty, entry_price, exit_price, pnl, fees, entry_reason, exit_reason
EVENT_COLUMNS = 6  # bar, rule, value, threshold, action, bars_tripped
REJECT_COLUMNS = 5  # bar, code, aim, requested_units, reason
INTENT_COLUMNS = 4  # bar, signed qty, reference price, reason
DUST_VALUE = 1e-9
"""Orders worth less than this (in quote currency) are not sent: they are rounding noise."""
SPARE_ROWS = 8
"""A step writes at most a few rows to each buffer (events: at most one release and one trip per engine rule);
the driver keeps at least this many free."""


def new_state() -> tuple[np.ndarray, np.ndarray]:
    fstate = np.zeros(N_FSTATE)
    istate = np.zeros(N_ISTATE, dtype=np.int64)
    fstate[F_PENDING] = np.nan
    istate[I_DAY] = np.iinfo(np.int64).min
    istate[I_PENDING_REASON] = REASON_NONE
    return fstate, istate


@njit(cache=True, inline="always")
def _event(i: int, rule: int, value: float, threshold: float, action: int, bars: int, st: np.ndarray,
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
def _trip(i: int, rule: int, value: float, threshold: float, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
          events: np.ndarray) -> None:  # pragma: no cover - compiled
    bit = 1 << rule
    if st[I_TRIPPED] & bit:
        return
    st[I_TRIPPED] |= bit
    st[I_TRIP_BAR + rule] = i
    _event(i, rule, value, threshold, ACTION_TRIP, 0, st, events)
    if p[P_FLATTEN_ON_TRIP] > 0 and fs[F_UNITS] != 0.0:
        fs[F_PENDING] = 0.0
        st[I_PENDING_REASON] = REASON_BREAKER_FLATTEN


@njit(cache=True, inline="always")
def _measure(rule: int, fs: np.ndarray, st: np.ndarray) -> float:  # pragma: no cover - compiled
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
def _limit(rule: int, p: np.ndarray) -> float:  # pragma: no cover - compiled
    if rule == RULE_DRAWDOWN:
        return float(p[P_MAX_DRAWDOWN])
    if rule == RULE_DAILY_LOSS:
        return float(p[P_DAILY_LOSS])
    if rule == RULE_CONSECUTIVE_LOSSES:
        return float(p[P_MAX_CONSECUTIVE_LOSSES])
    return float(p[P_MAX_TRADES_PER_DAY])


@njit(cache=True, inline="always")
def _rebase(rule: int, fs: np.ndarray, st: np.ndarray) -> None:  # pragma: no cover - compiled
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
def _release(i: int, rule: int, action: int, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
             events: np.ndarray) -> None:  # pragma: no cover - compiled
    """Release a tripped ``rule`` at the start of bar ``i``: record it, clear it, re-base its measure."""
    _event(i, rule, _measure(rule, fs, st), _limit(rule, p), action, i - st[I_TRIP_BAR + rule], st, events)
    st[I_TRIPPED] &= ~(1 << rule)
    _rebase(rule, fs, st)


@njit(cache=True)
def _releases(i: int, new_day: bool, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
              events: np.ndarray) -> None:  # pragma: no cover - compiled
    """The releases due at the start of bar ``i`` (module docstring), before the day rolls over."""
    pending = st[I_RESET_PENDING]
    if pending != 0:  # an operator's reset since the last step: record it, then re-base
        for rule in (RULE_DRAWDOWN, RULE_DAILY_LOSS, RULE_CONSECUTIVE_LOSSES, RULE_TRADES_PER_DAY):
            if pending & (1 << rule):
                _event(i, rule, _measure(rule, fs, st), _limit(rule, p), ACTION_RELEASE_OPERATOR,
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
                _release(i, rule, ACTION_RELEASE_NEW_DAY, p, fs, st, events)
    cooldown = p[P_COOLDOWN]
    if cooldown > 0:
        waiting = ENGINE_RULES_MASK if not daily else (1 << RULE_DRAWDOWN) | (1 << RULE_CONSECUTIVE_LOSSES)
        for rule in (RULE_DRAWDOWN, RULE_DAILY_LOSS, RULE_CONSECUTIVE_LOSSES, RULE_TRADES_PER_DAY):
            if st[I_TRIPPED] & waiting & (1 << rule) and i - st[I_TRIP_BAR + rule] >= cooldown:
                _release(i, rule, ACTION_RELEASE_COOLDOWN, p, fs, st, events)


@njit(cache=True, inline="always")
def _reject(i: int, code: int, aim: float, units: float, reason: int, st: np.ndarray,
            rejects: np.ndarray) -> None:  # pragma: no cover - compiled
    k = st[I_N_REJECTS]
    rejects[k, 0] = i
    rejects[k, 1] = code
    rejects[k, 2] = aim
    rejects[k, 3] = units
    rejects[k, 4] = reason
    st[I_N_REJECTS] = k + 1


@njit(cache=True, inline="always")
def _intent(i: int, qty: float, reference: float, reason: int, fs: np.ndarray, st: np.ndarray,
            intents: np.ndarray) -> None:  # pragma: no cover - compiled
    k = st[I_N_INTENTS]
    intents[k, 0] = i
    intents[k, 1] = qty
    intents[k, 2] = reference
    intents[k, 3] = reason
    st[I_N_INTENTS] = k + 1
    fs[F_INFLIGHT] += qty


@njit(cache=True)
def _fill(i: int, qty: float, price: float, reason: int, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
          fills: np.ndarray, trades: np.ndarray, events: np.ndarray) -> None:  # pragma: no cover - compiled
    """A simulated fill of ``qty`` units (signed) at ``price``, fee ``P_FEE`` of notional; never crosses zero."""
    fee = p[P_FEE]
    cash_delta = -(qty * price * (1.0 + fee)) if qty > 0.0 else -qty * price * (1.0 - fee)
    _book(i, qty, price, abs(qty) * price * fee, cash_delta, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def apply_fill(i: int, qty: float, price: float, fee: float, reason: int, p: np.ndarray, fs: np.ndarray,
               st: np.ndarray, fills: np.ndarray, trades: np.ndarray,
               events: np.ndarray) -> None:  # pragma: no cover - compiled
    """A fill reported by a venue: ``qty`` units (signed) at ``price`` with ``fee`` in quote currency.

    A fill that crosses zero (a reversal) is booked as a close and an open, the fee split pro rata.
    """
    inflight = fs[F_INFLIGHT]
    if inflight != 0.0 and qty * inflight > 0.0:
        fs[F_INFLIGHT] = inflight - qty if abs(qty) < abs(inflight) else 0.0
    units = fs[F_UNITS]
    if units != 0.0 and (units + qty) * units < 0.0:
        closing = -units
        share = abs(closing) / abs(qty)
        _apply_one(i, closing, price, fee * share, reason, p, fs, st, fills, trades, events)
        _apply_one(i, qty - closing, price, fee * (1.0 - share), reason, p, fs, st, fills, trades, events)
    else:
        _apply_one(i, qty, price, fee, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def _apply_one(i: int, qty: float, price: float, fee: float, reason: int, p: np.ndarray, fs: np.ndarray,
               st: np.ndarray, fills: np.ndarray, trades: np.ndarray,
               events: np.ndarray) -> None:  # pragma: no cover - compiled
    cash_delta = -(qty * price) - fee if qty > 0.0 else -qty * price - fee
    _book(i, qty, price, fee, cash_delta, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def _book(i: int, qty: float, price: float, fee_amount: float, cash_delta: float, reason: int, p: np.ndarray,
          fs: np.ndarray, st: np.ndarray, fills: np.ndarray, trades: np.ndarray,
          events: np.ndarray) -> None:  # pragma: no cover - compiled
    """Book a fill in the ledger: cash, position, trade accounting, stops, breakers. Never crosses zero."""
    units_before = fs[F_UNITS]
    notional = abs(qty) * price
    cash = fs[F_CASH] + cash_delta
    if cash_delta < 0.0 and abs(cash) <= 1e-9 * -cash_delta:
        cash = 0.0
    fs[F_CASH] = cash
    fs[F_TRADE_FLOW] += cash_delta
    fs[F_TRADE_FEES] += fee_amount
    units_after = units_before + qty
    if abs(units_after) * price <= DUST_VALUE:
        units_after = 0.0
    fs[F_UNITS] = units_after
    k = st[I_N_FILLS]
    fills[k, 0] = i
    fills[k, 1] = 1.0 if qty > 0.0 else -1.0
    fills[k, 2] = abs(qty)
    fills[k, 3] = price
    fills[k, 4] = fee_amount
    fills[k, 5] = reason
    st[I_N_FILLS] = k + 1
    st[I_FILLS_TODAY] += 1
    opening = abs(units_after) > abs(units_before)
    if units_before == 0.0:
        st[I_ENTRY_BAR] = i
        st[I_ENTRY_REASON] = reason
        fs[F_TRADE_QTY] = 0.0
        fs[F_ENTRY_VALUE] = 0.0
        fs[F_ENTRY_UNITS] = 0.0
        fs[F_EXIT_VALUE] = 0.0
        fs[F_EXIT_UNITS] = 0.0
    if opening:
        fs[F_ENTRY_VALUE] += notional
        fs[F_ENTRY_UNITS] += abs(qty)
        fs[F_TRADE_QTY] = max(fs[F_TRADE_QTY], abs(units_after))
        average = fs[F_ENTRY_VALUE] / fs[F_ENTRY_UNITS]
        direction = 1.0 if units_after > 0.0 else -1.0
        fs[F_STOP] = average * (1.0 - direction * p[P_STOP_LOSS]) if p[P_STOP_LOSS] > 0 else np.nan
        fs[F_TAKE] = average * (1.0 + direction * p[P_TAKE_PROFIT]) if p[P_TAKE_PROFIT] > 0 else np.nan
    else:
        fs[F_EXIT_VALUE] += notional
        fs[F_EXIT_UNITS] += abs(qty)
    if units_after == 0.0:
        t = st[I_N_TRADES]
        pnl = fs[F_TRADE_FLOW]
        trades[t, 0] = st[I_ENTRY_BAR]
        trades[t, 1] = i
        trades[t, 2] = 1.0 if units_before > 0.0 else -1.0
        trades[t, 3] = fs[F_TRADE_QTY]
        trades[t, 4] = fs[F_ENTRY_VALUE] / fs[F_ENTRY_UNITS] if fs[F_ENTRY_UNITS] > 0 else price
        trades[t, 5] = fs[F_EXIT_VALUE] / fs[F_EXIT_UNITS] if fs[F_EXIT_UNITS] > 0 else price
        trades[t, 6] = pnl
        trades[t, 7] = fs[F_TRADE_FEES]
        trades[t, 8] = st[I_ENTRY_REASON]
        trades[t, 9] = reason
        st[I_N_TRADES] = t + 1
        fs[F_TRADE_FLOW] = 0.0
        fs[F_TRADE_FEES] = 0.0
        fs[F_STOP] = np.nan
        fs[F_TAKE] = np.nan
        if pnl < 0.0:
            st[I_CONSECUTIVE_LOSSES] += 1
            limit = p[P_MAX_CONSECUTIVE_LOSSES]
            if limit > 0 and st[I_CONSECUTIVE_LOSSES] >= limit:
                _trip(i, RULE_CONSECUTIVE_LOSSES, st[I_CONSECUTIVE_LOSSES], limit, p, fs, st, events)
        else:
            st[I_CONSECUTIVE_LOSSES] = 0
    limit = p[P_MAX_TRADES_PER_DAY]
    if limit > 0 and st[I_FILLS_TODAY] >= limit:
        _trip(i, RULE_TRADES_PER_DAY, st[I_FILLS_TODAY], limit, p, fs, st, events)


@njit(cache=True, inline="always")
def _round_price(price: float, tick: float, buy: bool) -> float:  # pragma: no cover - compiled
    if tick <= 0.0:
        return price
    steps = price / tick
    return (math.ceil(steps - 1e-9) if buy else math.floor(steps + 1e-9)) * tick


@njit(cache=True)
def _execute(i: int, aim: float, reference: float, reason: int, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
             fills: np.ndarray, trades: np.ndarray, events: np.ndarray, rejects: np.ndarray,
             intents: np.ndarray) -> None:  # pragma: no cover - compiled
    """Move the position towards ``aim`` (fraction of equity) at ``reference`` price, after risk checks."""
    units = fs[F_UNITS] + fs[F_INFLIGHT]
    target = aim
    if target < 0.0 and p[P_ALLOW_SHORT] <= 0:
        _reject(i, REJECT_SHORT, aim, 0.0, reason, st, rejects)
        target = 0.0
    cap = p[P_MAX_POSITION]
    if abs(target) > cap:
        _reject(i, REJECT_MAX_POSITION, aim, 0.0, reason, st, rejects)
        target = cap if target > 0 else -cap
    fee = p[P_FEE]
    equity = fs[F_CASH] + units * reference
    buy_side = target * equity / (reference * (1.0 + fee)) > units
    slip = p[P_SLIPPAGE] + p[P_SLIPPAGE_VOL] * fs[F_LAST_RANGE]
    estimate = reference * (1.0 + slip) if buy_side else reference * (1.0 - slip)
    desired = target * equity / (estimate * (1.0 + fee))
    limit_units = p[P_LEVERAGE] * equity / (estimate * (1.0 + fee))
    if abs(desired) > limit_units * (1.0 + 1e-12):
        _reject(i, REJECT_LEVERAGE, aim, desired, reason, st, rejects)
        desired = limit_units if desired > 0 else -limit_units
    lot = p[P_LOT]
    if lot > 0.0:
        desired = math.floor(abs(desired) / lot + 1e-9) * lot * (1.0 if desired >= 0 else -1.0)
    if st[I_TRIPPED] != 0:  # a tripped breaker lets exposure shrink, never grow or flip
        if desired * units < 0.0 or (units == 0.0 and desired != 0.0):
            _reject(i, REJECT_BREAKER, aim, desired, reason, st, rejects)
            desired = 0.0
        elif abs(desired) > abs(units):
            _reject(i, REJECT_BREAKER, aim, desired, reason, st, rejects)
            desired = units
    delta = desired - units
    if delta == 0.0:
        return
    price = _round_price(estimate, p[P_TICK], delta > 0.0)
    if abs(delta) * price <= DUST_VALUE and desired != 0.0:
        return
    if desired != 0.0 and abs(delta) * price < p[P_MIN_NOTIONAL]:
        _reject(i, REJECT_MIN_NOTIONAL, aim, desired, reason, st, rejects)
        return
    if p[P_EXTERNAL] > 0:
        _intent(i, delta, price, reason, fs, st, intents)
        return
    if units != 0.0 and desired * units < 0.0:  # a reversal: close, then open the other side
        _fill(i, -units, price, reason, p, fs, st, fills, trades, events)
        if st[I_TRIPPED] != 0:
            return
        _fill(i, desired, price, reason, p, fs, st, fills, trades, events)
    else:
        _fill(i, delta, price, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def step(i: int, day: int, o: float, h: float, low: float, c: float, in_session: bool, aim: float, reason: int,
         p: np.ndarray, fs: np.ndarray, st: np.ndarray, fills: np.ndarray, trades: np.ndarray, events: np.ndarray,
         rejects: np.ndarray, intents: np.ndarray) -> float:  # pragma: no cover - compiled
    """Advance the ledger by bar ``i`` and return the equity at its close (see the module docstring)."""
    first = st[I_DAY] == np.iinfo(np.int64).min
    new_day = day != st[I_DAY] and not first
    if st[I_RESET_PENDING] != 0 or (st[I_TRIPPED] & ENGINE_RULES_MASK != 0 and (new_day or p[P_COOLDOWN] > 0)):
        _releases(i, new_day, p, fs, st, events)
    if day != st[I_DAY]:
        if first:
            fs[F_DAY_OPEN] = fs[F_CASH]
            fs[F_PEAK] = fs[F_CASH]
        else:
            fs[F_DAY_OPEN] = fs[F_EQUITY]
        st[I_DAY] = day
        st[I_FILLS_TODAY] = 0
    pending = fs[F_PENDING]
    if not math.isnan(pending):
        if in_session:
            fs[F_PENDING] = np.nan
            _execute(i, pending, o, st[I_PENDING_REASON], p, fs, st, fills, trades, events, rejects, intents)
        elif p[P_SESSION_WAIT] <= 0:
            fs[F_PENDING] = np.nan
            _reject(i, REJECT_SESSION, pending, 0.0, st[I_PENDING_REASON], st, rejects)
    external = p[P_EXTERNAL] > 0
    units = fs[F_UNITS]
    if external:
        position = units + fs[F_INFLIGHT]  # an exit already ordered is not ordered again
        if position != 0.0 and position * units > 0.0:
            stop = fs[F_STOP]
            take = fs[F_TAKE]
            if position > 0.0 and not math.isnan(stop) and low <= stop:
                _intent(i, -position, min(o, stop), REASON_STOP_LOSS, fs, st, intents)
            elif position > 0.0 and not math.isnan(take) and h >= take:
                _intent(i, -position, max(o, take), REASON_TAKE_PROFIT, fs, st, intents)
            elif position < 0.0 and not math.isnan(stop) and h >= stop:
                _intent(i, -position, max(o, stop), REASON_STOP_LOSS, fs, st, intents)
            elif position < 0.0 and not math.isnan(take) and low <= take:
                _intent(i, -position, min(o, take), REASON_TAKE_PROFIT, fs, st, intents)
    elif units != 0.0:
        stop = fs[F_STOP]
        take = fs[F_TAKE]
        if units > 0.0:
            if not math.isnan(stop) and low <= stop:
                _fill(i, -units, min(o, stop), REASON_STOP_LOSS, p, fs, st, fills, trades, events)
            elif not math.isnan(take) and h >= take:
                _fill(i, -units, max(o, take), REASON_TAKE_PROFIT, p, fs, st, fills, trades, events)
        else:
            if not math.isnan(stop) and h >= stop:
                _fill(i, -units, max(o, stop), REASON_STOP_LOSS, p, fs, st, fills, trades, events)
            elif not math.isnan(take) and low <= take:
                _fill(i, -units, min(o, take), REASON_TAKE_PROFIT, p, fs, st, fills, trades, events)
    equity = fs[F_CASH] + fs[F_UNITS] * c
    fs[F_EQUITY] = equity
    if equity > fs[F_PEAK]:
        fs[F_PEAK] = equity
    if p[P_MAX_DRAWDOWN] > 0:
        drawdown = 1.0 - equity / fs[F_PEAK]
        if drawdown > p[P_MAX_DRAWDOWN]:
            _trip(i, RULE_DRAWDOWN, drawdown, p[P_MAX_DRAWDOWN], p, fs, st, events)
    if p[P_DAILY_LOSS] > 0:
        loss = 1.0 - equity / fs[F_DAY_OPEN]
        if loss > p[P_DAILY_LOSS]:
            _trip(i, RULE_DAILY_LOSS, loss, p[P_DAILY_LOSS], p, fs, st, events)
    close_now = p[P_FILL_CLOSE] > 0 or external  # a venue order goes out at once, as a market order
    if not math.isnan(aim) and aim != fs[F_AIM]:
        fs[F_AIM] = aim
        if close_now:
            if in_session:
                _execute(i, aim, c, reason, p, fs, st, fills, trades, events, rejects, intents)
                equity = fs[F_CASH] + fs[F_UNITS] * c
                fs[F_EQUITY] = equity
            else:
                _reject(i, REJECT_SESSION, aim, 0.0, reason, st, rejects)
        else:
            fs[F_PENDING] = aim
            st[I_PENDING_REASON] = reason
    elif close_now and not math.isnan(fs[F_PENDING]) and in_session:
        pending = fs[F_PENDING]
        fs[F_PENDING] = np.nan
        _execute(i, pending, c, st[I_PENDING_REASON], p, fs, st, fills, trades, events, rejects, intents)
        equity = fs[F_CASH] + fs[F_UNITS] * c
        fs[F_EQUITY] = equity
    fs[F_LAST_RANGE] = (h - low) / c if c > 0 else 0.0
    return float(equity)


@njit(cache=True)
def run_range(start: int, end: int, days: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray,
              closes: np.ndarray, sessions: np.ndarray, aims: np.ndarray, reasons: np.ndarray, p: np.ndarray,
              fs: np.ndarray, st: np.ndarray, fills: np.ndarray, trades: np.ndarray, events: np.ndarray,
              rejects: np.ndarray, intents: np.ndarray, equity: np.ndarray, cash: np.ndarray,
              units: np.ndarray, paused: np.ndarray) -> int:  # pragma: no cover - compiled
    """Step bars ``start..end-1``; stop early (returning the next bar) when an output buffer runs low.

    Per bar it writes the equity, cash and units at the close, and whether the bar is paused (a rule tripped
    at its close)."""
    fills_cap = fills.shape[0] - SPARE_ROWS
    trades_cap = trades.shape[0] - SPARE_ROWS
    events_cap = events.shape[0] - SPARE_ROWS
    rejects_cap = rejects.shape[0] - SPARE_ROWS
    intents_cap = intents.shape[0] - SPARE_ROWS
    for i in range(start, end):
        if st[I_N_FILLS] > fills_cap or st[I_N_TRADES] > trades_cap or st[I_N_EVENTS] > events_cap \
                or st[I_N_REJECTS] > rejects_cap or st[I_N_INTENTS] > intents_cap:
            return i
        equity[i] = step(i, days[i], opens[i], highs[i], lows[i], closes[i], sessions[i], aims[i], reasons[i],
                         p, fs, st, fills, trades, events, rejects, intents)
        cash[i] = fs[F_CASH]
        units[i] = fs[F_UNITS]
        paused[i] = st[I_TRIPPED] != 0
    return end
