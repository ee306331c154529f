"""``train``: train a model on one series, evaluate it walk-forward, register it in MLflow, apply the promotion
gate (the ``production`` alias moves only when the gate passes, unless ``promote`` says otherwise).

The defaults are small (a GRU of 16 units over 16 bars, 3 epochs, 2 folds) so a nightly run stays cheap on the
sample data; raise them in the deployment's parameters for real work.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, task

from flows.common import NO_CACHING, report_failure, say, settings
from pipeline.data.catalog import read_bars
from pipeline.data.lake import Lake
from pipeline.domain import DataError, Instrument, Timeframe
from pipeline.models import ModelConfig
from pipeline.models.lifecycle import TrainRequest, train_and_register
from pipeline.models.registry import ModelRegistry


@task(name="train-evaluate-register-gate", cache_policy=NO_CACHING, timeout_seconds=4 * 3600)
def train_task(symbol: str, timeframe: str, venue: str | None, start: str | None, end: str | None,
               model: ModelConfig, request: dict[str, Any]) -> dict[str, Any]:
    config = settings()
    bars = read_bars(config, symbol, timeframe, start, end, venue)
    if bars.empty:
        raise DataError(f"no {symbol} {timeframe} bars in the lake for training (run the ingest flow first)")
    instrument: Instrument = Lake(config.lake_dir).find(symbol, venue=venue)[0].instrument
    outcome = train_and_register(bars, instrument, Timeframe.parse(timeframe), TrainRequest(model=model, **request),
                                 ModelRegistry(config.mlflow_tracking_uri), progress=say)
    return outcome.to_json()


@flow(name="train", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def train_flow(
    symbol: str = "BTC/USDT",
    timeframe: str = "1h",
    venue: str | None = None,
    model_kind: Literal["lstm", "lstm_attention", "gru"] = "gru",
    epochs: int = 3,
    hidden: int = 16,
    seq_len: int = 16,
    batch_size: int = 128,
    folds: int = 2,
    threshold: float = 0.55,
    base_strategy: str = "golden_cross",
    promote: Literal["auto", "never", "force"] = "auto",
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """Train → walk-forward evaluation → register → gate → promote, for one symbol and timeframe."""
    model = ModelConfig(kind=model_kind, epochs=epochs, hidden=hidden, seq_len=seq_len, batch_size=batch_size)
    request = {"folds": folds, "threshold": threshold, "base_strategy": base_strategy, "promote": promote}
    outcome = train_task(symbol, timeframe, venue, start, end, model, request)
    say(f"{outcome['model_name']} v{outcome['version']}: "
        f"{'promoted' if outcome['promoted'] else 'not promoted'} ({outcome['reason']})")
    return outcome
