"""The series the runtime trades, and the series a chart opens on.

The runtime keeps a cursor per feed it reads (``venue:SYMBOL:timeframe``, e.g. ``binance:BTC/USDT:1h``; a runtime
replaying the lake or a file writes ``lake:`` or ``file:`` for the venue). :func:`traded_feeds` lists them, the
most recently advanced first. :func:`chart_default` picks the series a chart opens on: the first traded feed the
lake can draw (its venue, or any venue holding the symbol for ``lake:`` and ``file:`` feeds), else the stored
series with the most bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pandas as pd
from sqlmodel import col, select

from pipeline.domain import DataError, Timeframe
from pipeline.reports.market import chart_timeframes
from pipeline.state import FeedCursor, StateStore

ANY_VENUE: Final = frozenset({"lake", "file"})
"""Feed venues that name no venue: the symbol is looked up on every venue of the lake."""


@dataclass(frozen=True)
class SeriesChoice:
    """A series to draw (``venue``, ``symbol``, ``timeframe``) and why it was chosen."""

    venue: str
    symbol: str
    timeframe: str
    why: str

    @property
    def name(self) -> str:
        """As the chart's symbol picker writes it: ``<venue> <symbol>``."""
        return f"{self.venue} {self.symbol}"


def traded_feeds(store: StateStore) -> list[str]:
    """The feeds the runtime has read bars from (``venue:SYMBOL:timeframe``), the most recently advanced first."""
    with store.transaction() as session:
        rows = session.exec(select(FeedCursor).order_by(col(FeedCursor.last_bar).desc(), col(FeedCursor.feed)))
        return [row.feed for row in rows]


def _parse_feed(feed: str) -> tuple[str, str, str] | None:
    """``venue:SYMBOL:timeframe`` as its three parts (the symbol may hold ':'); None when it is not one."""
    venue, _, rest = feed.partition(":")
    symbol, _, timeframe = rest.rpartition(":")
    if not venue or not symbol or not timeframe:
        return None
    try:
        return venue, symbol, str(Timeframe.parse(timeframe))
    except DataError:
        return None


def chart_default(catalog: pd.DataFrame, feeds: Sequence[str]) -> SeriesChoice | None:
    """The series a chart of the lake (``catalog``, from :func:`pipeline.reports.catalog`) opens on: the first of
    ``feeds`` (from :func:`traded_feeds`) the lake can draw, else the series with the most bars; None for an
    empty lake."""
    if catalog.empty:
        return None
    for feed in feeds:
        parsed = _parse_feed(feed)
        if parsed is None:
            continue
        venue, symbol, timeframe = parsed
        holding = catalog.loc[catalog["symbol"] == symbol]
        if venue not in ANY_VENUE:
            holding = holding.loc[holding["venue"] == venue]
        for candidate in holding.sort_values("bars", ascending=False, kind="stable")["venue"].unique():
            if timeframe in chart_timeframes(catalog, str(candidate), symbol):
                return SeriesChoice(str(candidate), symbol, timeframe, f"the runtime trades {feed}")
    richest = catalog.sort_values(["bars", "venue", "symbol", "seconds"], ascending=[False, True, True, True],
                                  kind="stable").iloc[0]
    return SeriesChoice(str(richest["venue"]), str(richest["symbol"]), str(richest["timeframe"]),
                        f"the series with the most bars ({int(richest['bars']):,})")
