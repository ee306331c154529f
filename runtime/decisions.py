"""Each sleeve's decisions as a stream: a closed bar advances its strategy (and its model score) by one step.

A ``SleeveDecisions`` holds the sleeve's ``DecisionStream`` (``pipeline.strategies``) and, for an ML sleeve, its
``ModelScorer``. ``decide(frame, rows)`` feeds the stream every bar of the feed's frame after the last one it
has seen, up to the batch's last bar, and returns the decisions at the batch's rows. The work per bar is
constant whatever the uptime, and the decisions are those of the batch computation over the same bars from
the same first bar (the anchor: the first bar the feed held when the sleeve started), because the batch form
of every strategy, feature and score is the same stream run in a loop.

Restarts restore the stream: ``state()`` is saved with the ledgers and the feed cursors in the same
transaction, and ``restore(state)`` continues exactly where the committed run stopped, so decisions after a
restart equal those of an unbroken run over the same bars. A runtime without saved decision state (or a model
whose feature spec changed) rebuilds its stream from the first bar its feed holds, and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import epoch_ms
from pipeline.strategies import Strategy, Targets
from runtime.models import ModelScorer

SCORE_COLUMN = "model_score"
CHUNK = 8192
"""History a stream catches up on is fed this many bars at a time, so its transient memory stays small."""


def _ms_at(frame: pd.DataFrame, row: int) -> int:
    return int(pd.Timestamp(frame["timestamp"].iloc[row]).value // 1_000_000)


class SleeveDecisions:
    """The streaming decisions of one sleeve (strategy, and model score when the strategy reads one)."""

    def __init__(self, strategy: Strategy, scorer: ModelScorer | None) -> None:
        self.strategy = strategy
        self.scorer = scorer
        self.stream = strategy.stream()
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

    def decide(self, frame: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exposure (NaN: none) and reason code at each of ``rows`` (ascending rows of ``frame``, -1: no bar)."""
        exposure = np.full(len(rows), np.nan)
        reason = np.full(len(rows), -1, dtype=np.int64)
        present = rows[rows >= 0]
        if not len(present):
            return exposure, reason
        last = int(present[-1])
        start = self._first_unfed(frame, int(present[0]), last)
        if start > last:
            return exposure, reason  # every bar of this batch was seen already
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
        exposure[seen] = targets.exposure[rows[seen] - first]
        reason[seen] = targets.reason[rows[seen] - first]
        return exposure, reason

    def _advance(self, bars: pd.DataFrame, score: bool) -> Targets:
        """The stream's decisions on the next ``bars``, with the model's scores when ``score`` (the gate's
        state does not depend on scores, so bars whose decisions are not used need features, not scores)."""
        if self.scorer is not None:
            bars = bars.assign(**{SCORE_COLUMN: self.scorer.advance(bars, score=score)})
        elif SCORE_COLUMN in self.strategy.requires:
            bars = bars.assign(**{SCORE_COLUMN: np.nan})
        return self.stream.update(bars)

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-serialisable)."""
        return {"fed": self.fed_ms, "strategy": self.stream.state(),
                "scorer": None if self.scorer is None else self.scorer.state()}

    def restore(self, state: dict[str, Any]) -> str:
        """Continue from ``state``; returns what was restored (for the recovery notes)."""
        self.stream.restore(state["strategy"])
        self.fed_ms = None if state.get("fed") is None else int(state["fed"])
        if self.scorer is None:
            return "decision stream restored"
        if self.scorer.restore(state.get("scorer")):
            return "decision stream and model features restored"
        return "decision stream restored; model features rebuilt from the first bar the feed holds"
