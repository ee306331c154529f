"""Training targets (forward returns and up/down labels) and leak-free time splits of a series.

Labels look *forward* by construction: the label of bar ``i`` uses the close ``H`` bars later. They are targets
for training and evaluation only, never inputs to a model or a strategy.

For bar ``i`` with close ``c`` and horizon ``H`` (``LabelSpec.horizon``):

* ``forward_return[i] = log(c[i+H] / c[i])``, NaN on the last ``H`` bars (no bar ``i + H`` yet);
* classification: ``label = 1.0`` when ``forward_return > dead_zone`` (up), ``0.0`` when
  ``forward_return < -dead_zone`` (down), NaN when ``|forward_return| <= dead_zone`` (too small a move to
  call) and on the last ``H`` bars;
* regression: ``label = forward_return`` (the dead zone does not apply).

Splits hold 0-based row positions of the feature/label frame in time order. Because a label at row ``i``
reads rows up to ``i + H``, a training row too close to the validation block would have seen validation
prices: the *purge* drops the last ``H`` rows of every block that is followed by another (train before
validation, validation before test), so for every kept row ``i`` of a block, ``i + H`` is still inside that
block's raw range. The *embargo* then skips ``E >= H`` rows (default ``E = H``) at the start of the next
block, which keeps serially correlated neighbours apart. Between the last row of one block and the first of
the next there are therefore ``H + E`` unused rows. Rows whose label is NaN stay in the splits; the trainer
drops them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipeline.domain import DataError


class LabelSpec(BaseModel):
    """What a model learns to predict; ``hash()`` names it. Immutable; unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: int = Field(default=12, ge=1, description="Bars ahead of the forward return.")
    dead_zone: float = Field(
        default=0.002, ge=0.0, allow_inf_nan=False, description="Absolute log return at or below which no class."
    )
    kind: Literal["classification", "regression"] = "classification"

    def canonical_json(self) -> str:
        """The spec as JSON with sorted keys and no whitespace: the text that ``hash()`` digests."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """First 12 hex digits of the SHA-256 of ``canonical_json()``."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """``log(close[i + horizon] / close[i])``; NaN on the last ``horizon`` rows."""
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] > horizon:
        out[:-horizon] = np.log(close[horizon:] / close[:-horizon])
    return out


def make_labels(bars: pd.DataFrame, spec: LabelSpec) -> pd.DataFrame:
    """``timestamp``, ``forward_return`` and ``label`` (float64) for every bar of ``bars`` (see module docstring).

    ``bars`` needs ``timestamp`` and ``close``; closes must be finite and positive (``DataError`` otherwise).
    """
    for name in ("timestamp", "close"):
        if name not in bars.columns:
            raise DataError(f"bar frame lacks column {name!r}, which labels need")
    close = bars["close"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(close) | (close <= 0.0)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"column 'close' must be finite and positive; row {row} holds {close[row]}")
    forward = forward_returns(close, spec.horizon)
    if spec.kind == "classification":
        label = np.full(forward.shape[0], np.nan)
        label[forward > spec.dead_zone] = 1.0
        label[forward < -spec.dead_zone] = 0.0
    else:
        label = forward.copy()
    return pd.DataFrame(
        {"timestamp": bars["timestamp"].reset_index(drop=True), "forward_return": forward, "label": label}
    )


@dataclass(frozen=True, eq=False)
class Split:
    """Row positions of one split, each an ascending ``int64`` array; every train row precedes every
    validation row, which precedes every test row, with ``horizon + embargo`` unused rows between blocks."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def _embargo(horizon: int, embargo: int | None) -> int:
    if horizon < 1:
        raise DataError(f"horizon must be at least 1 bar, got {horizon}")
    gap = horizon if embargo is None else embargo
    if gap < horizon:
        raise DataError(f"embargo ({gap} rows) must be at least the label horizon ({horizon} rows)")
    return gap


def _block(start: int, stop: int) -> np.ndarray:
    return np.arange(start, stop, dtype=np.int64)


def _split(train_end: int, validation_end: int, stop: int, horizon: int, embargo: int) -> Split:
    """Raw blocks ``[0, train_end)``, ``[train_end, validation_end)``, ``[validation_end, stop)``, purged
    (last ``horizon`` rows of the first two) and embargoed (first ``embargo`` rows of the last two)."""
    return Split(
        train=_block(0, train_end - horizon),
        validation=_block(train_end + embargo, validation_end - horizon),
        test=_block(validation_end + embargo, stop),
    )


def time_splits(
    n: int, horizon: int, train: float = 0.7, validation: float = 0.15, embargo: int | None = None
) -> Split:
    """One chronological split of ``n`` rows: the first ``train`` fraction, the next ``validation`` fraction,
    the rest for test (raw block ends at ``floor(n * train)`` and ``floor(n * (train + validation))``), purged
    by ``horizon`` rows and embargoed by ``embargo`` (default ``horizon``) rows as the module docstring says.

    ``DataError`` when a fraction is out of range, the embargo is shorter than the horizon, or ``n`` is too
    small for every block to keep at least one row.
    """
    gap = _embargo(horizon, embargo)
    if not (0.0 < train < 1.0 and 0.0 < validation < 1.0 and train + validation < 1.0):
        raise DataError(
            f"split fractions must be positive and leave room for a test block: train={train}, validation={validation}"
        )
    train_end = int(n * train)
    validation_end = int(n * (train + validation))
    split = _split(train_end, validation_end, n, horizon, gap)
    empty = [name for name in ("train", "validation", "test") if getattr(split, name).size == 0]
    if empty:
        raise DataError(
            f"{n} rows are too few to split with horizon {horizon} and embargo {gap}: "
            f"the {', '.join(empty)} block(s) would be empty after purging and embargo"
        )
    return split


def walk_forward(n: int, folds: int, horizon: int, min_train: int, embargo: int | None = None) -> list[Split]:
    """``folds`` expanding-window splits whose test blocks tile the tail of ``n`` rows.

    With block length ``B = (n - min_train - horizon) // (folds + 1)``, fold ``k`` (0-based) has its raw test
    block ``[n - (folds - k) B, n - (folds - k - 1) B)``, its raw validation block the ``B`` rows before it,
    and train everything before that; blocks are purged and embargoed as in ``time_splits``. The last test
    block ends at row ``n - 1``; test blocks do not overlap; fold ``k + 1``'s validation block is fold ``k``'s
    test block; the first fold trains on at least ``min_train`` rows.

    ``DataError`` when ``folds`` or ``min_train`` is below 1, the embargo is shorter than the horizon, or ``n``
    is smaller than ``min_train + horizon + (folds + 1) (horizon + embargo + 1)``.
    """
    gap = _embargo(horizon, embargo)
    if folds < 1:
        raise DataError(f"walk-forward needs at least 1 fold, got {folds}")
    if min_train < 1:
        raise DataError(f"min_train must be at least 1 row, got {min_train}")
    needed = min_train + horizon + (folds + 1) * (horizon + gap + 1)
    if n < needed:
        raise DataError(
            f"{n} rows are too few for {folds} walk-forward folds with min_train {min_train}, horizon {horizon} "
            f"and embargo {gap}: at least {needed} rows are needed"
        )
    block = (n - min_train - horizon) // (folds + 1)
    splits = []
    for fold in range(folds):
        test_start = n - (folds - fold) * block
        splits.append(_split(test_start - block, test_start, test_start + block, horizon, gap))
    return splits
