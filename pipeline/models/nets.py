"""The sequence networks: LSTM, LSTM with attention pooling, and GRU.

Every network takes RAW feature windows of shape (batch, seq_len, n_features) and standardises them itself
with the training split's mean and std, held as buffers (so they travel with the weights in ``state_dict()``
and in a saved or logged module). ``forward`` returns the probability that the bar is an "up" bar, shape
(batch,); ``logits`` returns the pre-sigmoid score used for training with ``BCEWithLogitsLoss``.

Architectures (``h_t`` is the top layer's hidden state at step ``t`` of the window, ``T`` the last step):

* ``lstm`` — ``logit = w · h_T + b``;
* ``gru`` — the same with a GRU stack;
* ``lstm_attention`` — additive (Bahdanau) attention pooling over every step:
  ``e_t = v · tanh(W h_t + c)``, ``a = softmax(e)`` over the window, ``context = Σ_t a_t h_t``, and
  ``logit = w · [context ; h_T] + b``: the head sees the attention summary and the latest state.

``dropout`` acts between stacked recurrent layers and on the head's input.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.domain import DataError
from pipeline.models.config import ModelConfig
from pipeline.models.scaling import Scaler


class SequenceNet(nn.Module):
    """A recurrent classifier with built-in standardisation; see the module description."""

    mean: Tensor
    std: Tensor

    def __init__(self, config: ModelConfig, n_features: int, scaler: Scaler | None = None, head_width: int = 0):
        super().__init__()
        if n_features < 1:
            raise DataError(f"a network needs at least one feature, got n_features={n_features}")
        scaler = scaler or Scaler.identity(n_features)
        if scaler.n_features != n_features:
            raise DataError(f"scaler has {scaler.n_features} features but the network expects {n_features}")
        self.kind: str = config.kind
        self.seq_len: int = config.seq_len
        self.n_features: int = n_features
        self.register_buffer("mean", torch.from_numpy(np.array(scaler.mean, dtype=np.float32)))
        self.register_buffer("std", torch.from_numpy(np.array(scaler.std, dtype=np.float32)))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(head_width or config.hidden, 1)

    def encode(self, z: Tensor) -> Tensor:
        """The head's input (batch, width) from standardised windows (batch, seq_len, n_features)."""
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        """Pre-sigmoid scores (batch,) of raw feature windows (batch, seq_len, n_features)."""
        if x.dim() != 3 or x.shape[-1] != self.n_features:
            raise DataError(
                f"model input must be (batch, seq_len, {self.n_features}) feature windows, got {tuple(x.shape)}"
            )
        z = (x - self.mean) / self.std
        out: Tensor = self.head(self.dropout(self.encode(z))).squeeze(-1)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Probabilities (batch,) that each window's last bar is an "up" bar."""
        return torch.sigmoid(self.logits(x))


def _recurrent(cls: type[nn.LSTM] | type[nn.GRU], config: ModelConfig, n_features: int) -> nn.Module:
    inner_dropout = config.dropout if config.layers > 1 else 0.0
    return cls(n_features, config.hidden, num_layers=config.layers, batch_first=True, dropout=inner_dropout)


def _outputs(rnn: nn.Module, z: Tensor) -> Tensor:
    result = cast(tuple[Tensor, Any], rnn(z))
    return result[0]


class LSTMNet(SequenceNet):
    """LSTM stack; the head reads the last step's hidden state."""

    def __init__(self, config: ModelConfig, n_features: int, scaler: Scaler | None = None):
        super().__init__(config, n_features, scaler)
        self.rnn = _recurrent(nn.LSTM, config, n_features)

    def encode(self, z: Tensor) -> Tensor:
        return _outputs(self.rnn, z)[:, -1, :]


class GRUNet(SequenceNet):
    """GRU stack; the head reads the last step's hidden state."""

    def __init__(self, config: ModelConfig, n_features: int, scaler: Scaler | None = None):
        super().__init__(config, n_features, scaler)
        self.rnn = _recurrent(nn.GRU, config, n_features)

    def encode(self, z: Tensor) -> Tensor:
        return _outputs(self.rnn, z)[:, -1, :]


class AttentionLSTMNet(SequenceNet):
    """LSTM stack with additive attention pooling; the head reads ``[context ; last hidden state]``."""

    def __init__(self, config: ModelConfig, n_features: int, scaler: Scaler | None = None):
        super().__init__(config, n_features, scaler, head_width=2 * config.hidden)
        self.rnn = _recurrent(nn.LSTM, config, n_features)
        self.attention = nn.Linear(config.hidden, config.hidden)
        self.score = nn.Linear(config.hidden, 1, bias=False)

    def attention_weights(self, states: Tensor) -> Tensor:
        """Softmax weights (batch, seq_len) over the steps of hidden states (batch, seq_len, hidden)."""
        energies: Tensor = self.score(torch.tanh(self.attention(states))).squeeze(-1)
        return torch.softmax(energies, dim=1)

    def encode(self, z: Tensor) -> Tensor:
        states = _outputs(self.rnn, z)
        weights = self.attention_weights(states)
        context = torch.bmm(weights.unsqueeze(1), states).squeeze(1)
        return torch.cat([context, states[:, -1, :]], dim=1)


NETS: dict[str, type[LSTMNet] | type[GRUNet] | type[AttentionLSTMNet]] = {
    "lstm": LSTMNet,
    "lstm_attention": AttentionLSTMNet,
    "gru": GRUNet,
}


def build_net(config: ModelConfig, n_features: int, scaler: Scaler | None = None) -> SequenceNet:
    """A freshly initialised network of ``config.kind`` (weights follow the current torch seed).

    Without a scaler the standardisation is the identity; loading a trained ``state_dict()`` restores the
    trained mean and std together with the weights.
    """
    return NETS[config.kind](config, n_features, scaler)


def load_net(config: ModelConfig, n_features: int, state_dict: dict[str, Tensor]) -> SequenceNet:
    """A trained network rebuilt from its config, feature count and ``state_dict()``, on CPU in eval mode."""
    net = build_net(config, n_features)
    net.load_state_dict(state_dict)
    net.eval()
    return net
