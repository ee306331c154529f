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

Breakers whose release is due are released before step 1 and tripped as their limits are crossed
(``pipeline.engine.breakers``); the state layout and codes live in ``pipeline.engine.layout``.

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

from pipeline.engine.booking import fill
from pipeline.engine.breakers import releases, trip
from pipeline.engine.layout import (
    DUST_VALUE,
    ENGINE_RULES_MASK,
    F_AIM,
    F_CASH,
    F_DAY_OPEN,
    F_EQUITY,
    F_INFLIGHT,
    F_LAST_RANGE,
    F_PEAK,
    F_PENDING,
    F_STOP,
    F_TAKE,
    F_UNITS,
    I_DAY,
    I_FILLS_TODAY,
    I_N_EVENTS,
    I_N_FILLS,
    I_N_INTENTS,
    I_N_REJECTS,
    I_N_TRADES,
    I_PENDING_REASON,
    I_RESET_PENDING,
    I_TRIPPED,
    P_ALLOW_SHORT,
    P_COOLDOWN,
    P_DAILY_LOSS,
    P_EXTERNAL,
    P_FEE,
    P_FILL_CLOSE,
    P_LEVERAGE,
    P_LOT,
    P_MAX_DRAWDOWN,
    P_MAX_POSITION,
    P_MIN_NOTIONAL,
    P_SESSION_WAIT,
    P_SLIPPAGE,
    P_SLIPPAGE_VOL,
    P_TICK,
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    REJECT_BREAKER,
    REJECT_LEVERAGE,
    REJECT_MAX_POSITION,
    REJECT_MIN_NOTIONAL,
    REJECT_SESSION,
    REJECT_SHORT,
    RULE_DAILY_LOSS,
    RULE_DRAWDOWN,
    SPARE_ROWS,
)


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
        fill(i, -units, price, reason, p, fs, st, fills, trades, events)
        if st[I_TRIPPED] != 0:
            return
        fill(i, desired, price, reason, p, fs, st, fills, trades, events)
    else:
        fill(i, delta, price, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def step(i: int, day: int, o: float, h: float, low: float, c: float, in_session: bool, aim: float, reason: int,
         p: np.ndarray, fs: np.ndarray, st: np.ndarray, fills: np.ndarray, trades: np.ndarray, events: np.ndarray,
         rejects: np.ndarray, intents: np.ndarray) -> float:  # pragma: no cover - compiled
    """Advance the ledger by bar ``i`` and return the equity at its close (see the module docstring)."""
    first = st[I_DAY] == np.iinfo(np.int64).min
    new_day = day != st[I_DAY] and not first
    if st[I_RESET_PENDING] != 0 or (st[I_TRIPPED] & ENGINE_RULES_MASK != 0 and (new_day or p[P_COOLDOWN] > 0)):
        releases(i, new_day, p, fs, st, events)
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
                fill(i, -units, min(o, stop), REASON_STOP_LOSS, p, fs, st, fills, trades, events)
            elif not math.isnan(take) and h >= take:
                fill(i, -units, max(o, take), REASON_TAKE_PROFIT, p, fs, st, fills, trades, events)
        else:
            if not math.isnan(stop) and h >= stop:
                fill(i, -units, max(o, stop), REASON_STOP_LOSS, p, fs, st, fills, trades, events)
            elif not math.isnan(take) and low <= take:
                fill(i, -units, min(o, take), REASON_TAKE_PROFIT, p, fs, st, fills, trades, events)
    equity = fs[F_CASH] + fs[F_UNITS] * c
    fs[F_EQUITY] = equity
    if equity > fs[F_PEAK]:
        fs[F_PEAK] = equity
    if p[P_MAX_DRAWDOWN] > 0:
        drawdown = 1.0 - equity / fs[F_PEAK]
        if drawdown > p[P_MAX_DRAWDOWN]:
            trip(i, RULE_DRAWDOWN, drawdown, p[P_MAX_DRAWDOWN], p, fs, st, events)
    if p[P_DAILY_LOSS] > 0:
        loss = 1.0 - equity / fs[F_DAY_OPEN]
        if loss > p[P_DAILY_LOSS]:
            trip(i, RULE_DAILY_LOSS, loss, p[P_DAILY_LOSS], p, fs, st, events)
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
