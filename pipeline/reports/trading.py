"""Read-only queries over the runtime's state: status, equity, the day's PnL, positions, working orders, the last
reconciliation with the venue, commands and trades.

Every function takes a :class:`~pipeline.state.StateStore` (the dashboard opens it with ``read_only``) and
writes nothing. Money stays exact (``Decimal``) in the summaries; frames meant for tables and charts carry
``float64`` columns.

"The day" of the day's PnL is the UTC calendar day of the last portfolio equity mark, i.e. of the last bar the
runtime processed: live, that is today; in a replay it is the replayed day, so the figure always describes
the state as the runtime last saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Literal

import pandas as pd
from sqlmodel import col, select

from pipeline.domain import DataError, parse_utc
from pipeline.domain.trading import OrderStatus, OrderType, Trade
from pipeline.state import PORTFOLIO, ControlCommand, RuntimeEvent, StateStore

Outcome = Literal["all", "winners", "losers"]
OUTCOMES: tuple[Outcome, ...] = ("all", "winners", "losers")
WORKING_COLUMNS = ("sleeve", "symbol", "kind", "side", "qty", "limit", "stop", "status", "reason", "expires_at",
                   "placed_at")
RECONCILE_FINDING, RECONCILE_VERDICT = "reconcile", "reconcile_verdict"
"""The runtime event kinds of a reconciliation's findings and of its verdict (what ``runtime.reconcile`` records)."""
FINDING_COLUMNS = ("at", "finding")
TRADE_COLUMNS = (
    "id", "sleeve", "symbol", "side", "qty", "entry_time", "entry_price", "exit_time", "exit_price", "pnl", "fees",
    "entry_reason", "exit_reason", "model_version",
)


@dataclass(frozen=True)
class SleeveStatus:
    """One sleeve's ledger: equity, cash, units held and the breakers it has latched."""

    sleeve: str
    equity: Decimal
    cash: Decimal
    units: Decimal
    tripped: tuple[str, ...]
    bars_seen: int


@dataclass(frozen=True)
class Overview:
    """The runtime at a glance (``None`` where the runtime has not produced the figure yet)."""

    mode: str
    status: str
    status_reason: str
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    equity: Decimal | None
    """The portfolio ledger's equity (sum of the sleeves, marked at the last close)."""
    last_mark: datetime | None
    """Time of the last portfolio equity mark (the last processed bar)."""
    day: date | None
    day_pnl: Decimal | None
    """Equity change over ``day``: last mark minus the last mark before the day began (None if none)."""
    day_realized_pnl: Decimal
    """Sum of the PnL (net of fees) of the trades closed on ``day``."""
    day_trades: int
    sleeves: tuple[SleeveStatus, ...]
    positions: pd.DataFrame
    """Open positions: sleeve, symbol, qty, avg_price, updated_at."""
    working: pd.DataFrame
    """Orders still working at a venue (``WORKING_COLUMNS``): entries and exits, and the protective stops that
    rest there while a position is held."""
    portfolio_tripped: bool
    reconciliation: Reconciliation | None = None
    """The last reconciliation with the venue (None: none yet, or a paper runtime, which has no venue)."""


@dataclass(frozen=True)
class Reconciliation:
    """The runtime's last reconciliation with its venue: when (the runtime's clock), its verdict (``ok``,
    ``mismatch`` or ``unavailable``) and what it said (the mismatches standing and the numbers compared), with the
    latest findings (``FINDING_COLUMNS``, newest first)."""

    at: datetime
    verdict: str
    detail: str
    findings: pd.DataFrame


def reconciliation(store: StateStore, findings: int = 10) -> Reconciliation | None:
    """The last reconciliation and the last ``findings`` findings; None when the runtime has not reconciled."""
    if findings < 1:
        raise DataError(f"findings {findings} is not valid: give at least 1")
    with store.transaction() as session:
        def latest(kind: str, limit: int) -> list[RuntimeEvent]:
            query = select(RuntimeEvent).where(col(RuntimeEvent.kind) == kind)
            return list(session.exec(query.order_by(col(RuntimeEvent.at).desc(), col(RuntimeEvent.id).desc())
                                     .limit(limit)))

        last = latest(RECONCILE_VERDICT, 1)
        found = latest(RECONCILE_FINDING, findings)
    if not last:
        return None
    verdict, _, detail = last[0].detail.partition(": ")
    return Reconciliation(at=last[0].at, verdict=verdict, detail=detail, findings=pd.DataFrame(
        [(pd.Timestamp(e.at), e.detail) for e in found], columns=list(FINDING_COLUMNS)))


def overview(store: StateStore, now: datetime) -> Overview:
    """Status, heartbeat age (against ``now``), equity, the day's PnL, breakers per sleeve and open positions."""
    state = store.bot_state()
    ledgers = store.ledgers()
    portfolio = ledgers.get(PORTFOLIO)
    marks = store.equity(PORTFOLIO)
    last_mark = marks[-1].at if marks else None
    day = last_mark.date() if last_mark is not None else None
    day_pnl: Decimal | None = None
    realized = Decimal(0)
    count = 0
    if day is not None and last_mark is not None:
        start = datetime.combine(day, time(0), tzinfo=UTC)
        before = [m for m in marks if m.at < start]
        if before:
            day_pnl = marks[-1].equity - before[-1].equity
        for trade in store.trades():
            if start <= trade.exit_time < start + timedelta(days=1):
                realized += trade.pnl
                count += 1
    heartbeat = state.heartbeat_at if state is not None else None
    sleeves = tuple(
        SleeveStatus(sleeve=row.sleeve, equity=row.equity, cash=row.cash, units=row.units,
                     tripped=tuple(t for t in row.tripped.split(",") if t), bars_seen=row.bars_seen)
        for name, row in ledgers.items() if name != PORTFOLIO
    )
    held = [p for p in store.positions() if p.qty != 0]
    positions = pd.DataFrame(
        [(p.sleeve, p.symbol, float(p.qty), float(p.avg_price), pd.Timestamp(p.updated_at)) for p in held],
        columns=["sleeve", "symbol", "qty", "avg_price", "updated_at"],
    )
    return Overview(
        working=working_orders(store),
        mode=state.mode if state is not None and state.mode else "-",
        status=state.status if state is not None else "no runtime state",
        status_reason=state.status_reason if state is not None else "",
        heartbeat_at=heartbeat,
        heartbeat_age_s=None if heartbeat is None else (now - heartbeat).total_seconds(),
        equity=portfolio.equity if portfolio is not None else None,
        last_mark=last_mark,
        day=day,
        day_pnl=day_pnl,
        day_realized_pnl=realized,
        day_trades=count,
        sleeves=sleeves,
        positions=positions,
        portfolio_tripped=portfolio is not None and bool(portfolio.tripped),
        reconciliation=reconciliation(store),
    )


def working_orders(store: StateStore) -> pd.DataFrame:
    """The orders a venue may still fill (new or partly filled), oldest first, with their kind and prices."""
    rows = store.orders({OrderStatus.NEW.value, OrderStatus.PARTIALLY_FILLED.value})
    return pd.DataFrame(
        [(o.sleeve, o.symbol, o.kind.value, o.side.value, float(o.qty),
          None if o.price is None or o.kind is not OrderType.LIMIT else float(o.price),
          None if o.stop_price is None else float(o.stop_price), o.status.value, o.reason,
          None if o.expires_at is None else pd.Timestamp(o.expires_at), pd.Timestamp(o.created_at)) for o in rows],
        columns=list(WORKING_COLUMNS),
    )


def equity_curve(store: StateStore, sleeve: str = PORTFOLIO) -> pd.DataFrame:
    """Equity marks of ``sleeve`` (default: the portfolio) with their drawdown from the running peak."""
    rows = store.equity(sleeve)
    frame = pd.DataFrame(
        [(pd.Timestamp(r.at), float(r.equity), float(r.cash), float(r.position_value)) for r in rows],
        columns=["timestamp", "equity", "cash", "position_value"],
    )
    frame["drawdown"] = frame["equity"] / frame["equity"].cummax() - 1.0 if len(frame) else pd.Series(dtype=float)
    return frame


def commands(store: StateStore, limit: int = 20) -> pd.DataFrame:
    """The last ``limit`` control commands, newest first, with their state (pending or acknowledged)."""
    if limit < 1:
        raise DataError(f"limit {limit} is not valid: give at least 1")
    with store.transaction() as session:
        query = select(ControlCommand).order_by(col(ControlCommand.id).desc()).limit(limit)
        rows = list(session.exec(query))
    return pd.DataFrame(
        [(r.id, r.command, r.sleeve or "all", r.source, pd.Timestamp(r.created_at),
          "pending" if r.acknowledged_at is None else "acknowledged",
          None if r.acknowledged_at is None else pd.Timestamp(r.acknowledged_at), r.result or "") for r in rows],
        columns=["id", "command", "sleeve", "source", "created_at", "state", "acknowledged_at", "result"],
    )


def sleeves(store: StateStore) -> list[str]:
    """Sleeve names known to the state (ledgers and trades), sorted."""
    names = {name for name in store.ledgers() if name != PORTFOLIO}
    names |= {t.sleeve for t in store.trades()}
    return sorted(names)


def _trade_rows(rows: list[tuple[int, Trade]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(number, t.sleeve, t.symbol, t.side, float(t.qty), pd.Timestamp(t.entry_time), float(t.entry_price),
          pd.Timestamp(t.exit_time), float(t.exit_price), float(t.pnl), float(t.fees), t.entry_reason, t.exit_reason,
          t.model_version or "") for number, t in rows],
        columns=list(TRADE_COLUMNS),
    )


@dataclass(frozen=True)
class TradeSelection:
    """The trades that pass a filter, and their totals (exact)."""

    frame: pd.DataFrame
    count: int
    pnl: Decimal
    fees: Decimal
    winners: int
    losers: int

    @property
    def win_rate(self) -> float | None:
        return self.winners / self.count if self.count else None


def trades(
    store: StateStore,
    sleeve: str | None = None,
    symbol: str | None = None,
    start: datetime | pd.Timestamp | str | None = None,
    end: datetime | pd.Timestamp | str | None = None,
    outcome: Outcome = "all",
) -> TradeSelection:
    """Closed trades (newest exit first) of ``sleeve`` and ``symbol`` that exited in ``[start, end)``;
    ``outcome`` keeps winners (PnL > 0) or losers (PnL < 0) only."""
    if outcome not in OUTCOMES:
        raise DataError(f"outcome {outcome!r} is not valid: use one of {', '.join(OUTCOMES)}")
    lo, hi = parse_utc(start, "start"), parse_utc(end, "end")
    if lo is not None and hi is not None and hi <= lo:
        raise DataError(f"end {hi} must be after start {lo}")
    kept: list[tuple[int, Trade]] = []
    for number, row in enumerate(store.trades(), 1):
        exit_time = pd.Timestamp(row.exit_time)
        if (sleeve is not None and row.sleeve != sleeve) or (symbol is not None and row.symbol != symbol):
            continue
        if (lo is not None and exit_time < lo) or (hi is not None and exit_time >= hi):
            continue
        if (outcome == "winners" and row.pnl <= 0) or (outcome == "losers" and row.pnl >= 0):
            continue
        kept.append((number, row))
    kept.reverse()
    trades = [t for _, t in kept]
    return TradeSelection(
        frame=_trade_rows(kept),
        count=len(trades),
        pnl=sum((t.pnl for t in trades), Decimal(0)),
        fees=sum((t.fees for t in trades), Decimal(0)),
        winners=sum(1 for t in trades if t.pnl > 0),
        losers=sum(1 for t in trades if t.pnl < 0),
    )


def trades_csv(selection: TradeSelection) -> bytes:
    """The selected trades as CSV (UTF-8, ISO timestamps)."""
    return selection.frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S%z").encode()
