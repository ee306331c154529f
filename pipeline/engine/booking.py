"""Booking fills in a sleeve's ledger: cash, position, trade accounting, stops and the breakers fills can trip.

An opening fill sets the position's stop-loss and take-profit levels from the average entry price, with the
protections of the order that opened it (``F_POS_*``) or the configured ones, and starts the trailing stop's
best price at the fill price.

``fill`` books a simulated fill (the fee a fraction of notional, ``P_FEE``); ``apply_fill`` books what a venue
reported (the fee in quote currency; a reversal is booked as a close and an open). Both go through ``book``, the
one place the ledger's cash and position change.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pipeline.engine.breakers import trip
from pipeline.engine.layout import (
    DUST_VALUE,
    F_CASH,
    F_ENTRY_UNITS,
    F_ENTRY_VALUE,
    F_EXIT_UNITS,
    F_EXIT_VALUE,
    F_EXTREME,
    F_INFLIGHT,
    F_POS_STOP_LOSS,
    F_POS_TAKE_PROFIT,
    F_STOP,
    F_TAKE,
    F_TRADE_FEES,
    F_TRADE_FLOW,
    F_TRADE_QTY,
    F_UNITS,
    I_CONSECUTIVE_LOSSES,
    I_ENTRY_BAR,
    I_ENTRY_REASON,
    I_FILLS_TODAY,
    I_N_FILLS,
    I_N_TRADES,
    P_FEE,
    P_MAX_CONSECUTIVE_LOSSES,
    P_MAX_TRADES_PER_DAY,
    P_STOP_LOSS,
    P_TAKE_PROFIT,
    RULE_CONSECUTIVE_LOSSES,
    RULE_TRADES_PER_DAY,
)


@njit(cache=True)
def fill(i: int, qty: float, price: float, reason: int, p: np.ndarray, fs: np.ndarray, st: np.ndarray,
          fills: np.ndarray, trades: np.ndarray, events: np.ndarray) -> None:  # pragma: no cover - compiled
    """A simulated fill of ``qty`` units (signed) at ``price``, fee ``P_FEE`` of notional; never crosses zero."""
    fee = p[P_FEE]
    cash_delta = -(qty * price * (1.0 + fee)) if qty > 0.0 else -qty * price * (1.0 - fee)
    book(i, qty, price, abs(qty) * price * fee, cash_delta, reason, p, fs, st, fills, trades, events)


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
    book(i, qty, price, fee, cash_delta, reason, p, fs, st, fills, trades, events)


@njit(cache=True)
def book(i: int, qty: float, price: float, fee_amount: float, cash_delta: float, reason: int, p: np.ndarray,
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
        stop = fs[F_POS_STOP_LOSS] if not np.isnan(fs[F_POS_STOP_LOSS]) else p[P_STOP_LOSS]
        take = fs[F_POS_TAKE_PROFIT] if not np.isnan(fs[F_POS_TAKE_PROFIT]) else p[P_TAKE_PROFIT]
        fs[F_STOP] = average * (1.0 - direction * stop) if stop > 0 else np.nan
        fs[F_TAKE] = average * (1.0 + direction * take) if take > 0 else np.nan
        if units_before == 0.0:
            fs[F_EXTREME] = price
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
        fs[F_EXTREME] = np.nan
        if pnl < 0.0:
            st[I_CONSECUTIVE_LOSSES] += 1
            limit = p[P_MAX_CONSECUTIVE_LOSSES]
            if limit > 0 and st[I_CONSECUTIVE_LOSSES] >= limit:
                trip(i, RULE_CONSECUTIVE_LOSSES, st[I_CONSECUTIVE_LOSSES], limit, p, fs, st, events)
        else:
            st[I_CONSECUTIVE_LOSSES] = 0
    limit = p[P_MAX_TRADES_PER_DAY]
    if limit > 0 and st[I_FILLS_TODAY] >= limit:
        trip(i, RULE_TRADES_PER_DAY, st[I_FILLS_TODAY], limit, p, fs, st, events)
