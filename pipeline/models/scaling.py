"""Feature standardisation fitted on the training split: ``z = (x - mean) / std`` per feature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.domain import DataError

STD_FLOOR = 1e-8
"""The smallest standard deviation used: a constant feature is centred, not divided by zero."""


@dataclass(frozen=True)
class Scaler:
    """Per-feature mean and standard deviation (population, ``ddof=0``, floored at ``STD_FLOOR``), float32."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        """Fit on the rows of ``X`` (n_rows, n_features); statistics are accumulated in float64."""
        values = np.asarray(X, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0:
            raise DataError(f"scaler input must be a non-empty 2-D feature matrix, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise DataError("scaler input holds NaN or infinite feature values")
        mean = values.mean(axis=0)
        std = np.maximum(values.std(axis=0), STD_FLOOR)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    @classmethod
    def identity(cls, n_features: int) -> Scaler:
        """Mean 0 and std 1: leaves features unchanged."""
        return cls(np.zeros(n_features, dtype=np.float32), np.ones(n_features, dtype=np.float32))

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardised features (float32), same shape as ``X``."""
        result: np.ndarray = ((np.asarray(X, dtype=np.float32) - self.mean) / self.std).astype(np.float32)
        return result

    def to_dict(self) -> dict[str, list[float]]:
        """A JSON-ready form: ``{"mean": [...], "std": [...]}``."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scaler:
        """Rebuild from ``to_dict()``; both lists must be present, equally long, finite, and std positive."""
        try:
            mean = np.asarray(data["mean"], dtype=np.float32)
            std = np.asarray(data["std"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"scaler data must hold numeric lists 'mean' and 'std': {exc!r}") from exc
        if mean.ndim != 1 or mean.shape != std.shape:
            raise DataError(f"scaler 'mean' and 'std' must be equally long lists, got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std <= 0).any():
            raise DataError("scaler 'mean' must be finite and 'std' finite and positive")
        return cls(mean, std)
