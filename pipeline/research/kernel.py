"""The compiled sweep: many parameter sets through the engine's one per-bar step (``pipeline.engine.kernel.step``)
in one call, in parallel over the sets, keeping only what the metrics need.

Each set gets a fresh copy of the ledger's state and small output buffers that are recycled (their counters set
back to zero, as a restored ledger's are) once they fill: the step only ever appends to them. Per set it keeps
the equity at every close in a scratch curve, reduces that curve with the backtest's own compiled reductions
(``pipeline.backtest.equity_stats``), and adds the closed trades, the bars in the market, and the sums of the
per-bar returns and their squares in contiguous blocks of bars (for the probability of backtest overfitting; NaN
for a block whose returns are undefined because the equity before one of them was not positive).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from pipeline.backtest.equity_stats import MOMENTS, max_drawdown, return_moments
from pipeline.engine.kernel import step
from pipeline.engine.layout import (
    EVENT_COLUMNS,
    F_UNITS,
    FILL_COLUMNS,
    I_N_EVENTS,
    I_N_FILLS,
    I_N_INTENTS,
    I_N_REJECTS,
    I_N_TRADES,
    INTENT_COLUMNS,
    REJECT_COLUMNS,
    SPARE_ROWS,
    TRADE_COLUMNS,
)

# the columns of a set's row of figures: the equity-curve moments, then these
DRAWDOWN = MOMENTS
FINAL = MOMENTS + 1
TRADES = MOMENTS + 2
IN_MARKET = MOMENTS + 3
INITIAL = MOMENTS + 4
"""The equity at the first bar's close (below the cash when that bar's close already filled an order)."""
FIGURES = MOMENTS + 5

_ROWS = 64  # rows per recycled output buffer


@njit(cache=True, nogil=True)
def _one(b: int, days: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray, closes: np.ndarray,
         sessions: np.ndarray, aims: np.ndarray, reasons: np.ndarray, orders: np.ndarray, p: np.ndarray,
         fs0: np.ndarray, st0: np.ndarray, bounds: np.ndarray, figures: np.ndarray, sums: np.ndarray,
         squares: np.ndarray) -> None:  # pragma: no cover - compiled
    n = opens.shape[0]
    fs = fs0.copy()
    st = st0.copy()
    fills = np.zeros((_ROWS + SPARE_ROWS, FILL_COLUMNS))
    trades = np.zeros((_ROWS + SPARE_ROWS, TRADE_COLUMNS))
    events = np.zeros((_ROWS + SPARE_ROWS, EVENT_COLUMNS))
    rejects = np.zeros((_ROWS + SPARE_ROWS, REJECT_COLUMNS))
    intents = np.zeros((_ROWS + SPARE_ROWS, INTENT_COLUMNS))
    equity = np.empty(n)
    per_bar = orders.shape[1] > 1
    closed = 0
    in_market = 0
    for i in range(n):
        if st[I_N_FILLS] > _ROWS or st[I_N_TRADES] > _ROWS or st[I_N_EVENTS] > _ROWS \
                or st[I_N_REJECTS] > _ROWS or st[I_N_INTENTS] > _ROWS:
            closed += st[I_N_TRADES]
            st[I_N_FILLS] = 0
            st[I_N_TRADES] = 0
            st[I_N_EVENTS] = 0
            st[I_N_REJECTS] = 0
            st[I_N_INTENTS] = 0
        equity[i] = step(i, days[i], opens[i], highs[i], lows[i], closes[i], sessions[i], aims[b, i], reasons[b, i],
                         orders[b, i if per_bar else 0], p, fs, st, fills, trades, events, rejects, intents)
        if fs[F_UNITS] != 0.0:
            in_market += 1
    closed += st[I_N_TRADES]
    figures[b, :MOMENTS] = return_moments(equity)
    figures[b, DRAWDOWN] = max_drawdown(equity)
    figures[b, FINAL] = equity[n - 1]
    figures[b, TRADES] = closed
    figures[b, IN_MARKET] = in_market
    figures[b, INITIAL] = equity[0]
    for s in range(bounds.shape[0] - 1):
        total = 0.0
        square = 0.0
        for i in range(max(bounds[s], 1), bounds[s + 1]):
            if not equity[i - 1] > 0.0:  # returns are undefined once the equity is gone
                total = np.nan
                square = np.nan
                break
            r = equity[i] / equity[i - 1] - 1.0
            total += r
            square += r * r
        sums[b, s] = total
        squares[b, s] = square


@njit(cache=True, nogil=True, parallel=True)
def sweep(days: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray, closes: np.ndarray,
          sessions: np.ndarray, aims: np.ndarray, reasons: np.ndarray, orders: np.ndarray, p: np.ndarray,
          fs0: np.ndarray, st0: np.ndarray, bounds: np.ndarray, figures: np.ndarray, sums: np.ndarray,
          squares: np.ndarray) -> None:  # pragma: no cover - compiled
    """Run every row of ``aims`` / ``reasons`` (one parameter set each; ``orders[b]`` its order table, one row or
    one per bar) over the bars from the state ``fs0`` / ``st0`` under the parameters ``p``; write set ``b``'s
    figures (``figures[b]``, columns above) and its per-block return sums (``sums[b]``, ``squares[b]``; block
    ``s`` holds the returns of bars ``bounds[s] .. bounds[s+1]-1``, the first bar having none)."""
    for b in prange(aims.shape[0]):
        _one(b, days, opens, highs, lows, closes, sessions, aims, reasons, orders, p, fs0, st0, bounds, figures,
             sums, squares)
