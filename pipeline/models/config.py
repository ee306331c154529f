"""The parameters of a sequence model: its architecture, its training loop and its seed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelKind = Literal["lstm", "lstm_attention", "gru"]
MODEL_KINDS: tuple[ModelKind, ...] = ("lstm", "lstm_attention", "gru")


class ModelConfig(BaseModel):
    """How a model is built and trained.

    * ``kind`` — ``lstm`` (last hidden state), ``lstm_attention`` (attention pooling over every hidden state)
      or ``gru`` (last hidden state);
    * ``hidden``, ``layers``, ``dropout`` — width and depth of the recurrent stack; ``dropout`` applies between
      stacked layers and before the output head;
    * ``seq_len`` — bars per input window (the target bar and the ``seq_len - 1`` bars before it);
    * ``epochs``, ``batch_size``, ``lr``, ``weight_decay`` — AdamW training; ``patience`` — epochs without a
      lower validation loss before training stops (the best epoch's weights are kept); ``clip`` — the maximum
      gradient norm;
    * ``seed`` — weight initialisation, dropout and shuffling all follow it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ModelKind
    hidden: int = Field(default=32, ge=1)
    layers: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    seq_len: int = Field(default=32, ge=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    patience: int = Field(default=3, ge=1)
    clip: float = Field(default=1.0, gt=0.0)
    seed: int = 7
