"""A rule strategy whose entries must be confirmed by a model score (the ``hybrid`` strategy).

``ModelGated(base, threshold, column)`` passes through every decision of ``base`` except entries: an entry
(exposure ``> 0``) at bar ``i`` is kept only when ``features[column][i] >= threshold``; below the threshold, or
where the score is missing (NaN), the bar has no decision. Exits and flat decisions (exposure ``<= 0``) always
pass, so the model can keep the strategy out of a trade but never traps it in one.

The score column (by default ``model_score``, the probability an ML model assigns to an up-move) is produced
upstream by the feature pipeline; this module reads it and holds no model. A kept entry's reason is the base
reason with ``+ml(p>=threshold)`` appended, e.g. ``"golden_cross up (50/200)+ml(p>=0.55)"``; exits keep the base
reason.

The gate's stream wraps the base strategy's stream: each batch of rows advances the base by those rows and
gates their entries with the score column of the same rows, so it carries nothing of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import DataError
from pipeline.features.streaming import section
from pipeline.strategies.base import DecisionStream, Strategy, Targets, check_features, check_owner


class ModelGated:
    """Entries of ``base`` only where ``features[column] >= threshold``; exits unchanged."""

    def __init__(
        self, base: Strategy, threshold: float = 0.55, column: str = "model_score", name: str = "hybrid"
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.integer | np.floating):
            raise DataError(f"{name} parameter 'threshold' must be a number, got {threshold!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise DataError(f"{name} parameter 'threshold' must be between 0 and 1, got {threshold!r}")
        if not isinstance(column, str) or not column:
            raise DataError(f"{name} parameter 'column' must name a feature column, got {column!r}")
        self.base = base
        self.threshold = float(threshold)
        self.column = column
        self.name = name
        self.requires: tuple[str, ...] = tuple(dict.fromkeys((*base.requires, column)))
        self.warmup = base.warmup
        self._suffix = f"+ml(p>={self.threshold:g})"

    def __repr__(self) -> str:
        return (
            f"ModelGated(base={self.base!r}, threshold={self.threshold:g}, column={self.column!r}, name={self.name!r})"
        )

    def stream(self) -> ModelGatedStream:
        return ModelGatedStream(self)

    def targets(self, features: pd.DataFrame) -> Targets:
        return self.stream().update(features)

    def gate(self, inner: Targets, score: np.ndarray) -> Targets:
        """``inner`` (the base's decisions on some rows) with entries kept only where ``score >= threshold``."""
        entry = inner.exposure > 0.0
        with np.errstate(invalid="ignore"):
            confirmed = score >= self.threshold
        exposure = inner.exposure.copy()
        reason = inner.reason.copy()
        exposure[entry & ~confirmed] = np.nan
        reason[entry & ~confirmed] = -1
        kept = entry & confirmed
        reason[kept] += len(inner.reasons)
        reasons = (*inner.reasons, *(text + self._suffix for text in inner.reasons))
        return Targets(exposure, reason, reasons, inner.orders)  # executed as the base strategy says


class ModelGatedStream:
    """The base strategy's stream, its entries gated by the score of the same rows."""

    def __init__(self, strategy: ModelGated) -> None:
        self.strategy = strategy
        self._base: DecisionStream = strategy.base.stream()

    def update(self, features: pd.DataFrame) -> Targets:
        check_features(self.strategy, features)
        inner = self._base.update(features)
        return self.strategy.gate(inner, features[self.strategy.column].to_numpy(dtype=np.float64))

    def state(self) -> dict[str, Any]:
        return {"strategy": repr(self.strategy), "base": self._base.state()}

    def restore(self, state: dict[str, Any]) -> None:
        check_owner(state, self.strategy)
        self._base.restore(section(state, "base", f"{self.strategy.name} state"))
