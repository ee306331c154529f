"""The production model of an ML sleeve: loaded by alias, checked, polled, swapped at a bar boundary.

A sleeve whose strategy reads ``model_score`` (e.g. ``hybrid``) trades the version that carries the
``production`` alias of its registered model (``hybrid-<SYMBOL>-<tf>``). Every ``poll_seconds`` the scorer asks
the registry which version carries the alias; when it moved (through this CLI or the MLflow UI), the new
version is loaded and used from the next batch of bars on, and the switch is recorded. With no production
version the score is NaN, so the strategy makes no entry and the runtime's status says why.

Scoring is streaming: ``advance(bars)`` takes the next closed bars, moves the feature stream
(``pipeline.features.build.FeatureStream``) by those bars and runs the network only on the windows that end at them.
The scorer keeps the last ``seq_len - 1`` feature rows (the model's input window) and nothing else, so the cost
of a bar and the memory held do not grow with uptime; a score once given is never recomputed (it is causal).
``score(history)``, the batch form, is the same stream run over a whole frame. A new production version whose
feature spec differs starts a new stream (``needs_history``): the node feeds it the bars it holds first.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.clock import Clock
from pipeline.domain import AssetClass, DataError
from pipeline.features.build import FeatureSpec, FeatureStream

if TYPE_CHECKING:  # the registry (and MLflow with it) is loaded by whoever builds a scorer, not by the runtime
    from pipeline.models.registry import ModelRegistry, ProductionModel

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
        self._stream: FeatureStream | None = None
        self._window = np.empty((0, 0))
        """The last ``seq_len - 1`` feature rows: the start of the next bar's input window."""

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
            self.model, self.spec, self._stream = None, None, None
            return Switch(self.model_name, None, None, f"no production version of {self.model_name}: no entries")
        model = self.registry.load_version(self.model_name, version)
        spec = FeatureSpec.model_validate(model.feature_spec)
        if spec.hash() != model.feature_spec_hash:
            raise DataError(f"{self.model_name} v{version}: its stored feature spec does not match its hash")
        previous = self.version
        if self.spec is None or spec.hash() != self.spec.hash():
            self._stream = None  # other features: a new stream, fed the bars the node holds (needs_history)
        self.model, self.spec = model, spec
        reason = "loaded at start" if previous is None else f"production alias moved from v{previous}"
        return Switch(self.model_name, version, model.run_id, reason)

    @property
    def needs_history(self) -> bool:
        """A model is loaded but its feature stream has seen no bar yet (start, or a new feature spec)."""
        return self.model is not None and (self._stream is None or self._stream.bars_seen == 0)

    def advance(self, bars: pd.DataFrame, score: bool = True) -> np.ndarray:
        """Scores of the next closed ``bars`` (continuing those given before): NaN without a model, in the
        features' warm-up and until ``seq_len`` feature rows exist. Constant work per bar. With ``score=False``
        the features and the input window advance but the network does not run (all NaN): for bars whose
        decisions are not needed, such as the history before the first bar a runtime trades."""
        scores = np.full(len(bars), np.nan)
        if self.model is None or self.spec is None or not len(bars):
            return scores
        if self._stream is None:
            self._stream = FeatureStream(self.spec, self.asset_class)
            self._window = np.empty((0, len(self.spec.columns(self.asset_class))))
        seen = self._stream.bars_seen
        values = self._stream.update(bars)
        ready = max(0, min(len(bars), seen + len(bars) - self.spec.warmup))
        if not ready:
            return scores
        rows = np.concatenate([self._window, values[len(bars) - ready:]])
        keep = self.model.seq_len - 1
        if score and len(rows) >= self.model.seq_len:
            columns = self.spec.columns(self.asset_class)
            predicted = self.model.predict(pd.DataFrame(rows, columns=columns), self.spec.hash())
            scores[len(bars) - ready:] = predicted[len(rows) - ready:]
        self._window = rows[max(0, len(rows) - keep):] if keep else rows[:0]
        return scores

    def score(self, history: pd.DataFrame) -> np.ndarray:
        """The batch form: the score of every row of ``history``, a fresh stream run over the whole frame."""
        if self.model is None or self.spec is None:
            return np.full(len(history), np.nan)
        saved = self._stream, self._window
        self._stream = None
        try:
            return self.advance(history)
        finally:
            self._stream, self._window = saved

    def state(self) -> dict[str, Any] | None:
        """The stream's exact state (JSON-serialisable), or None when no model is loaded."""
        if self.model is None or self.spec is None or self._stream is None:
            return None
        return {"version": self.model.version, "spec": self.spec.hash(), "stream": self._stream.state(),
                "window": base64.b64encode(np.ascontiguousarray(self._window, dtype="<f8").tobytes()).decode(),
                "width": int(self._window.shape[1])}

    def restore(self, state: dict[str, Any] | None) -> bool:
        """Continue from a saved state; False (and nothing restored) when it belongs to another feature spec."""
        if state is None or self.model is None or self.spec is None or state.get("spec") != self.spec.hash():
            return False
        stream = FeatureStream(self.spec, self.asset_class)
        stream.restore(state["stream"])
        self._stream = stream
        raw = np.frombuffer(base64.b64decode(state["window"]), dtype="<f8")
        self._window = raw.reshape(-1, int(state["width"])).astype(np.float64)
        return True
