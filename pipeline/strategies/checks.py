"""The check a strategy must pass before it trades: no look-ahead, no dependence on how much history precedes,
and a stream that continues exactly.

* **look-ahead** — the decision at bar ``i`` of a run over the first ``i + 1`` bars equals the decision at bar
  ``i`` of the run over every bar (sampled prefixes, every one of the last ``TAIL`` bars). A strategy that reads a
  later bar (a centred window, a shifted column, a whole-frame statistic) fails it.
* **warm-up** — decisions do not change when more history precedes the window: a run that starts ``history``
  bars before a bar decides that bar as a run from the first bar does. ``history`` is what a live runtime loads
  before trading (the setting ``warmup_bars``); a strategy that depends on every bar it has ever seen fails it.
* **stream** — the runtime's form: the stream fed in uneven chunks, saved and restored mid-way, decides every bar
  exactly as the batch form does.

Each check compares the decision columns, ``exposure``, ``reason`` and ``order`` (how a decision is executed: its
kind, price, time in force and protections; a limit price taken from a later bar is look-ahead too), and
reports for each how many bars it compared and the first bar that differs. ``tradeforge strategies check``
prints the report; the runtime refuses a trader's own strategy that fails it, unless told ``--allow-unchecked``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import DataError, Timeframe, epoch_ms
from pipeline.domain.orders import MARKET_ORDERS, ORDER_COLUMNS
from pipeline.strategies.base import Strategy, Targets
from pipeline.strategies.other_series import OtherSeries, series_of, with_series

TAIL = 50
"""Every prefix over the last ``TAIL`` bars is checked, plus sampled prefixes before them."""
SAMPLES = 150
CHUNKS = (1, 7, 2, 61, 3, 250)
"""The uneven chunk sizes the stream is fed in (cycled)."""
MODEL_COLUMN = "model_score"
OHLCV = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Finding:
    """One check on one decision column: bars compared, bars that differ, and the first of them."""

    check: str
    column: str
    compared: int
    differing: int
    first: str | None

    @property
    def passed(self) -> bool:
        return self.compared > 0 and self.differing == 0

    def line(self) -> str:
        if self.compared == 0:
            return f"{self.check:<10} {self.column:<8} not checked: too few bars"
        if self.passed:
            return f"{self.check:<10} {self.column:<8} ok ({self.compared} bars compared)"
        return (f"{self.check:<10} {self.column:<8} FAILED: {self.differing} of {self.compared} bars differ, "
                f"first at {self.first}")


@dataclass(frozen=True)
class CheckReport:
    """The verdict on one strategy over ``bars`` bars."""

    strategy: str
    bars: int
    decisions: int
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "bars": self.bars, "decisions": self.decisions, "passed": self.passed,
                "findings": [{**asdict(f), "passed": f.passed} for f in self.findings]}

    def text(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        head = f"{self.strategy}: {verdict} over {self.bars} bars ({self.decisions} decisions)"
        return "\n".join([head, *("  " + f.line() for f in self.findings)])

    def __str__(self) -> str:
        return json.dumps(self.to_json())


def sample_bars(count: int = 3000, symbol: str = "BTC/USDT", timeframe: str = "1h", seed: int = 7) -> pd.DataFrame:
    """The first ``count`` bars of the synthetic sample market (the same series on every machine): what the check
    runs on when no bars are given."""
    from pipeline.clock import FixedClock
    from pipeline.data.sources.sample import ANCHOR, SampleSource

    frame = Timeframe.parse(timeframe)
    source = SampleSource(FixedClock(ANCHOR + frame.delta * (count + 1)), seed)
    return source.fetch(source.instrument(symbol), frame, None).iloc[:count].reset_index(drop=True)


def with_model_score(bars: pd.DataFrame) -> pd.DataFrame:
    """``bars`` plus a stand-in ``model_score`` for strategies that read one: a deterministic, causal score (the
    rank of the latest return among the last 50). The check is about the strategy, not the model."""
    return bars.assign(**{MODEL_COLUMN: bars["close"].pct_change().rolling(50).rank(pct=True)})


def sample_series(series: OtherSeries, bars: pd.DataFrame, timeframe: Timeframe, seed: int = 7) -> pd.DataFrame:
    """The sample market's bars of ``series`` over the span of ``bars`` (a stand-in for the other series a strategy
    reads when the check runs on the sample market)."""
    from pipeline.clock import FixedClock
    from pipeline.data.sources.sample import SampleSource

    if bars.empty:
        return bars[["timestamp", *OHLCV]]
    first, last = pd.Timestamp(bars["timestamp"].iloc[0]), pd.Timestamp(bars["timestamp"].iloc[-1])
    source = SampleSource(FixedClock(last + timeframe.delta), seed)
    return source.fetch(source.instrument(series.symbol), series.frame, first.floor(series.frame.pandas_freq))


def row_timeframe(bars: pd.DataFrame) -> Timeframe:
    """The timeframe of ``bars``: their smallest gap (1h for fewer than two bars)."""
    gaps = np.diff(epoch_ms(bars["timestamp"])) if len(bars) > 1 else np.empty(0, dtype=np.int64)
    positive = gaps[gaps > 0]
    return Timeframe(int(positive.min()) // 1000) if len(positive) else Timeframe.parse("1h")


def check_frame(strategy: Strategy, bars: pd.DataFrame,
                series: Mapping[OtherSeries, pd.DataFrame] | None = None) -> pd.DataFrame:
    """The frame the check feeds ``strategy``: the bars, plus a stand-in model score when it reads one and the
    columns of the other series it reads (from ``series``, else the sample market's bars of those symbols); a
    ``DataError`` naming any other column it needs that the bars lack."""
    frame = with_model_score(bars) if MODEL_COLUMN in strategy.requires and MODEL_COLUMN not in bars else bars
    wanted = [spec for spec in series_of(strategy) if not set(spec.columns) <= set(frame.columns)]
    if wanted:
        tf = row_timeframe(frame)
        given = dict(series or {})
        frame = with_series(frame, tf, {spec: given[spec] if spec in given else sample_series(spec, frame, tf)
                                        for spec in wanted})
    missing = [c for c in ("close", *strategy.requires) if c not in frame.columns]
    if missing:
        raise DataError(f"strategy {strategy.name!r} reads {', '.join(missing)}: give --data with those columns")
    return frame


Decisions = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per compared row: the exposure, the reason as text (codes index each run's own reasons) and the order row
(NaN where there is no decision: how a non-decision would be executed does not matter)."""


def _decisions(targets: Targets, at: np.ndarray | None = None) -> Decisions:
    rows = np.arange(len(targets.exposure)) if at is None else at
    exposure = targets.exposure[rows]
    texts = np.array([targets.reason_text(int(code)) for code in targets.reason[rows]], dtype=object)
    table = MARKET_ORDERS if targets.orders is None else targets.orders
    orders = table[rows] if table.shape[0] > 1 else np.repeat(table, len(rows), axis=0)
    orders = np.where(np.isnan(exposure)[:, np.newaxis], np.nan, orders)
    return exposure, texts, orders


def _compare(check: str, times: pd.Series, rows: np.ndarray, expected: Decisions, got: Decisions) -> list[Finding]:
    """Findings for the frame rows ``rows``: the decisions ``expected`` against ``got`` (exposure, reason text and
    order: kind, price, time in force and protections; one of each per row compared)."""
    def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        equal: np.ndarray = (a == b) | (np.isnan(a) & np.isnan(b))
        return equal if equal.ndim == 1 else np.asarray(equal.all(axis=1))

    found = []
    for column, agrees in (("exposure", same(expected[0], got[0])), ("reason", expected[1] == got[1]),
                           ("order", same(expected[2], got[2]))):
        differing = rows[~np.asarray(agrees, dtype=bool)]
        first = str(pd.Timestamp(times.iloc[differing[0]])) if len(differing) else None
        found.append(Finding(check, column, len(rows), len(differing), first))
    return found


def _prefix_lengths(rows: int, warmup: int) -> list[int]:
    start = max(warmup, 1)
    tail = set(range(max(start, rows - TAIL + 1), rows + 1))
    step = max(1, (rows - TAIL - start) // SAMPLES)
    return sorted(set(range(start, max(start, rows - TAIL), step)) | tail)


def _stack(parts: list[Decisions]) -> Decisions:
    if not parts:
        return np.empty(0), np.empty(0, dtype=object), np.empty((0, ORDER_COLUMNS))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _look_ahead(strategy: Strategy, frame: pd.DataFrame, full: Targets) -> list[Finding]:
    rows = np.array(_prefix_lengths(len(frame), strategy.warmup), dtype=np.int64) - 1
    last = np.array([-1])
    prefixes = [_decisions(strategy.targets(frame.iloc[:row + 1]), last) for row in rows]
    return _compare("look-ahead", frame["timestamp"], rows, _decisions(full, rows), _stack(prefixes))


def _warm_up(strategy: Strategy, frame: pd.DataFrame, full: Targets, history: int) -> list[Finding]:
    history = max(history, strategy.warmup)
    cut = max(1, len(frame) - 2 * history)
    rows = np.arange(cut + history, len(frame))
    later = strategy.targets(frame.iloc[cut:].reset_index(drop=True)) if len(rows) else full
    return _compare("warm-up", frame["timestamp"], rows, _decisions(full, rows),
                    _decisions(later, rows - cut if len(rows) else rows))


def _stream(strategy: Strategy, frame: pd.DataFrame, full: Targets) -> list[Finding]:
    stream = strategy.stream()
    parts: list[Decisions] = []
    start, n = 0, 0
    while start < len(frame):
        rows = frame.iloc[start:start + CHUNKS[n % len(CHUNKS)]]
        part = stream.update(rows)
        if len(part.exposure) != len(rows):
            raise DataError(f"strategy {strategy.name!r}: its stream returned {len(part.exposure)} decisions for "
                            f"{len(rows)} rows")
        parts.append(_decisions(part))
        start, n = start + len(rows), n + 1
        if n == len(CHUNKS):  # save and continue from the saved state, as a restarted runtime does
            saved = json.loads(json.dumps(stream.state()))
            stream = strategy.stream()
            stream.restore(saved)
    return _compare("stream", frame["timestamp"], np.arange(len(frame)), _decisions(full), _stack(parts))


def check_strategy(strategy: Strategy, bars: pd.DataFrame, history: int = 1000,
                   series: Mapping[OtherSeries, pd.DataFrame] | None = None) -> CheckReport:
    """Run the three checks of the module documentation on ``bars`` (a canonical bar frame, plus any column the
    strategy reads; ``series``: the bars of the other series it reads, the sample market's when not given)."""
    frame = check_frame(strategy, bars.reset_index(drop=True), series)
    full = strategy.targets(frame)
    findings = [*_look_ahead(strategy, frame, full), *_warm_up(strategy, frame, full, history),
                *_stream(strategy, frame, full)]
    decisions = int(np.count_nonzero(~np.isnan(full.exposure)))
    return CheckReport(strategy.name, len(frame), decisions, tuple(findings))
