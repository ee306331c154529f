"""Sequence models that score the probability of an "up" bar (LSTM, LSTM with attention, GRU) and their life cycle.

The networks (``nets``), their input windows and scaling, training (``training``), inference and scoring; the
life cycle from features to a promoted model (``lifecycle``), the MLflow registry (``registry``, the only module
of tradeforge that imports MLflow) and the promotion gate (``promotion``). Registered models are pickled with
the paths of ``pipeline.models.nets``, so those stay where they are.

``ModelConfig`` and ``classification_metrics`` load without torch; the other names load torch on first use.
This package's own face imports neither MLflow nor prefect nor streamlit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.models.config import MODEL_KINDS, ModelConfig, ModelKind
from pipeline.models.scaling import Scaler
from pipeline.models.scoring import classification_metrics

if TYPE_CHECKING:
    from pipeline.models.device import pick_device
    from pipeline.models.inference import predict_proba, predict_window
    from pipeline.models.nets import AttentionLSTMNet, GRUNet, LSTMNet, SequenceNet, build_net, load_net
    from pipeline.models.training import EpochRecord, Progress, TrainedModel, train

_LAZY = {
    "pick_device": "pipeline.models.device",
    "predict_proba": "pipeline.models.inference",
    "predict_window": "pipeline.models.inference",
    "AttentionLSTMNet": "pipeline.models.nets",
    "GRUNet": "pipeline.models.nets",
    "LSTMNet": "pipeline.models.nets",
    "SequenceNet": "pipeline.models.nets",
    "build_net": "pipeline.models.nets",
    "load_net": "pipeline.models.nets",
    "EpochRecord": "pipeline.models.training",
    "Progress": "pipeline.models.training",
    "TrainedModel": "pipeline.models.training",
    "train": "pipeline.models.training",
}

__all__ = [
    "MODEL_KINDS",
    "AttentionLSTMNet",
    "EpochRecord",
    "GRUNet",
    "LSTMNet",
    "ModelConfig",
    "ModelKind",
    "Progress",
    "Scaler",
    "SequenceNet",
    "TrainedModel",
    "build_net",
    "classification_metrics",
    "load_net",
    "pick_device",
    "predict_proba",
    "predict_window",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
