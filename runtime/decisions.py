"""Each sleeve's decisions as a stream: a closed bar advances its strategy (and its model score) by one step.

A ``SleeveDecisions`` holds the sleeve's ``DecisionStream`` (``pipeline.strategies``) and, for an ML sleeve, its
``ModelScorer``. ``decide(frame, rows)`` feeds the stream every bar of the feed's frame after the last one it
has seen, up to the batch's last bar, and returns the decisions at the batch's rows. The work per bar is
constant whatever the uptime, and the decisions are those of the batch computation over the same bars from
the same first bar (the anchor: the first bar the feed held when the sleeve started), because the batch form
of every strategy, feature and score is the same stream run in a loop.

A sleeve whose strategy reads other series (``pipeline.strategies.other_series``) gets their columns added to the
bars it is fed: for each other series, a ``SeriesCursor`` takes from that series' frame in the feed the bars
closed by the last row's close (found by time, so trims and restarts of the feed do not matter) and carries the
last visible bar, so a row sees exactly the bar a backtest over the same bars sees (the feed has delivered it:
``runtime.feeds.waiting`` holds a row back until it has).

Restarts restore the stream: ``state()`` is saved with the ledgers and the feed cursors in the same
transaction, and ``restore(state)`` continues exactly where the committed run stopped, so decisions after a
restart equal those of an unbroken run over the same bars. A runtime without saved decision state (or a model
whose feature spec changed) rebuilds its stream from the first bar its feed holds, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import Timeframe, epoch_ms
from pipeline.domain.orders import market_rows
from pipeline.strategies import Strategy, Targets
from pipeline.strategies.other_series import SeriesCursor, series_of
from runtime.models import ModelScorer

SCORE_COLUMN = "model_score"
CHUNK = 8192
"""History a stream catches up on is fed this many bars at a time, so its transient memory stays small."""


def _ms_at(frame: pd.DataFrame, row: int) -> int:
    return int(pd.Timestamp(frame["timestamp"].iloc[row]).value // 1_000_000)


@dataclass(frozen=True)
class Decided:
    """A sleeve's decisions at a batch's rows (``rows``: frame rows, -1 where the sleeve has no bar): the exposure
    (NaN: none), the reason code and, when the strategy says how to execute them, their order table rows."""

    rows: np.ndarray
    exposure: np.ndarray
    reason: np.ndarray
    orders: np.ndarray | None = None


class SleeveDecisions:
    """The streaming decisions of one sleeve (strategy, and model score when the strategy reads one)."""

    def __init__(self, strategy: Strategy, scorer: ModelScorer | None, timeframe: Timeframe | None = None,
                 series_keys: tuple[str, ...] = ()) -> None:
        self.strategy = strategy
        self.scorer = scorer
        self.stream = strategy.stream()
        specs = series_of(strategy)
        if len(series_keys) != len(specs) or (specs and timeframe is None):
            raise ValueError(f"sleeve of {strategy.name!r}: one feed key per other series it reads, and its timeframe")
        self.series = [(key, SeriesCursor(spec, timeframe)) for spec, key in zip(specs, series_keys, strict=True)
                       if timeframe is not None]
        """Each other series the strategy reads: its feed key and its cursor."""
        self.frames: Mapping[str, pd.DataFrame] = {}
        self.fed_ms: int | None = None
        """Open time (epoch ms) of the last bar the stream has seen; None before the first."""

    def _first_unfed(self, frame: pd.DataFrame, first: int, last: int) -> int:
        """The frame row after the last bar the stream has seen (0 for a stream that has seen none)."""
        if self.fed_ms is None:
            return 0
        if first > 0 and _ms_at(frame, first - 1) == self.fed_ms:
            return first  # the usual case: the batch continues the bars already seen
        stamps = epoch_ms(frame["timestamp"].iloc[: last + 1])
        return int(np.searchsorted(stamps, self.fed_ms, side="right"))

    def decide(self, frame: pd.DataFrame, rows: np.ndarray,
               frames: Mapping[str, pd.DataFrame] | None = None) -> Decided:
        """The decisions at each of ``rows`` (ascending rows of ``frame``, -1: no bar); ``frames``: the feed's
        frames, where the other series the strategy reads are found."""
        self.frames = frames or {}
        decided = Decided(rows, np.full(len(rows), np.nan), np.full(len(rows), -1, dtype=np.int64))
        present = rows[rows >= 0]
        if not len(present):
            return decided
        last = int(present[-1])
        start = self._first_unfed(frame, int(present[0]), last)
        if start > last:
            return decided  # every bar of this batch was seen already
        scorer = self.scorer
        if scorer is not None and scorer.needs_history and start > 0:
            for head in range(0, start, CHUNK):  # a newly loaded feature spec starts at the anchor
                scorer.advance(frame.iloc[head : min(start, head + CHUNK)], score=False)
        first = max(int(present[0]), start)
        for head in range(start, first, CHUNK):  # history the stream had not seen: no decision of it is used
            self._advance(frame.iloc[head : min(first, head + CHUNK)], score=False)
        targets = self._advance(frame.iloc[first : last + 1], score=True)
        self.fed_ms = _ms_at(frame, last)
        seen = rows >= first
        at = rows[seen] - first
        decided.exposure[seen] = targets.exposure[at]
        decided.reason[seen] = targets.reason[at]
        if targets.orders is not None:
            orders = market_rows(len(rows))
            orders[seen] = targets.orders[at] if targets.orders.shape[0] > 1 else targets.orders[0]
            decided = Decided(rows, decided.exposure, decided.reason, orders)
        return decided

    def _advance(self, bars: pd.DataFrame, score: bool) -> Targets:
        """The stream's decisions on the next ``bars``, with the model's scores when ``score`` (the gate's
        state does not depend on scores, so bars whose decisions are not used need features, not scores)."""
        if self.scorer is not None:
            bars = bars.assign(**{SCORE_COLUMN: self.scorer.advance(bars, score=score)})
        elif SCORE_COLUMN in self.strategy.requires:
            bars = bars.assign(**{SCORE_COLUMN: np.nan})
        if self.series and len(bars):
            bars = bars.assign(**self._other_columns(bars))
        return self.stream.update(bars)

    def _other_columns(self, bars: pd.DataFrame) -> dict[str, pd.Series]:
        """The aligned columns of the other series for ``bars``, from the bars their frames hold."""
        close = int(epoch_ms(bars["timestamp"].iloc[-1:])[0]) + self.series[0][1].rows_timeframe.millis
        columns: dict[str, pd.Series] = {}
        for key, cursor in self.series:
            other = self.frames.get(key)
            if other is None:
                raise KeyError(f"the feed has no frame {key!r} of the series {cursor.series.text()}")
            after, through = cursor.wanted(close)
            stamps = other["timestamp"]
            first = 0 if after is None else int(stamps.searchsorted(pd.Timestamp(after, unit="ms", tz="UTC"), "right"))
            last = int(stamps.searchsorted(pd.Timestamp(through, unit="ms", tz="UTC"), "right"))
            aligned = cursor.update(bars, other.iloc[first:max(first, last)])
            columns.update({name: aligned[name] for name in aligned.columns})
        return columns

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-serialisable)."""
        return {"fed": self.fed_ms, "strategy": self.stream.state(),
                "scorer": None if self.scorer is None else self.scorer.state(),
                "series": {key: cursor.state() for key, cursor in self.series}}

    def restore(self, state: dict[str, Any]) -> str:
        """Continue from ``state``; returns what was restored (for the recovery notes)."""
        self.stream.restore(state["strategy"])
        self.fed_ms = None if state.get("fed") is None else int(state["fed"])
        saved = state.get("series") or {}
        for key, cursor in self.series:
            if key in saved:
                cursor.restore(saved[key])
        if self.scorer is None:
            return "decision stream restored"
        if self.scorer.restore(state.get("scorer")):
            return "decision stream and model features restored"
        return "decision stream restored; model features rebuilt from the first bar the feed holds"
