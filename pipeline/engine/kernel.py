"""The compiled per-bar step: the one implementation of fills, risk checks, breakers and the ledger.

``step`` advances one strategy's sub-ledger by one closed bar. The backtest's fast driver (``run_range``) calls
it in a compiled loop; the runtime calls it once per closed bar. There is no other implementation.

Order of events inside ``step`` for bar i (open o, high h, low l, close c):

1. a new trading day (``day`` changed) resets the day's fill count and takes the previous close's equity as
   the day's opening equity; a pending ``day`` limit or stop order is cancelled at the start of the trading
   day after the one of the first bar it worked in (a rejection ``cancelled: day order expired``);
2. the order decided at an earlier close executes when this bar reaches it (``pipeline.engine.working``): a
   market order at ``o``; a limit order at ``o`` when the bar opens through its price, else at its price when
   the bar trades through it (a touch is not a fill), without slippage; a stop order at ``o`` when the bar
   opens through its trigger, else at the trigger when the bar reaches it, with slippage. Out of session a
   market order waits for the next in-session bar or is rejected (``session_wait``); limit and stop orders wait;
3. the position's stop (stop-loss, or the trailing stop when tighter) and take-profit are checked against the
   bar's range (reaching a level is enough): a gap through a level fills at the open; when both levels are
   inside the bar the stop (the adverse one) fills, unless ``intrabar`` is ``target_first``. A position opened
   inside this bar by a limit or stop order is checked from the next bar (the order of prices within a bar is
   unknown). The trailing stop's base then moves to the bar's high (low for a short; the close for an entry's
   own bar);
4. the ledger is marked at ``c``; the drawdown and daily-loss breakers are checked;
5. the strategy's decision at this close (``aim``, NaN for none) becomes the working order when it differs from
   the exposure aimed at, or asks for another order type or price: a market order fills at the next open, or
   at ``c`` in mode ``close``; a limit or stop order works from the next bar until it fills, the strategy
   decides again or (``day``) its trading day ends. A position it opens (from flat, or turning around) takes
   the order's protections; an order that adds to or reduces a position keeps the position's.

In external mode (a venue fills) the order goes out at once as an intent of its kind and price, the position's
stop rests at the venue (``Engine.protective_stop``), and only a take-profit is sent from here.

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

from pipeline.domain.orders import LIMIT, MARKET, O_KIND, O_PRICE
from pipeline.engine.booking import fill
from pipeline.engine.breakers import releases, trip
from pipeline.engine.layout import (
    DUST_VALUE,
    ENGINE_RULES_MASK,
    F_AIM,
    F_CASH,
    F_DAY_OPEN,
    F_EQUITY,
    F_EXTREME,
    F_INFLIGHT,
    F_LAST_RANGE,
    F_PEAK,
    F_PENDING,
    F_TAKE,
    F_UNITS,
    F_WORK_EXPIRES,
    F_WORK_KIND,
    F_WORK_PRICE,
    F_WORK_SIDE,
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
    P_TARGET_FIRST,
    P_TICK,
    REASON_TAKE_PROFIT,
    REJECT_BREAKER,
    REJECT_EXPIRED,
    REJECT_LEVERAGE,
    REJECT_MAX_POSITION,
    REJECT_MIN_NOTIONAL,
    REJECT_SESSION,
    REJECT_SHORT,
    RULE_DAILY_LOSS,
    RULE_DRAWDOWN,
    SPARE_ROWS,
)
from pipeline.engine.working import (
    adopt_protections,
    place,
    replaces,
    side_towards,
    start_day,
    stop_level,
    trigger_price,
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
def _intent(i: int, qty: float, reference: float, reason: int, kind: float, price: float, expires: float,
            fs: np.ndarray, st: np.ndarray, intents: np.ndarray) -> None:  # pragma: no cover - compiled
    k = st[I_N_INTENTS]
    intents[k, 0] = i
    intents[k, 1] = qty
    intents[k, 2] = reference
    intents[k, 3] = reason
    intents[k, 4] = kind
    intents[k, 5] = price
    intents[k, 6] = expires
    st[I_N_INTENTS] = k + 1
    fs[F_INFLIGHT] += qty


@njit(cache=True, inline="always")
def _round_price(price: float, tick: float, buy: bool) -> float:  # pragma: no cover - compiled
    if tick <= 0.0:
        return price
    steps = price / tick
    return (math.ceil(steps - 1e-9) if buy else math.floor(steps + 1e-9)) * tick


@njit(cache=True)
def _execute(i: int, aim: float, reference: float, reason: int, slipped: bool, p: np.ndarray, fs: np.ndarray,
             st: np.ndarray, fills: np.ndarray, trades: np.ndarray, events: np.ndarray, rejects: np.ndarray,
             intents: np.ndarray) -> None:  # pragma: no cover - compiled
    """Move the position towards ``aim`` (fraction of equity) at ``reference`` price, after risk checks.

    ``slipped``: the fill carries slippage and tick rounding (market and stop orders), else it is at
    ``reference`` exactly (a limit order). A venue order (external mode) is the working order's kind and price.
    """
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
    equity = fs[F_CASH] + fs[F_UNITS] * reference  # units in flight are not paid for yet: not in the equity
    buy_side = target * equity / (reference * (1.0 + fee)) > units
    slip = p[P_SLIPPAGE] + p[P_SLIPPAGE_VOL] * fs[F_LAST_RANGE] if slipped else 0.0
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
    price = _round_price(estimate, p[P_TICK], delta > 0.0) if slipped else estimate
    if abs(delta) * price <= DUST_VALUE and desired != 0.0:
        return
    if desired != 0.0 and abs(delta) * price < p[P_MIN_NOTIONAL]:
        _reject(i, REJECT_MIN_NOTIONAL, aim, desired, reason, st, rejects)
        return
    if p[P_EXTERNAL] > 0:
        _intent(i, delta, price, reason, fs[F_WORK_KIND], fs[F_WORK_PRICE], fs[F_WORK_EXPIRES], fs, st, intents)
        return
    if units != 0.0 and desired * units < 0.0:  # a reversal: close, then open the other side
        fill(i, -units, price, reason, p, fs, st, fills, trades, events)
        if st[I_TRIPPED] != 0:
            return
        fill(i, desired, price, reason, p, fs, st, fills, trades, events)
    else:
        fill(i, delta, price, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def _protect(i: int, o: float, h: float, low: float, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
             fills: np.ndarray, trades: np.ndarray, events: np.ndarray) -> None:  # pragma: no cover - compiled
    """Close the position at its stop (stop-loss or trailing) or its take-profit when this bar reaches one."""
    units = fs[F_UNITS]
    level, code = stop_level(p, fs)
    take = fs[F_TAKE]
    long = units > 0.0
    stop_hit = not math.isnan(level) and (low <= level if long else h >= level)
    take_hit = not math.isnan(take) and (h >= take if long else low <= take)
    if not stop_hit and not take_hit:
        return
    use_stop = stop_hit
    if stop_hit and take_hit:
        if (o <= level) if long else (o >= level):  # the open gapped through the stop: it came first
            use_stop = True
        elif (o >= take) if long else (o <= take):  # ... or through the target
            use_stop = False
        else:
            use_stop = p[P_TARGET_FIRST] <= 0
    if use_stop:
        fill(i, -units, min(o, level) if long else max(o, level), code, p, fs, st, fills, trades, events)
    else:
        fill(i, -units, max(o, take) if long else min(o, take), REASON_TAKE_PROFIT, p, fs, st, fills, trades,
             events)


@njit(cache=True)
def step(i: int, day: int, o: float, h: float, low: float, c: float, in_session: bool, aim: float, reason: int,
         order: np.ndarray, p: np.ndarray, fs: np.ndarray, st: np.ndarray, fills: np.ndarray, trades: np.ndarray,
         events: np.ndarray, rejects: np.ndarray, intents: np.ndarray) -> float:  # pragma: no cover - compiled
    """Advance the ledger by bar ``i`` and return the equity at its close (see the module docstring).

    ``order`` is the row of the strategy's order table (``pipeline.domain.orders``) that says how ``aim`` is to be
    executed."""
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
    external = p[P_EXTERNAL] > 0
    pending = fs[F_PENDING]
    if not math.isnan(pending) and in_session:
        start_day(day, fs)
    if not math.isnan(pending) and not math.isnan(fs[F_WORK_EXPIRES]) and 0 <= fs[F_WORK_EXPIRES] <= day:
        fs[F_PENDING] = np.nan  # a day order the day ended on
        fs[F_AIM] = np.nan
        _reject(i, REJECT_EXPIRED, pending, 0.0, st[I_PENDING_REASON], st, rejects)
        pending = np.nan
    inside = False  # a position opened inside this bar (a limit or stop order), not at its open
    if not math.isnan(pending):
        kind = fs[F_WORK_KIND]
        if in_session:
            price = trigger_price(kind, fs[F_WORK_SIDE], fs[F_WORK_PRICE], o, h, low)
            if not math.isnan(price):
                fs[F_PENDING] = np.nan
                adopt_protections(pending, fs)
                before = fs[F_UNITS]
                _execute(i, pending, price, st[I_PENDING_REASON], kind != LIMIT, p, fs, st, fills, trades, events,
                         rejects, intents)
                after = fs[F_UNITS]
                inside = price != o and after != 0.0 and after * before <= 0.0
        elif kind == MARKET and p[P_SESSION_WAIT] <= 0:
            fs[F_PENDING] = np.nan
            _reject(i, REJECT_SESSION, pending, 0.0, st[I_PENDING_REASON], st, rejects)
    units = fs[F_UNITS]
    if external:  # the stop rests at the venue (``Engine.protective_stop``); a take-profit is sent from here
        position = units + fs[F_INFLIGHT]  # an exit already ordered is not ordered again
        take = fs[F_TAKE]
        if position != 0.0 and position * units > 0.0 and not math.isnan(take):
            if position > 0.0 and h >= take:
                _intent(i, -position, max(o, take), REASON_TAKE_PROFIT, MARKET, np.nan, np.nan, fs, st, intents)
            elif position < 0.0 and low <= take:
                _intent(i, -position, min(o, take), REASON_TAKE_PROFIT, MARKET, np.nan, np.nan, fs, st, intents)
    elif units != 0.0 and not inside:
        _protect(i, o, h, low, p, fs, st, fills, trades, events)
    units = fs[F_UNITS]
    if units != 0.0:  # the trailing stop's base: the best price since entry (only the close of an entry's bar)
        best = (c if inside else h) if units > 0.0 else (c if inside else low)
        extreme = fs[F_EXTREME]
        if math.isnan(extreme) or (units > 0.0 and best > extreme) or (units < 0.0 and best < extreme):
            fs[F_EXTREME] = best
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
    if not math.isnan(aim) and (aim != fs[F_AIM] or replaces(order, fs)):
        fs[F_AIM] = aim
        kind = order[O_KIND]
        replacing = external and fs[F_INFLIGHT] != 0.0
        place(order, aim, side_towards(aim, c, fs, fs[F_CASH]), fs)
        st[I_PENDING_REASON] = reason
        if external or (kind == MARKET and p[P_FILL_CLOSE] > 0):  # a venue order goes out at once
            fs[F_PENDING] = np.nan
            if in_session:
                adopt_protections(aim, fs)
                sent = st[I_N_INTENTS]
                reference = c if kind == MARKET else order[O_PRICE]
                _execute(i, aim, reference, reason, kind != LIMIT, p, fs, st, fills, trades, events, rejects,
                         intents)
                if replacing and st[I_N_INTENTS] == sent:
                    # the same exposure as another order or at a new price: the venue's working order is
                    # replaced by its rest
                    _intent(i, 0.0, reference, reason, kind, fs[F_WORK_PRICE], fs[F_WORK_EXPIRES], fs, st, intents)
                equity = fs[F_CASH] + fs[F_UNITS] * c
                fs[F_EQUITY] = equity
            else:
                _reject(i, REJECT_SESSION, aim, 0.0, reason, st, rejects)
    elif (p[P_FILL_CLOSE] > 0 or external) and not math.isnan(fs[F_PENDING]) and fs[F_WORK_KIND] == MARKET \
            and in_session:
        pending = fs[F_PENDING]
        fs[F_PENDING] = np.nan
        _execute(i, pending, c, st[I_PENDING_REASON], True, p, fs, st, fills, trades, events, rejects, intents)
        equity = fs[F_CASH] + fs[F_UNITS] * c
        fs[F_EQUITY] = equity
    fs[F_LAST_RANGE] = (h - low) / c if c > 0 else 0.0
    return float(equity)


@njit(cache=True)
def run_range(start: int, end: int, days: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray,
              closes: np.ndarray, sessions: np.ndarray, aims: np.ndarray, reasons: np.ndarray, orders: np.ndarray,
              p: np.ndarray,
              fs: np.ndarray, st: np.ndarray, fills: np.ndarray, trades: np.ndarray, events: np.ndarray,
              rejects: np.ndarray, intents: np.ndarray, equity: np.ndarray, cash: np.ndarray,
              units: np.ndarray, paused: np.ndarray) -> int:  # pragma: no cover - compiled
    """Step bars ``start..end-1``; stop early (returning the next bar) when an output buffer runs low.

    Per bar it writes the equity, cash and units at the close, and whether the bar is paused (a rule tripped
    at its close). ``orders`` is the strategy's order table: one row per bar, or one row for every bar."""
    fills_cap = fills.shape[0] - SPARE_ROWS
    trades_cap = trades.shape[0] - SPARE_ROWS
    events_cap = events.shape[0] - SPARE_ROWS
    rejects_cap = rejects.shape[0] - SPARE_ROWS
    intents_cap = intents.shape[0] - SPARE_ROWS
    per_bar = orders.shape[0] > 1
    for i in range(start, end):
        if st[I_N_FILLS] > fills_cap or st[I_N_TRADES] > trades_cap or st[I_N_EVENTS] > events_cap \
                or st[I_N_REJECTS] > rejects_cap or st[I_N_INTENTS] > intents_cap:
            return i
        equity[i] = step(i, days[i], opens[i], highs[i], lows[i], closes[i], sessions[i], aims[i], reasons[i],
                         orders[i if per_bar else 0], p, fs, st, fills, trades, events, rejects, intents)
        cash[i] = fs[F_CASH]
        units[i] = fs[F_UNITS]
        paused[i] = st[I_TRIPPED] != 0
    return end
