"""The production model of an ML sleeve: loaded by alias, checked, polled, swapped at a bar boundary.

A sleeve whose strategy reads ``model_score`` (e.g. ``hybrid``) trades the version that carries the
``production`` alias of its registered model (``hybrid-<SYMBOL>-<tf>``). Every ``poll_seconds`` the scorer asks
the registry which version carries the alias; when it moved (through this CLI or the MLflow UI), the new
version is loaded and used from the next batch of bars on, and the switch is recorded. With no production
version the score is NaN, so the strategy makes no entry and the runtime's status says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.clock import Clock
from pipeline.domain import AssetClass, DataError
from pipeline.features import FeatureSpec, build_features

if TYPE_CHECKING:  # the registry (and MLflow with it) is loaded by whoever builds a scorer, not by the runtime
    from pipeline.registry import ModelRegistry, ProductionModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Switch:
    """The production model a sleeve starts using."""

    model_name: str
    version: str | None
    run_id: str | None
    reason: str


class ModelScorer:
    def __init__(self, registry: ModelRegistry, model_name: str, asset_class: AssetClass, clock: Clock,
                 poll_seconds: float) -> None:
        self.registry = registry
        self.model_name = model_name
        self.asset_class = asset_class
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.model: ProductionModel | None = None
        self.spec: FeatureSpec | None = None
        self._last_poll: pd.Timestamp | None = None

    @property
    def version(self) -> str | None:
        return None if self.model is None else self.model.version

    def poll(self) -> Switch | None:
        """Ask the registry (at most every ``poll_seconds``); returns a ``Switch`` when the alias moved."""
        now = self.clock.now()
        if self._last_poll is not None and (now - self._last_poll).total_seconds() < self.poll_seconds:
            return None
        self._last_poll = now
        current = self.registry.production(self.model_name)
        version = None if current is None else str(current.version)
        if version == self.version:
            return None
        if version is None:
            self.model, self.spec = None, None
            return Switch(self.model_name, None, None, f"no production version of {self.model_name}: no entries")
        model = self.registry.load_version(self.model_name, version)
        spec = FeatureSpec.model_validate(model.feature_spec)
        if spec.hash() != model.feature_spec_hash:
            raise DataError(f"{self.model_name} v{version}: its stored feature spec does not match its hash")
        previous = self.version
        self.model, self.spec = model, spec
        reason = "loaded at start" if previous is None else f"production alias moved from v{previous}"
        return Switch(self.model_name, version, model.run_id, reason)

    def score(self, history: pd.DataFrame) -> np.ndarray:
        """The model's probability for every row of ``history`` (NaN without a model or before warm-up)."""
        scores = np.full(len(history), np.nan)
        if self.model is None or self.spec is None or len(history) <= self.spec.warmup + self.model.seq_len:
            return scores
        features = build_features(history, self.spec, self.asset_class)
        predicted = self.model.predict(features, self.spec.hash())
        scores[len(history) - len(features):] = predicted
        return scores
