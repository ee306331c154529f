"""Classification metrics of up/down probabilities, in plain numpy.

For labels ``y`` in {0, 1} and probabilities ``p`` of "up", over the ``n`` rows where both are present:

* ``log_loss = -mean(y * ln(p) + (1 - y) * ln(1 - p))``, with ``p`` clipped to ``[1e-15, 1 - 1e-15]``;
* ``accuracy = mean((p >= 0.5) == y)`` — a probability of exactly 0.5 counts as "up";
* ``auc`` — the probability that a random up row scores above a random down row (ties count half), computed
  with the Mann-Whitney rank statistic ``(R_up - n_up (n_up + 1) / 2) / (n_up * n_down)`` where ``R_up`` is the
  sum of the up rows' ranks of ``p`` and tied scores share their average rank; ``None`` when only one class is
  present;
* ``brier = mean((p - y) ** 2)``.
"""

from __future__ import annotations

import numpy as np

from pipeline.domain import DataError

LOG_LOSS_EPS = 1e-15


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` in ascending order; tied values share the average of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    starts = ends - counts
    averaged = (starts + 1 + ends) / 2.0
    ranks: np.ndarray = averaged[inverse.reshape(-1)]
    return ranks


def roc_auc(y_true: np.ndarray, p: np.ndarray) -> float | None:
    """Rank-based (Mann-Whitney) area under the ROC curve; ``None`` if ``y_true`` holds one class only."""
    positive = y_true == 1.0
    n_pos = int(positive.sum())
    n_neg = int(y_true.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(p)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """``n``, ``log_loss``, ``accuracy``, ``auc`` and ``brier`` over the rows where label and probability are
    both present (not NaN); see the module description for the formulas.

    Raises ``DataError`` when the arrays differ in length, a label is not 0 or 1, a probability lies outside
    [0, 1], or no row is left to score.
    """
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    q = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != q.shape:
        raise DataError(f"labels ({y.size}) and probabilities ({q.size}) must have the same length")
    present = ~np.isnan(y) & ~np.isnan(q)
    y, q = y[present], q[present]
    if y.size == 0:
        raise DataError("no row has both a label and a probability to score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("labels must be 0 (down), 1 (up) or NaN (no label)")
    if (q < 0.0).any() or (q > 1.0).any():
        raise DataError("probabilities must lie in [0, 1]")
    clipped = np.clip(q, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    log_loss = -np.mean(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped))
    return {
        "n": int(y.size),
        "log_loss": float(log_loss),
        "accuracy": float(np.mean((q >= 0.5) == (y == 1.0))),
        "auc": roc_auc(y, q),
        "brier": float(np.mean((q - y) ** 2)),
    }
