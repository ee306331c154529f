"""Samples of a feature matrix: the window of ``seq_len`` rows ending at a target row.

A sample for row ``i`` is the window of rows ``[i - seq_len + 1, i]`` (inclusive) with target ``y[i]``. Only
rows with ``i >= seq_len - 1``, a label (not NaN) and finite features over the whole window are samples.
Windows are views of the feature matrix; a batch of them is copied out only when it is used.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.domain import DataError


def as_features(X: np.ndarray) -> np.ndarray:
    """``X`` as a C-contiguous float32 matrix (n_rows, n_features); a clear error for any other shape."""
    features = np.ascontiguousarray(X, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] == 0:
        raise DataError(f"feature matrix X must be 2-D (n_rows, n_features), got shape {features.shape}")
    return features


def as_labels(y: np.ndarray, n_rows: int) -> np.ndarray:
    """``y`` as a float32 vector of ``n_rows`` values, each 0 (down), 1 (up) or NaN (no label)."""
    labels = np.asarray(y, dtype=np.float32).reshape(-1)
    if labels.shape[0] != n_rows:
        raise DataError(f"labels y has {labels.shape[0]} rows but the feature matrix X has {n_rows}")
    present = labels[~np.isnan(labels)]
    if not np.isin(present, (0.0, 1.0)).all():
        raise DataError("labels y must be 0 (down), 1 (up) or NaN (no label)")
    return labels


def as_rows(rows: np.ndarray, n_rows: int, name: str) -> np.ndarray:
    """Row indices as a sorted, de-duplicated int64 vector inside ``[0, n_rows)``."""
    indices = np.asarray(rows)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise DataError(f"{name} must hold integer row indices, got dtype {indices.dtype}")
    indices = np.unique(indices.astype(np.int64).reshape(-1))
    if indices.size and (indices[0] < 0 or indices[-1] >= n_rows):
        raise DataError(f"{name} holds row indices outside [0, {n_rows})")
    return indices


def complete_windows(X: np.ndarray, seq_len: int) -> np.ndarray:
    """Boolean per row: ``True`` where the window ending at that row exists and all its features are finite."""
    bad_rows = ~np.isfinite(X).all(axis=1)
    bad_before = np.concatenate(([0], np.cumsum(bad_rows, dtype=np.int64)))
    complete = np.zeros(X.shape[0], dtype=bool)
    if X.shape[0] >= seq_len:
        ends = np.arange(seq_len - 1, X.shape[0])
        complete[ends] = bad_before[ends + 1] - bad_before[ends + 1 - seq_len] == 0
    return complete


def sample_rows(X: np.ndarray, y: np.ndarray, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """The rows among ``rows`` that are samples (full window, label present, finite features), ascending."""
    features = as_features(X)
    labels = as_labels(y, features.shape[0])
    indices = as_rows(rows, features.shape[0], "rows")
    keep = complete_windows(features, seq_len)[indices] & ~np.isnan(labels[indices])
    result: np.ndarray = indices[keep]
    return result


def window_view(X: np.ndarray, seq_len: int) -> np.ndarray:
    """A read-only view of every window: element ``k`` is rows ``[k, k + seq_len)``, shape
    (n_rows - seq_len + 1, seq_len, n_features)."""
    if X.shape[0] < seq_len:
        raise DataError(f"feature matrix X has {X.shape[0]} rows, fewer than one window of {seq_len}")
    view: np.ndarray = sliding_window_view(X, (seq_len, X.shape[1]))[:, 0]
    return view


def gather(windows: np.ndarray, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """A contiguous float32 batch (len(rows), seq_len, n_features) of the windows ending at ``rows``."""
    batch: np.ndarray = windows[rows - (seq_len - 1)]
    return batch
