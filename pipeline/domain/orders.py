"""How a decision is executed: the order type, its price, its time in force, and the position's protections.

A strategy's decision says *what* exposure it wants (``pipeline.strategies.base.Targets``); an order table says
*how* to get there, one row per bar (or one row for every bar), with the columns ``ORDER_COLUMNS``:

* ``kind``: ``MARKET`` (the default), ``LIMIT`` (at ``price`` or better) or ``STOP`` (a stop-market order that
  becomes a market order once the market trades at ``price``);
* ``price``: the limit price or the stop's trigger (NaN for a market order);
* ``tif``: ``GTC`` (works until it fills or the strategy decides again) or ``DAY`` (cancelled at the end of the
  trading day it was placed in);
* ``stop_loss``, ``take_profit``, ``trailing_stop``: the protections of the position this order opens, as
  fractions of the entry price (a trailing stop: of the best price since the entry). NaN takes the engine's
  configured value (``EngineConfig``); 0 means none.

The engine (``pipeline.engine.kernel``) simulates these orders in a backtest and a paper run, and hands them to
a venue in live trading; its module documentation states the intrabar conventions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pipeline.domain.market import DataError

MARKET, LIMIT, STOP = 0, 1, 2
GTC, DAY = 0, 1
O_KIND, O_PRICE, O_TIF, O_STOP_LOSS, O_TAKE_PROFIT, O_TRAILING = range(6)
ORDER_COLUMNS = 6

OrderKind = Literal["market", "limit", "stop"]
TimeInForce = Literal["gtc", "day"]
KINDS: dict[str, int] = {"market": MARKET, "limit": LIMIT, "stop": STOP}
TIFS: dict[str, int] = {"gtc": GTC, "day": DAY}
KIND_NAMES: dict[int, OrderKind] = {MARKET: "market", LIMIT: "limit", STOP: "stop"}
TIF_NAMES: dict[int, TimeInForce] = {GTC: "gtc", DAY: "day"}

Column = float | np.ndarray | None


def market_orders() -> np.ndarray:
    """The one-row table of plain market orders with the engine's configured protections."""
    table = np.full((1, ORDER_COLUMNS), np.nan)
    table[0, O_KIND] = MARKET
    table[0, O_TIF] = GTC
    return table


MARKET_ORDERS = market_orders()
"""The one-row order table of plain market orders (shared: never written to)."""


def market_rows(*shape: int) -> np.ndarray:
    """A writable array of ``shape`` order rows (``shape + (ORDER_COLUMNS,)``), every one a plain market order:
    where a driver lays order tables on a clock before writing the rows a strategy gave."""
    return np.tile(MARKET_ORDERS[0], (*shape, 1))


def _column(name: str, value: Column, n: int, *, positive: bool, below_one: bool = False) -> np.ndarray:
    out = np.full(n, np.nan) if value is None else np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
    given = out[~np.isnan(out)]
    if np.isinf(given).any():
        raise DataError(f"order {name} must be finite")
    if positive and (given < 0).any():
        raise DataError(f"order {name} must be positive (0 = none), got {float(given[given < 0][0])}")
    if below_one and (given >= 1).any():
        raise DataError(f"order {name} is a fraction of the price and must be below 1, got "
                        f"{float(given[given >= 1][0])}")
    return out


def order_table(
    n: int,
    *,
    kind: OrderKind | np.ndarray = "market",
    price: Column = None,
    tif: TimeInForce = "gtc",
    stop_loss: Column = None,
    take_profit: Column = None,
    trailing_stop: Column = None,
) -> np.ndarray:
    """An ``(n, ORDER_COLUMNS)`` order table; scalars apply to every bar, arrays give one value per bar.

    ``kind`` is a name or an array of codes (``MARKET``, ``LIMIT``, ``STOP``). A limit or stop order needs a
    positive, finite ``price`` on every bar where it is used; ``DataError`` names the column and the problem.
    """
    if isinstance(kind, str):
        if kind not in KINDS:
            raise DataError(f"order kind {kind!r} is not one of {', '.join(KINDS)}")
        kinds = np.full(n, float(KINDS[kind]))
    else:
        kinds = np.broadcast_to(np.asarray(kind, dtype=np.float64), (n,))
        unknown = ~np.isin(kinds, (MARKET, LIMIT, STOP))
        if unknown.any():
            raise DataError(f"order kind code {kinds[unknown][0]} is not MARKET (0), LIMIT (1) or STOP (2)")
    if tif not in TIFS:
        raise DataError(f"order time in force {tif!r} is not one of {', '.join(TIFS)}")
    prices = _column("price", price, n, positive=True)
    priced = kinds != MARKET
    missing = priced & ~(prices > 0)
    if missing.any():
        raise DataError(f"a {KIND_NAMES[int(kinds[missing][0])]} order needs a positive price "
                        f"(bar {int(np.flatnonzero(missing)[0])})")
    table = np.empty((n, ORDER_COLUMNS))
    table[:, O_KIND] = kinds
    table[:, O_PRICE] = np.where(priced, prices, np.nan)
    table[:, O_TIF] = TIFS[tif]
    table[:, O_STOP_LOSS] = _column("stop_loss", stop_loss, n, positive=True, below_one=True)
    table[:, O_TAKE_PROFIT] = _column("take_profit", take_profit, n, positive=True)
    table[:, O_TRAILING] = _column("trailing_stop", trailing_stop, n, positive=True, below_one=True)
    return table
