"""What the engine hands over: the names of its reasons, rules, actions and rejections, and a run's frames.

``result_frames`` turns the kernel's output rows (fills, trades, breaker events, rejections) and bar marks into
an :class:`EngineResult`. A runtime drains the engine after every batch, when most of those row sets are
empty: an empty frame is built once per kind and handed out as a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.domain import TIMESTAMP_DTYPE
from pipeline.engine import layout

ENGINE_REASONS = {
    layout.REASON_STOP_LOSS: "stop_loss",
    layout.REASON_TAKE_PROFIT: "take_profit",
    layout.REASON_BREAKER_FLATTEN: "breaker_flatten",
    layout.REASON_OPERATOR_FLATTEN: "operator_flatten",
    layout.REASON_TRAILING_STOP: "trailing_stop",
    layout.REASON_NONE: "",
}
RULES = {
    layout.RULE_DRAWDOWN: "max_drawdown",
    layout.RULE_DAILY_LOSS: "daily_loss",
    layout.RULE_CONSECUTIVE_LOSSES: "consecutive_losses",
    layout.RULE_TRADES_PER_DAY: "trades_per_day",
    layout.RULE_MANUAL_PAUSE: "paused",
    layout.RULE_PORTFOLIO: "portfolio_drawdown",
}
ACTIONS = {
    layout.ACTION_TRIP: ("trip", ""),
    layout.ACTION_RELEASE_NEW_DAY: ("release", "new_day"),
    layout.ACTION_RELEASE_COOLDOWN: ("release", "cooldown"),
    layout.ACTION_RELEASE_OPERATOR: ("release", "operator"),
}
"""Event action codes → (``action``, ``released_by``) of the breaker events frame."""
REJECTIONS = {
    layout.REJECT_MAX_POSITION: "resized: max position",
    layout.REJECT_LEVERAGE: "resized: cash / leverage",
    layout.REJECT_SESSION: "rejected: market closed",
    layout.REJECT_MIN_NOTIONAL: "rejected: below minimum notional",
    layout.REJECT_BREAKER: "blocked: circuit breaker tripped",
    layout.REJECT_SHORT: "resized: short selling not allowed",
    layout.REJECT_EXPIRED: "cancelled: day order expired unfilled",
}

@dataclass(frozen=True)
class EngineResult:
    """What a run produced, as frames a trader can read (times are bar open times, UTC).

    ``equity`` has one row per bar (``timestamp, equity, cash, position_value, units, paused``; ``paused``: a
    breaker or an operator's pause was tripped at the bar's close, so its decision could not open or grow a
    position). ``breaker_events`` has one row per trip and per release: ``timestamp, rule, value, threshold,
    action`` (``trip`` or ``release``), ``released_by`` (``new_day``, ``cooldown`` or ``operator``; empty for
    a trip) and ``bars_tripped`` (for a release, how many bars the rule had been tripped).
    """

    fills: pd.DataFrame
    trades: pd.DataFrame
    equity: pd.DataFrame
    rejections: pd.DataFrame
    breaker_events: pd.DataFrame
    open_units: float
    cash: float

    @property
    def paused_bars(self) -> int:
        """Bars at whose close a breaker (or a pause) blocked new entries."""
        return int(self.equity["paused"].sum())



Stamp = Callable[[np.ndarray], pd.Series]
"""Bar numbers (float or int array) → their open times as a UTC timestamp series."""
_EMPTY: dict[str, pd.DataFrame] = {}


def stamps(ms: np.ndarray) -> pd.Series:
    """Open times in epoch milliseconds as a UTC timestamp series."""
    return pd.Series(pd.to_datetime(ms, unit="ms", utc=True)).astype(TIMESTAMP_DTYPE)


def reason_texts(codes: np.ndarray, reasons: tuple[str, ...]) -> list[str]:
    """Reason codes → texts: the engine's own (negative codes) or the strategy's (``reasons[code]``)."""
    return [ENGINE_REASONS[c] if c < 0 else (reasons[c] if c < len(reasons) else "") for c in codes.astype(int)]


def _frame(kind: str, rows: np.ndarray, build: Callable[[np.ndarray], dict[str, object]]) -> pd.DataFrame:
    if len(rows):
        return pd.DataFrame(build(rows))
    empty = _EMPTY.get(kind)
    if empty is None:
        empty = _EMPTY[kind] = pd.DataFrame(build(rows))
    return empty.copy()


def result_frames(fills: np.ndarray, trades: np.ndarray, events: np.ndarray, rejects: np.ndarray,
                  stamp: Stamp, reasons: tuple[str, ...], marks: dict[str, np.ndarray], open_units: float,
                  cash: float) -> EngineResult:
    """The frames of a run from the kernel's rows and the bar marks (``times`` in ms, ``equity``, ``cash``,
    ``units``, ``closes``, ``paused``, one value per bar)."""

    def texts(codes: np.ndarray) -> list[str]:
        return reason_texts(codes, reasons)

    fill_frame = _frame("fills", fills, lambda f: {
        "timestamp": stamp(f[:, 0]),
        "side": np.where(f[:, 1] > 0, "buy", "sell"),
        "qty": f[:, 2],
        "price": f[:, 3],
        "notional": f[:, 2] * f[:, 3],
        "fee": f[:, 4],
        "reason": texts(f[:, 5]),
        "bar": f[:, 0].astype(np.int64),
    })
    trade_frame = _frame("trades", trades, lambda t: {
        "entry_time": stamp(t[:, 0]),
        "exit_time": stamp(t[:, 1]),
        "side": np.where(t[:, 2] > 0, "long", "short"),
        "qty": t[:, 3],
        "entry_price": t[:, 4],
        "exit_price": t[:, 5],
        "pnl": t[:, 6],
        "fees": t[:, 7],
        "entry_reason": texts(t[:, 8]),
        "exit_reason": texts(t[:, 9]),
        "bars_held": (t[:, 1] - t[:, 0]).astype(np.int64),
    })

    def event_columns(e: np.ndarray) -> dict[str, object]:
        actions = [ACTIONS[int(a)] for a in e[:, 4]]
        return {
            "timestamp": stamp(e[:, 0]),
            "rule": [RULES[int(r)] for r in e[:, 1]],
            "value": e[:, 2],
            "threshold": e[:, 3],
            "action": [a for a, _ in actions],
            "released_by": [by for _, by in actions],
            "bars_tripped": e[:, 5].astype(np.int64),
        }

    event_frame = _frame("events", events, event_columns)
    reject_frame = _frame("rejections", rejects, lambda r: {
        "timestamp": stamp(r[:, 0]),
        "what": [REJECTIONS[int(c)] for c in r[:, 1]],
        "aim": r[:, 2],
        "units": r[:, 3],
        "reason": texts(r[:, 4]),
    })
    curve = pd.DataFrame({
        "timestamp": stamps(marks["times"]),
        "equity": marks["equity"],
        "cash": marks["cash"],
        "position_value": marks["units"] * marks["closes"],
        "units": marks["units"],
        "paused": np.asarray(marks["paused"], dtype=np.bool_),
    })
    return EngineResult(fill_frame, trade_frame, curve, reject_frame, event_frame, open_units, cash)
