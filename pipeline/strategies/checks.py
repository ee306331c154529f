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

Each check compares the two decision columns, ``exposure`` and ``reason``, and reports for each how many bars it
compared and the first bar that differs. ``tradeforge strategies check`` prints the report; the runtime refuses a
trader's own strategy that fails it, unless told ``--allow-unchecked``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import DataError, Timeframe
from pipeline.strategies.base import Strategy, Targets

TAIL = 50
"""Every prefix over the last ``TAIL`` bars is checked, plus sampled prefixes before them."""
SAMPLES = 150
CHUNKS = (1, 7, 2, 61, 3, 250)
"""The uneven chunk sizes the stream is fed in (cycled)."""
MODEL_COLUMN = "model_score"


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


def check_frame(strategy: Strategy, bars: pd.DataFrame) -> pd.DataFrame:
    """The frame the check feeds ``strategy``: the bars, plus a stand-in model score when it reads one; a
    ``DataError`` naming any other column it needs that the bars lack."""
    frame = with_model_score(bars) if MODEL_COLUMN in strategy.requires and MODEL_COLUMN not in bars else bars
    missing = [c for c in ("close", *strategy.requires) if c not in frame.columns]
    if missing:
        raise DataError(f"strategy {strategy.name!r} reads {', '.join(missing)}: give --data with those columns")
    return frame


def _texts(targets: Targets) -> np.ndarray:
    """Each bar's reason as text (reason codes index each run's own reasons, so runs compare their texts)."""
    return np.array([targets.reason_text(int(code)) for code in targets.reason], dtype=object)


def _compare(check: str, times: pd.Series, rows: np.ndarray, expected: tuple[np.ndarray, np.ndarray],
             got: tuple[np.ndarray, np.ndarray]) -> list[Finding]:
    """Findings for the frame rows ``rows``: the decisions ``expected`` against ``got`` (exposure and reason
    text, one of each per row compared)."""
    (exposure, reason), (other_exposure, other_reason) = expected, got
    same_exposure = (exposure == other_exposure) | (np.isnan(exposure) & np.isnan(other_exposure))
    found = []
    for column, same in (("exposure", same_exposure), ("reason", reason == other_reason)):
        differing = rows[~np.asarray(same, dtype=bool)]
        first = str(pd.Timestamp(times.iloc[differing[0]])) if len(differing) else None
        found.append(Finding(check, column, len(rows), len(differing), first))
    return found


def _prefix_lengths(rows: int, warmup: int) -> list[int]:
    start = max(warmup, 1)
    tail = set(range(max(start, rows - TAIL + 1), rows + 1))
    step = max(1, (rows - TAIL - start) // SAMPLES)
    return sorted(set(range(start, max(start, rows - TAIL), step)) | tail)


def _look_ahead(strategy: Strategy, frame: pd.DataFrame, full: Targets) -> list[Finding]:
    rows = np.array(_prefix_lengths(len(frame), strategy.warmup), dtype=np.int64) - 1
    exposure, reason = np.empty(len(rows)), np.empty(len(rows), dtype=object)
    for k, row in enumerate(rows):
        prefix = strategy.targets(frame.iloc[:row + 1])
        exposure[k], reason[k] = prefix.exposure[-1], prefix.reason_text(int(prefix.reason[-1]))
    return _compare("look-ahead", frame["timestamp"], rows, (full.exposure[rows], _texts(full)[rows]),
                    (exposure, reason))


def _warm_up(strategy: Strategy, frame: pd.DataFrame, full: Targets, history: int) -> list[Finding]:
    history = max(history, strategy.warmup)
    cut = max(1, len(frame) - 2 * history)
    rows = np.arange(cut + history, len(frame))
    later = strategy.targets(frame.iloc[cut:].reset_index(drop=True)) if len(rows) else full
    return _compare("warm-up", frame["timestamp"], rows, (full.exposure[rows], _texts(full)[rows]),
                    (later.exposure[rows - cut], _texts(later)[rows - cut]))


def _stream(strategy: Strategy, frame: pd.DataFrame, full: Targets) -> list[Finding]:
    stream = strategy.stream()
    exposures, reasons, start, n = [], [], 0, 0
    while start < len(frame):
        rows = frame.iloc[start:start + CHUNKS[n % len(CHUNKS)]]
        part = stream.update(rows)
        if len(part.exposure) != len(rows):
            raise DataError(f"strategy {strategy.name!r}: its stream returned {len(part.exposure)} decisions for "
                            f"{len(rows)} rows")
        exposures.append(part.exposure)
        reasons.append(_texts(part))
        start, n = start + len(rows), n + 1
        if n == len(CHUNKS):  # save and continue from the saved state, as a restarted runtime does
            saved = json.loads(json.dumps(stream.state()))
            stream = strategy.stream()
            stream.restore(saved)
    fed = (np.concatenate(exposures), np.concatenate(reasons)) if exposures else (np.empty(0), np.empty(0, object))
    return _compare("stream", frame["timestamp"], np.arange(len(frame)), (full.exposure, _texts(full)), fed)


def check_strategy(strategy: Strategy, bars: pd.DataFrame, history: int = 1000) -> CheckReport:
    """Run the three checks of the module documentation on ``bars`` (a canonical bar frame, plus any column the
    strategy reads)."""
    frame = check_frame(strategy, bars.reset_index(drop=True))
    full = strategy.targets(frame)
    findings = [*_look_ahead(strategy, frame, full), *_warm_up(strategy, frame, full, history),
                *_stream(strategy, frame, full)]
    decisions = int(np.count_nonzero(~np.isnan(full.exposure)))
    return CheckReport(strategy.name, len(frame), decisions, tuple(findings))
