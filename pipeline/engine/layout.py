"""The engine's state layout: parameter, state and buffer slots of one sleeve's ledger, and the codes.

A sleeve's ledger is a handful of flat arrays, so the compiled step can run on them without Python objects:
``params`` (``P_*``, from ``EngineConfig.params``), the float state (``F_*``), the int state (``I_*``) and the
output buffers (fills, trades, breaker events, rejections, venue intents; their columns are ``*_COLUMNS``).
Only ``pipeline.engine`` reads these slots; everything else uses the named properties of ``Ledger``
(``pipeline.engine.ledger``), ``Engine`` (``pipeline.engine.core``) and ``PortfolioLedger``
(``pipeline.engine.portfolio_ledger``; the portfolio's own slots are laid out in ``portfolio_kernel``).
"""

from __future__ import annotations

import numpy as np

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
P_TARGET_FIRST = 21
"""1: when a position's stop and its take-profit are both inside one bar, the take-profit fills (default 0: the
stop, the adverse one)."""
P_TRAILING = 22
"""The configured trailing stop (fraction of the best price since entry); 0 for none."""
N_PARAMS = 23

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
F_WORK_KIND = 18
"""The pending order's kind (``pipeline.domain.orders``: market, limit, stop)."""
F_WORK_PRICE = 19
"""The pending limit or stop order's price (NaN for a market order)."""
F_WORK_EXPIRES = 20
"""The trading day at whose start the pending order is cancelled (NaN: good till cancelled)."""
F_WORK_STOP_LOSS = 21
F_WORK_TAKE_PROFIT = 22
F_WORK_TRAILING = 23
"""The protections the pending order gives the position it opens (NaN: the configured ones)."""
F_POS_STOP_LOSS = 24
F_POS_TAKE_PROFIT = 25
F_POS_TRAILING = 26
"""The protections of the position being opened or held (NaN: the configured ones)."""
F_EXTREME = 27
"""The best price since the position was opened (highest high long, lowest low short): the trailing stop's base."""
F_WORK_SIDE = 28
"""The pending order's side: +1 buys, -1 sells (a limit or stop order triggers by its side)."""
N_FSTATE = 29
LEGACY_FSTATE_SLOTS = F_WORK_KIND
"""The float state's length before order types; ``Ledger.restore`` completes a snapshot of it."""

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
LEGACY_ISTATE_SLOTS = I_RESET_PENDING
"""The int state's length before releases were recorded; ``Ledger.restore`` completes a snapshot of it."""

# ----------------------------------------------------------------------------------------------- codes
REASON_STOP_LOSS = -2
REASON_TAKE_PROFIT = -3
REASON_BREAKER_FLATTEN = -4
REASON_NONE = -1
REASON_OPERATOR_FLATTEN = -5
REASON_TRAILING_STOP = -6

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
REJECT_EXPIRED = 7

FILL_COLUMNS = 6  # bar, side, qty, price, fee, reason
TRADE_COLUMNS = 10  # entry_bar, exit_bar, side, qty, entry_price, exit_price, pnl, fees, entry_reason, exit_reason
EVENT_COLUMNS = 6  # bar, rule, value, threshold, action, bars_tripped
REJECT_COLUMNS = 5  # bar, code, aim, requested_units, reason
INTENT_COLUMNS = 7  # bar, signed qty, reference price, reason, kind, limit or stop price, expiry day
DUST_VALUE = 1e-9
"""Orders worth less than this (in quote currency) are not sent: they are rounding noise."""
SPARE_ROWS = 8
"""A step writes at most a few rows to each buffer (events: at most one release and one trip per engine rule);
the driver keeps at least this many free."""


def new_state() -> tuple[np.ndarray, np.ndarray]:
    """A fresh ledger's float and int state: no bar seen yet, nothing pending."""
    fstate = np.zeros(N_FSTATE)
    istate = np.zeros(N_ISTATE, dtype=np.int64)
    fstate[F_PENDING] = np.nan
    fstate[LEGACY_FSTATE_SLOTS:] = np.nan
    fstate[F_WORK_KIND] = 0.0
    istate[I_DAY] = np.iinfo(np.int64).min
    istate[I_PENDING_REASON] = REASON_NONE
    return fstate, istate
