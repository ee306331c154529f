"""Training a sequence model on the training rows, with early stopping on the validation rows.

The optimiser is AdamW on binary cross-entropy of the logits; each epoch shuffles the training samples, clips
the gradient norm at ``config.clip``, then scores the validation samples. Training stops after
``config.patience`` epochs without a lower validation loss, or after ``config.epochs``, and the returned
network carries the weights of the epoch with the lowest validation loss.

The standardisation is fitted on the feature rows of the training samples only (their target rows; the bars
a window reaches back into are earlier and may precede the split, which is causal). Validation windows may
reach back into training rows.

On the CPU a run is reproducible: the same data, config and seed give bit-identical weights, losses and
predictions (torch's deterministic algorithms are switched on for the duration of the run and restored after).
Training seeds torch's and numpy's global generators with ``config.seed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.domain import DataError
from pipeline.models.config import ModelConfig
from pipeline.models.device import pick_device
from pipeline.models.nets import SequenceNet, build_net
from pipeline.models.scaling import Scaler
from pipeline.models.windows import as_features, as_labels, as_rows, gather, sample_rows, window_view

Progress = Callable[[int, int, float, float], None]
"""Called after every epoch with (epoch, total epochs, train loss, validation loss)."""


EpochRecord = dict[str, float]
"""One epoch: ``epoch`` (1-based, a whole number), ``train_loss`` and ``val_loss`` (mean binary cross-entropy
per sample) and ``seconds`` (wall time of the epoch, validation included)."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained network and how it was trained.

    ``net`` is on the CPU in eval mode and holds the best epoch's weights and the training scaler;
    ``samples_per_second`` counts training samples through forward, backward and optimiser steps (validation
    excluded); ``train_samples``/``val_samples`` are the number of rows that were samples in each split.
    """

    net: SequenceNet
    scaler: Scaler
    history: list[EpochRecord]
    best_epoch: int
    samples_per_second: float
    config: ModelConfig
    n_features: int
    train_samples: int
    val_samples: int

    @property
    def best_val_loss(self) -> float:
        return self.history[self.best_epoch - 1]["val_loss"]


@contextmanager
def _reproducible(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on the CPU for the duration of the block; other devices are left as they are."""
    if device.type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _split_samples(
    X: np.ndarray, y: np.ndarray, rows: np.ndarray, seq_len: int, name: str
) -> np.ndarray:
    samples = sample_rows(X, y, as_rows(rows, X.shape[0], name), seq_len)
    if samples.size == 0:
        raise DataError(
            f"{name} holds no sample: a sample needs a row index >= seq_len - 1 ({seq_len - 1}), a label, and "
            "finite features over its whole window"
        )
    return samples


def _batch(windows: np.ndarray, rows: np.ndarray, seq_len: int, device: torch.device) -> Tensor:
    return torch.from_numpy(gather(windows, rows, seq_len)).to(device)


def _mean_loss(
    net: SequenceNet,
    windows: np.ndarray,
    labels: Tensor,
    rows: np.ndarray,
    config: ModelConfig,
    device: torch.device,
) -> float:
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total = 0.0
    net.eval()
    with torch.inference_mode():
        for start in range(0, rows.size, config.batch_size):
            chunk = rows[start : start + config.batch_size]
            logits = net.logits(_batch(windows, chunk, config.seq_len, device))
            total += float(loss_fn(logits, labels[torch.from_numpy(chunk)].to(device)))
    return total / rows.size


def train(
    X: np.ndarray,
    y: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: ModelConfig,
    progress: Progress | None = None,
    device: torch.device | None = None,
) -> TrainedModel:
    """Train ``config.kind`` on the samples whose target rows are in ``train_idx``, early-stopping on those in
    ``val_idx`` (see the module description).

    ``X`` is the float32 feature matrix (n_rows, n_features) in time order, ``y`` the labels (1 up, 0 down,
    NaN none). ``device`` defaults to ``pick_device()``; the result's network is on the CPU either way.
    Raises ``DataError`` for inconsistent inputs, overlapping splits, or a split without any sample.
    """
    features = as_features(X)
    labels = as_labels(y, features.shape[0])
    train_rows = _split_samples(features, labels, train_idx, config.seq_len, "train_idx")
    val_rows = _split_samples(features, labels, val_idx, config.seq_len, "val_idx")
    if np.intersect1d(train_rows, val_rows).size:
        raise DataError("train_idx and val_idx share sample rows: a row can be in one split only")
    device = device or pick_device()
    scaler = Scaler.fit(features[train_rows])
    windows = window_view(features, config.seq_len)
    targets = torch.from_numpy(labels)

    with _reproducible(device):
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)  # the legacy global generator, for any numpy user
        shuffle = torch.Generator().manual_seed(config.seed)
        net = build_net(config, features.shape[1], scaler).to(device)
        optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        history: list[EpochRecord] = []
        best_loss, best_epoch, best_state = float("inf"), 0, _snapshot(net)
        train_seconds = 0.0
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            net.train()
            order = train_rows[torch.randperm(train_rows.size, generator=shuffle).numpy()]
            total = 0.0
            for start in range(0, order.size, config.batch_size):
                chunk = order[start : start + config.batch_size]
                inputs = _batch(windows, chunk, config.seq_len, device)
                optimiser.zero_grad(set_to_none=True)
                loss = loss_fn(net.logits(inputs), targets[torch.from_numpy(chunk)].to(device))
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), config.clip)
                optimiser.step()
                total += float(loss.detach()) * chunk.size
            train_seconds += time.perf_counter() - started
            val_loss = _mean_loss(net, windows, targets, val_rows, config, device)
            record: EpochRecord = {
                "epoch": epoch,
                "train_loss": total / order.size,
                "val_loss": val_loss,
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            if progress is not None:
                progress(epoch, config.epochs, record["train_loss"], val_loss)
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, _snapshot(net)
            elif epoch - best_epoch >= config.patience:
                break
        if best_epoch == 0:
            raise DataError("training diverged: the validation loss was never a finite number")
        net.load_state_dict(best_state)
    net = net.cpu().eval()
    return TrainedModel(
        net=net,
        scaler=scaler,
        history=history,
        best_epoch=best_epoch,
        samples_per_second=train_rows.size * len(history) / train_seconds if train_seconds > 0 else float("inf"),
        config=config,
        n_features=features.shape[1],
        train_samples=int(train_rows.size),
        val_samples=int(val_rows.size),
    )


def _snapshot(net: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in net.state_dict().items()}
