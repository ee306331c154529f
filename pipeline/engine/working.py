"""Working orders and a position's protections inside the compiled step: when a limit or stop order triggers,
at what price, and where the position's stop stands.

The conventions (``pipeline.engine.kernel`` states them for the whole bar):

* a buy limit at ``L`` fills at the open when the bar opens at or below ``L`` (a gap through it fills at the
  better price), else at ``L`` when the bar trades *through* it (``low < L``); a touch is not a fill. A sell
  limit mirrors it (``open >= L``, else ``high > L``). A limit fill has no slippage;
* a buy stop at ``S`` fills at the open when the bar opens at or above ``S`` (a gap through it), else at ``S``
  when the bar reaches it (``high >= S``); a sell stop mirrors it. A stop becomes a market order, so its fill
  carries the configured slippage;
* a position's stop level is its stop-loss, or its trailing stop (a fraction below the highest high since
  entry, above the lowest low for a short) when that is tighter.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from pipeline.domain.orders import DAY as TIF_DAY
from pipeline.domain.orders import LIMIT, MARKET, O_KIND, O_PRICE, O_STOP_LOSS, O_TAKE_PROFIT, O_TIF, O_TRAILING
from pipeline.engine.layout import (
    F_EXTREME,
    F_INFLIGHT,
    F_PENDING,
    F_POS_STOP_LOSS,
    F_POS_TAKE_PROFIT,
    F_POS_TRAILING,
    F_STOP,
    F_UNITS,
    F_WORK_EXPIRES,
    F_WORK_KIND,
    F_WORK_PRICE,
    F_WORK_SIDE,
    F_WORK_STOP_LOSS,
    F_WORK_TAKE_PROFIT,
    F_WORK_TRAILING,
    P_TRAILING,
    REASON_STOP_LOSS,
    REASON_TRAILING_STOP,
)


@njit(cache=True, inline="always")
def trigger_price(kind: float, side: float, price: float, o: float, h: float,
                  low: float) -> float:  # pragma: no cover - compiled
    """The fill price of a working order of ``kind`` on ``side`` (+1 buy, -1 sell) in this bar; NaN: none."""
    if kind == MARKET:
        return o
    if kind == LIMIT:
        if side > 0:
            return o if o <= price else (price if low < price else np.nan)
        return o if o >= price else (price if h > price else np.nan)
    if side > 0:  # a stop
        return o if o >= price else (price if h >= price else np.nan)
    return o if o <= price else (price if low <= price else np.nan)


@njit(cache=True)
def stop_level(p: np.ndarray, fs: np.ndarray) -> tuple[float, int]:  # pragma: no cover - compiled
    """The open position's stop level and its reason code (stop-loss or trailing stop); NaN when it has none."""
    units = fs[F_UNITS]
    level = fs[F_STOP] if units != 0.0 else np.nan
    code = REASON_STOP_LOSS
    trail = fs[F_POS_TRAILING]
    if math.isnan(trail):
        trail = p[P_TRAILING]
    extreme = fs[F_EXTREME]
    if units != 0.0 and trail > 0.0 and not math.isnan(extreme):
        trailing = extreme * (1.0 - trail) if units > 0.0 else extreme * (1.0 + trail)
        if math.isnan(level) or (units > 0.0 and trailing > level) or (units < 0.0 and trailing < level):
            level = trailing
            code = REASON_TRAILING_STOP
    return level, code


DAY_NOT_STARTED = -1.0
"""``F_WORK_EXPIRES`` of a day order that has not worked in a bar yet."""


@njit(cache=True, inline="always")
def start_day(day: int, fs: np.ndarray) -> None:  # pragma: no cover - compiled
    """A day order working in its first bar: it is cancelled at the start of the trading day after this one."""
    if fs[F_WORK_EXPIRES] == DAY_NOT_STARTED:
        fs[F_WORK_EXPIRES] = day + 1


@njit(cache=True, inline="always")
def place(order: np.ndarray, aim: float, side: float, fs: np.ndarray) -> None:  # pragma: no cover - compiled
    """Make ``order`` (a row of an order table) the working order towards ``aim`` on ``side``; a market order
    has no time in force (it executes at the next chance)."""
    fs[F_PENDING] = aim
    fs[F_WORK_KIND] = order[O_KIND]
    fs[F_WORK_PRICE] = order[O_PRICE]
    # a day order's day is the trading day of the first bar it works in (set then: ``start_day``)
    fs[F_WORK_EXPIRES] = DAY_NOT_STARTED if order[O_TIF] == TIF_DAY and order[O_KIND] != MARKET else np.nan
    fs[F_WORK_SIDE] = side
    fs[F_WORK_STOP_LOSS] = order[O_STOP_LOSS]
    fs[F_WORK_TAKE_PROFIT] = order[O_TAKE_PROFIT]
    fs[F_WORK_TRAILING] = order[O_TRAILING]


@njit(cache=True, inline="always")
def place_market(aim: float, fs: np.ndarray) -> None:  # pragma: no cover - compiled
    """A market order towards ``aim`` with the configured protections (an operator's or a breaker's flatten)."""
    fs[F_PENDING] = aim
    fs[F_WORK_KIND] = MARKET
    fs[F_WORK_PRICE] = np.nan
    fs[F_WORK_EXPIRES] = np.nan
    fs[F_WORK_STOP_LOSS] = np.nan
    fs[F_WORK_TAKE_PROFIT] = np.nan
    fs[F_WORK_TRAILING] = np.nan


@njit(cache=True, inline="always")
def adopt_protections(aim: float, fs: np.ndarray) -> None:  # pragma: no cover - compiled
    """The working order towards ``aim`` executes (or, at a venue, is sent): when it opens a position (from flat,
    or turning it around) that position takes its protections; an order that adds to or reduces a position
    leaves the position's protections as they are."""
    held = fs[F_UNITS] + fs[F_INFLIGHT]
    if held == 0.0 or held * aim < 0.0:
        fs[F_POS_STOP_LOSS] = fs[F_WORK_STOP_LOSS]
        fs[F_POS_TAKE_PROFIT] = fs[F_WORK_TAKE_PROFIT]
        fs[F_POS_TRAILING] = fs[F_WORK_TRAILING]


@njit(cache=True, inline="always")
def replaces(order: np.ndarray, fs: np.ndarray) -> bool:  # pragma: no cover - compiled
    """Whether a decision for the exposure already aimed at changes the order still working towards it."""
    working = not math.isnan(fs[F_PENDING]) or fs[F_INFLIGHT] != 0.0
    if not working:
        return False
    if order[O_KIND] != fs[F_WORK_KIND]:
        return True
    return bool(order[O_KIND] != MARKET and order[O_PRICE] != fs[F_WORK_PRICE])


@njit(cache=True, inline="always")
def side_towards(aim: float, price: float, fs: np.ndarray, cash: float) -> float:  # pragma: no cover - compiled
    """+1 when reaching ``aim`` (fraction of equity at ``price``) means buying, else -1."""
    units = fs[F_UNITS] + fs[F_INFLIGHT]
    equity = cash + fs[F_UNITS] * price
    return 1.0 if aim * equity > units * price else -1.0
