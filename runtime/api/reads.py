"""The read-only endpoints: status, trades, candles, equity, positions and breaker events.

Each list takes a bounded ``limit``; before the runtime has created its state they answer as the dashboard does
(status "no runtime state", empty lists). Once it has, a ``sleeve`` that is not one of the runtime's gets 400.
Candles read at most ``pipeline.reports.api.MAX_SOURCE_ROWS`` stored bars per request: a resampled timeframe
allows a smaller ``limit``, which the 400 answer names.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, status

from pipeline.domain import DataError, Timeframe
from pipeline.reports import api as queries
from pipeline.state import PORTFOLIO
from runtime.api import schemas
from runtime.api.auth import reader
from runtime.api.context import Context
from runtime.api.sleeves import check_sleeve

MAX_LIMIT: Final = 1000
MAX_CANDLES: Final = 5000
SLEEVE_400: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": schemas.Problem, "description": "The sleeve is not one of the runtime's (the answer lists them)."}}

router = APIRouter(prefix="/api", tags=["state"], dependencies=[Depends(reader)],
                   responses={401: {"model": schemas.Problem, "description": "Missing or wrong token."}})


def _limit(most: int = MAX_LIMIT) -> Any:
    return Query(ge=1, le=most, description=f"How many rows at most (1 to {most}).")


def bad_parameter(exc: DataError, parameter: str | None = None) -> HTTPException:
    """A 400 answer naming the parameter at fault."""
    name = getattr(exc, "parameter", parameter)
    text = str(exc)
    named = name is None or text.startswith(f"{name} ")
    return HTTPException(status.HTTP_400_BAD_REQUEST, text if named else f"{name}: {text}")


@router.get("/status", summary="The runtime's status, heartbeat, sleeves and last reconciliation")
def get_status(context: Context) -> schemas.Status:
    store = context.store()
    if store is None:
        return schemas.status_of(None, [], None, [], None, context.now())
    found = queries.status(store)
    return schemas.status_of(found.state, found.ledgers, found.last_mark, found.feeds, found.last_reconcile,
                             context.now())


@router.get("/trades", summary="The last closed trades, newest exit first",
            responses={400: {"model": schemas.Problem,
                             "description": "The sleeve is not one of the runtime's, or the symbol is not valid."}})
def get_trades(
    context: Context,
    limit: Annotated[int, _limit()] = 100,
    sleeve: Annotated[str | None, Query(description="Only this sleeve.")] = None,
    symbol: Annotated[str | None, Query(description="Only this symbol (e.g. BTC/USDT).")] = None,
) -> list[schemas.Trade]:
    store = context.store()
    if store is None:
        return []
    check_sleeve(store, sleeve, portfolio=False, omitted="or omit it for every sleeve")
    try:
        rows = queries.recent_trades(store, limit, sleeve, symbol)
    except DataError as exc:
        raise bad_parameter(exc) from exc
    return [schemas.Trade.of(row) for row in rows]


@router.get("/candles", summary="The last closed bars of a series (default: the one the runtime trades)",
            responses={400: {"model": schemas.Problem, "description": "A parameter names no stored series, or the "
                                                                      "limit is too large for the timeframe."}})
def get_candles(
    context: Context,
    symbol: Annotated[str | None, Query(description="The symbol (default: the runtime's traded symbol).")] = None,
    timeframe: Annotated[str | None, Query(description="Bar timeframe, e.g. 1m, 5m, 1h (default: the runtime's for "
                                                       "its symbol, else the finest stored).")] = None,
    venue: Annotated[str | None, Query(description="The venue, when several hold the symbol.")] = None,
    limit: Annotated[int | None, Query(
        ge=1, le=MAX_CANDLES,
        description=f"How many bars at most (1 to {MAX_CANDLES}; default {queries.DEFAULT_CANDLES}). A resampled "
                    "timeframe allows fewer (a request reads at most "
                    f"{queries.MAX_SOURCE_ROWS:,} stored bars): the default is then the most it allows, and a "
                    "larger limit gets 400 naming it.")] = None,
) -> schemas.CandleSeries:
    tf: Timeframe | None = None
    if timeframe is not None:
        try:
            tf = Timeframe.parse(timeframe)
        except DataError as exc:
            raise bad_parameter(exc, "timeframe") from exc
    store = context.store()
    series = [] if store is None else queries.runtime_series(store)
    if symbol is None:
        if not series:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "symbol: the runtime trades no series yet; name one "
                                                             "with symbol (and timeframe)")
        chosen = series[0]
        symbol, venue = chosen.symbol, venue or chosen.venue
        tf = tf or chosen.timeframe
    elif tf is None:
        same = [ref for ref in series if ref.symbol == symbol.strip().upper()]
        if same:
            tf, venue = same[0].timeframe, venue or same[0].venue
    try:
        candles = queries.candles(context.settings, symbol, tf, limit, venue)
    except DataError as exc:
        raise bad_parameter(exc) from exc
    return schemas.CandleSeries.of(candles)


@router.get("/equity", summary="The last equity marks of the portfolio or a sleeve, oldest first",
            responses=SLEEVE_400)
def get_equity(
    context: Context,
    sleeve: Annotated[str, Query(description="A sleeve, or 'portfolio'.")] = PORTFOLIO,
    limit: Annotated[int, _limit()] = 500,
) -> schemas.EquityCurve:
    store = context.store()
    check_sleeve(store, sleeve, portfolio=True, omitted="'portfolio' is the default")
    rows = [] if store is None else queries.equity_marks(store, sleeve, limit)
    return schemas.EquityCurve(sleeve=sleeve, points=[schemas.EquityPoint.of(row) for row in rows])


@router.get("/positions", summary="Open positions by sleeve and symbol")
def get_positions(
    context: Context,
    limit: Annotated[int, _limit()] = MAX_LIMIT,
    include_flat: Annotated[bool, Query(description="Also the sleeves' flat positions.")] = False,
) -> list[schemas.Position]:
    store = context.store()
    rows = [] if store is None else queries.positions(store, limit, include_flat)
    return [schemas.Position.of(row) for row in rows]


@router.get("/breakers", summary="The last breaker trips and releases, newest first", responses=SLEEVE_400)
def get_breakers(
    context: Context,
    limit: Annotated[int, _limit()] = 100,
    sleeve: Annotated[str | None, Query(description="Only this sleeve ('portfolio' for the portfolio's).")] = None,
) -> list[schemas.BreakerEvent]:
    store = context.store()
    check_sleeve(store, sleeve, portfolio=True, omitted="or omit it for every sleeve")
    rows = [] if store is None else queries.recent_breaker_events(store, limit, sleeve)
    return [schemas.BreakerEvent.of(row) for row in rows]
