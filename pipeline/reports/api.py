"""Read-only queries of the bot's HTTP API: the runtime's state and the bars of the series it trades.

Every query reads a bounded number of rows (the newest ``limit`` ones, or those after a known id), so a state
that holds months of trading is never read whole; candles read at most ``MAX_SOURCE_ROWS`` stored bars. Reads go
through the store's engine in plain read transactions: on a writable store they never take the writers' lock.
Rows come back as the state's table rows (``FillRow``, ``TradeRow``…), detached from their session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

import pandas as pd
from sqlalchemy import func
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.expression import SelectOfScalar

from pipeline.data.lake import Lake
from pipeline.data.resample import resample_bars
from pipeline.domain import DataError, Timeframe, parse_symbol
from pipeline.settings import Settings
from pipeline.state import (
    PORTFOLIO,
    BotState,
    BreakerEventRow,
    ControlCommand,
    EquityRow,
    FeedCursor,
    FillRow,
    LedgerRow,
    PositionRow,
    RuntimeEvent,
    StateStore,
    TradeRow,
)

FEED_VENUES: Final[dict[str, str | None]] = {"lake": None, "file": None, "us": "alpaca"}
"""Feed-key prefixes that are not the lake's venue name: a replay of the lake or of a file (any venue holding the
symbol), and Alpaca's live feed (stored under ``alpaca``)."""


class BadParameter(DataError):
    """A query parameter that cannot be served; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


_Row = TypeVar("_Row", bound=SQLModel)


def _rows(store: StateStore, query: SelectOfScalar[_Row]) -> list[_Row]:
    with Session(store.engine, expire_on_commit=False) as session:
        return list(session.exec(query))


def _first(store: StateStore, query: SelectOfScalar[_Row]) -> _Row | None:
    rows = _rows(store, query.limit(1))
    return rows[0] if rows else None


def _symbol(text: str) -> str:
    try:
        return parse_symbol(text)[0]
    except DataError as exc:
        raise BadParameter("symbol", str(exc)) from exc


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise BadParameter("limit", f"limit {limit} is not valid: give at least 1")


# ------------------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class BotStatus:
    """The runtime at a glance: its row, every ledger, the last portfolio mark, its feeds' cursors and the last
    reconciliation (``None`` where the runtime has not produced it yet)."""

    state: BotState | None
    ledgers: list[LedgerRow]
    last_mark: EquityRow | None
    feeds: list[FeedCursor]
    last_reconcile: RuntimeEvent | None


def status(store: StateStore) -> BotStatus:
    """The runtime's status from a handful of rows (one per sleeve and feed at most)."""
    return BotStatus(
        state=store.bot_state(),
        ledgers=_rows(store, select(LedgerRow).order_by(col(LedgerRow.sleeve))),
        last_mark=_first(store, select(EquityRow).where(col(EquityRow.sleeve) == PORTFOLIO)
                         .order_by(col(EquityRow.at).desc())),
        feeds=_rows(store, select(FeedCursor).order_by(col(FeedCursor.feed))),
        last_reconcile=latest_event(store, "reconcile"),
    )


def latest_event(store: StateStore, kind: str) -> RuntimeEvent | None:
    """The newest runtime event of ``kind``, or None."""
    return _first(store, select(RuntimeEvent).where(col(RuntimeEvent.kind) == kind)
                  .order_by(col(RuntimeEvent.at).desc(), col(RuntimeEvent.id).desc()))


# ------------------------------------------------------------------------------------------------ lists


def recent_trades(store: StateStore, limit: int, sleeve: str | None = None,
                  symbol: str | None = None) -> list[TradeRow]:
    """The last ``limit`` closed trades (of ``sleeve`` and ``symbol`` when given), newest exit first."""
    _check_limit(limit)
    query = select(TradeRow)
    if sleeve is not None:
        query = query.where(col(TradeRow.sleeve) == sleeve)
    if symbol is not None:
        query = query.where(col(TradeRow.symbol) == _symbol(symbol))
    return _rows(store, query.order_by(col(TradeRow.exit_time).desc(), col(TradeRow.id).desc()).limit(limit))


def equity_marks(store: StateStore, sleeve: str, limit: int) -> list[EquityRow]:
    """The last ``limit`` equity marks of ``sleeve`` (or the portfolio's), oldest first."""
    _check_limit(limit)
    query = (select(EquityRow).where(col(EquityRow.sleeve) == sleeve)
             .order_by(col(EquityRow.at).desc()).limit(limit))
    return list(reversed(_rows(store, query)))


def positions(store: StateStore, limit: int, include_flat: bool = False) -> list[PositionRow]:
    """Positions by sleeve then symbol (one row per sleeve and symbol): the held ones, or every one with
    ``include_flat``; at most ``limit``."""
    _check_limit(limit)
    rows = _rows(store, select(PositionRow).order_by(col(PositionRow.sleeve), col(PositionRow.symbol)))
    return [row for row in rows if include_flat or row.qty != 0][:limit]


def recent_breaker_events(store: StateStore, limit: int, sleeve: str | None = None) -> list[BreakerEventRow]:
    """The last ``limit`` breaker trips and releases (of ``sleeve`` when given), newest first."""
    _check_limit(limit)
    query = select(BreakerEventRow)
    if sleeve is not None:
        query = query.where(col(BreakerEventRow.sleeve) == sleeve)
    return _rows(store, query.order_by(col(BreakerEventRow.at).desc(), col(BreakerEventRow.id).desc())
                 .limit(limit))


def command(store: StateStore, command_id: int) -> ControlCommand | None:
    """One control command, or None when no command has that id."""
    return _first(store, select(ControlCommand).where(col(ControlCommand.id) == command_id))


def recent_commands(store: StateStore, limit: int) -> list[ControlCommand]:
    """The last ``limit`` control commands, newest first."""
    _check_limit(limit)
    return _rows(store, select(ControlCommand).order_by(col(ControlCommand.id).desc()).limit(limit))


# ------------------------------------------------------------------------------------------------ new rows


def last_ids(store: StateStore) -> tuple[int, int]:
    """The highest fill id and breaker event id stored (0 when none)."""
    with Session(store.engine) as session:
        fills = session.exec(select(func.max(FillRow.id))).one()
        breakers = session.exec(select(func.max(BreakerEventRow.id))).one()
    return int(fills or 0), int(breakers or 0)


def fills_after(store: StateStore, after_id: int, limit: int) -> list[FillRow]:
    """Up to ``limit`` fills stored after the fill ``after_id``, in the order they were stored."""
    _check_limit(limit)
    return _rows(store, select(FillRow).where(col(FillRow.id) > after_id).order_by(col(FillRow.id)).limit(limit))


def breaker_events_after(store: StateStore, after_id: int, limit: int) -> list[BreakerEventRow]:
    """Up to ``limit`` breaker events stored after the event ``after_id``, in the order they were stored."""
    _check_limit(limit)
    query = select(BreakerEventRow).where(col(BreakerEventRow.id) > after_id).order_by(col(BreakerEventRow.id))
    return _rows(store, query.limit(limit))


# ------------------------------------------------------------------------------------------------ candles


@dataclass(frozen=True)
class SeriesRef:
    """A series named by a feed key ``venue:SYMBOL:timeframe``; ``venue`` is the lake's (None: any venue)."""

    feed: str
    venue: str | None
    symbol: str
    timeframe: Timeframe


def runtime_series(store: StateStore) -> list[SeriesRef]:
    """The series the runtime reads (its feeds' cursors), those of the symbols its sleeves hold first."""
    traded = {row.symbol for row in _rows(store, select(PositionRow))}
    found = []
    for cursor in _rows(store, select(FeedCursor).order_by(col(FeedCursor.feed))):
        prefix, _, rest = cursor.feed.partition(":")
        symbol, _, timeframe = rest.rpartition(":")
        try:
            tf = Timeframe.parse(timeframe)
        except DataError:
            continue
        found.append(SeriesRef(cursor.feed, FEED_VENUES.get(prefix, prefix), symbol, tf))
    return sorted(found, key=lambda ref: ref.symbol not in traded)


@dataclass(frozen=True)
class Candles:
    """The last closed bars of one series: timestamp, open, high, low, close, volume."""

    venue: str
    symbol: str
    timeframe: Timeframe
    stored_timeframe: Timeframe
    """The stored timeframe the bars come from (resampled when it differs from ``timeframe``)."""
    bars: pd.DataFrame


MAX_SOURCE_ROWS: Final = 200_000
"""The most stored bars one candles request reads (plus the rest of the oldest period file it opens)."""
DEFAULT_CANDLES: Final = 500
"""How many bars a candles request without a limit gets (fewer where a resampled timeframe allows fewer)."""


def largest_limit(ratio: int) -> int:
    """The largest ``limit`` of bars made of ``ratio`` stored bars each that reads at most ``MAX_SOURCE_ROWS``
    (a resampled read takes one bar more, for the partial bar at its start)."""
    return MAX_SOURCE_ROWS if ratio == 1 else MAX_SOURCE_ROWS // ratio - 1


def _bounded_limit(limit: int | None, timeframe: Timeframe, stored: Timeframe) -> int:
    ratio = timeframe.seconds // stored.seconds
    most = largest_limit(ratio)
    if limit is None:
        return min(DEFAULT_CANDLES, most)
    _check_limit(limit)
    if limit > most:
        source = "" if ratio == 1 else f" resampled from {stored} bars ({ratio} per bar)"
        raise BadParameter("limit", f"limit {limit} is too large for timeframe {timeframe}{source}: a request "
                                    f"reads at most {MAX_SOURCE_ROWS:,} stored bars, so give limit at most {most} "
                                    f"for timeframe {timeframe}")
    return limit


def candles(settings: Settings, symbol: str, timeframe: Timeframe | None, limit: int | None,
            venue: str | None = None) -> Candles:
    """The last ``limit`` closed ``timeframe`` bars of ``symbol`` in the lake: the stored series of that timeframe,
    else resampled (complete bars only) from the coarsest stored timeframe that divides it, as the Chart page
    reads them (``pipeline.data.catalog.read_bars``); ``timeframe`` None is the finest one stored.

    At most ``MAX_SOURCE_ROWS`` stored bars are read (the lake's last period files, whole): a ``limit`` that
    would need more raises :class:`BadParameter` naming the largest allowed (:func:`largest_limit`); ``limit``
    None is ``DEFAULT_CANDLES``, or that largest one when smaller."""
    if limit is not None:
        _check_limit(limit)
    lake = Lake(settings.lake_dir)
    canonical = _symbol(symbol)
    found = lake.find(canonical, venue=venue)
    if not found:
        where = f" on venue {venue!r}" if venue else ""
        raise BadParameter("symbol", f"symbol {canonical!r}{where} is not in the lake; ingest it first")
    venues = sorted({s.instrument.venue for s in found})
    if len(venues) > 1:
        raise BadParameter("venue", f"symbol {canonical!r} is stored for several venues ({', '.join(venues)}): "
                                    "name one with venue")
    if timeframe is None:
        timeframe = min(s.timeframe for s in found)
    exact = [s for s in found if s.timeframe == timeframe]
    if exact:
        bars = lake.tail(exact[0], _bounded_limit(limit, timeframe, timeframe))
        return Candles(venues[0], canonical, timeframe, timeframe, bars.reset_index(drop=True))
    finer = sorted((s for s in found if s.timeframe < timeframe and timeframe.seconds % s.timeframe.seconds == 0),
                   key=lambda s: s.timeframe, reverse=True)
    if not finer:
        stored = ", ".join(sorted(str(s.timeframe) for s in found))
        raise BadParameter("timeframe", f"{canonical} has no {timeframe} bars and none of its stored timeframes "
                                        f"({stored}) divides {timeframe}")
    base = finer[0]
    ratio = timeframe.seconds // base.timeframe.seconds
    count = _bounded_limit(limit, timeframe, base.timeframe)
    raw = lake.tail(base, (count + 1) * ratio)
    bars = resample_bars(raw, base.timeframe, timeframe, base.instrument.asset_class).iloc[-count:]
    return Candles(venues[0], canonical, timeframe, base.timeframe, bars.reset_index(drop=True))
