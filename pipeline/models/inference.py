"""Predictions: over a whole history at once, or for the latest window only (the runtime path).

Both paths run the same network on the same raw window and agree to within float32 rounding (well under
1e-6 in probability). A window with a NaN feature yields NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.domain import DataError
from pipeline.models.nets import SequenceNet
from pipeline.models.training import TrainedModel
from pipeline.models.windows import as_features, window_view


def _network(model_or_net: TrainedModel | nn.Module) -> SequenceNet:
    net = model_or_net.net if isinstance(model_or_net, TrainedModel) else model_or_net
    if not isinstance(net, SequenceNet):
        raise DataError(
            f"expected a trained tradeforge sequence network (LSTMNet, AttentionLSTMNet, GRUNet), got "
            f"{type(net).__name__}"
        )
    if net.training:
        net.eval()
    return net


def _window_length(net: SequenceNet, seq_len: int | None) -> int:
    if seq_len is not None and seq_len != net.seq_len:
        raise DataError(f"seq_len {seq_len} differs from the {net.seq_len} bars the model was trained on")
    return net.seq_len


def predict_proba(
    model_or_net: TrainedModel | nn.Module,
    X: np.ndarray,
    seq_len: int | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """The probability of "up" for every row of ``X`` (n_rows, n_features), float64 of length n_rows.

    Row ``i`` is scored on the window of rows ``[i - seq_len + 1, i]``; rows before ``seq_len - 1`` have no
    window and get NaN. ``seq_len`` defaults to the model's own and, if given, must equal it. Windows are
    scored ``batch_size`` at a time on the model's device.
    """
    net = _network(model_or_net)
    length = _window_length(net, seq_len)
    features = as_features(X)
    if features.shape[1] != net.n_features:
        raise DataError(f"X has {features.shape[1]} features but the model expects {net.n_features}")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    result = np.full(features.shape[0], np.nan, dtype=np.float64)
    if features.shape[0] < length:
        return result
    windows = window_view(features, length)
    device = next(net.parameters()).device
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            batch = np.require(windows[start : start + batch_size], requirements=["C", "W"])
            probabilities = net(torch.from_numpy(batch).to(device))
            result[start + length - 1 : start + length - 1 + batch.shape[0]] = probabilities.cpu().numpy()
    return result


def predict_window(net: nn.Module, window: np.ndarray) -> float:
    """The probability of "up" for one raw feature window (seq_len, n_features) ending at the latest bar.

    ``net`` is a trained sequence network (as trained, rebuilt with ``load_net``, or loaded whole).
    """
    net = _network(net)
    values = np.ascontiguousarray(window, dtype=np.float32)
    if values.shape != (net.seq_len, net.n_features):
        raise DataError(
            f"window must have shape ({net.seq_len}, {net.n_features}) (seq_len, n_features), got {values.shape}"
        )
    with torch.inference_mode():
        return float(net(torch.from_numpy(values).unsqueeze(0))[0])
