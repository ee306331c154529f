"""Train → walk-forward evaluation → register → gate → promote: the model life cycle, end to end.

1. Features (``pipeline.features.build``) and labels (``pipeline.features.labels``) are built from the bars.
2. ``folds`` walk-forward folds (expanding train window, then validation, then test, purged and embargoed by
   the label horizon): on each fold a model is trained (early stopping on the fold's validation rows) and
   predicts its test rows, which it has never seen.
3. Out-of-sample classification metrics are computed over all test rows: log loss, accuracy, AUC, Brier.
4. Trading evaluation over the same test rows, net of costs, through the engine core: the ``hybrid`` strategy
   (the rule strategy's entries confirmed by the model's probability ≥ ``threshold``), the rule-only
   strategy, and buy-and-hold. Each fold's test block is backtested from flat with the history before it
   available to the strategy (so moving averages are warm), and fold returns are chained.
5. The last fold's model (trained on the most recent data) is logged to MLflow with everything needed to
   reproduce and use it, and registered as a new version.
6. The promotion gate (``pipeline.models.promotion``) compares its out-of-sample Sharpe and drawdown with the
   rule-only baseline and the current production version's logged figures; the decision is written as tags,
   and the ``production`` alias moves when it passes (or when forced).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.backtest.metrics import bars_per_year, compute_metrics
from pipeline.domain import AssetClass, Instrument, Timeframe, epoch_ms
from pipeline.engine import EngineConfig, run
from pipeline.features.build import FeatureSpec, build_features
from pipeline.features.labels import LabelSpec, make_labels, walk_forward
from pipeline.models import ModelConfig, TrainedModel, classification_metrics, predict_proba, train
from pipeline.models.promotion import Decision, PromoteMode, Scores, decide
from pipeline.models.registry import ModelRegistry, model_name
from pipeline.strategies import REGISTRY
from pipeline.strategies.model_gate import ModelGated

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainRequest:
    model: ModelConfig
    features: FeatureSpec = field(default_factory=FeatureSpec)
    labels: LabelSpec = field(default_factory=LabelSpec)
    base_strategy: str = "golden_cross"
    threshold: float = 0.55
    folds: int = 3
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_position=1.0))
    promote: PromoteMode = "auto"


@dataclass(frozen=True)
class Evaluation:
    probabilities: np.ndarray
    """Out-of-sample probability per feature row (NaN outside the test blocks)."""
    classification: dict[str, float | None]
    hybrid: dict[str, Any]
    baseline: dict[str, Any]
    buy_and_hold: dict[str, Any]
    curves: pd.DataFrame
    folds: list[dict[str, Any]]
    last_model: TrainedModel


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    model_name: str
    version: str
    metrics: dict[str, float | None]
    promoted: bool
    reason: str
    trained: TrainedModel
    """The registered network as trained (before logging), with its scaler and history."""
    features: pd.DataFrame

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_name": self.model_name,
            "version": self.version,
            "metrics": self.metrics,
            "promoted": self.promoted,
            "reason": self.reason,
        }


def data_hash(bars: pd.DataFrame) -> str:
    """sha256 of the bars' timestamps and values: names exactly the data a model was trained on."""
    digest = hashlib.sha256(epoch_ms(bars["timestamp"]).tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        digest.update(np.ascontiguousarray(bars[column].to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()[:16]


def evaluate(
    bars: pd.DataFrame,
    timeframe: Timeframe,
    asset_class: AssetClass,
    request: TrainRequest,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, Evaluation]:
    """Walk-forward training and out-of-sample evaluation; returns the feature frame and the evaluation."""
    features = build_features(bars, request.features, asset_class)
    rows = pd.DatetimeIndex(bars["timestamp"]).get_indexer(pd.DatetimeIndex(features["timestamp"]))
    aligned = bars.iloc[rows].reset_index(drop=True)
    labels = make_labels(bars, request.labels).iloc[rows].reset_index(drop=True)
    columns = [c for c in features.columns if c != "timestamp"]
    matrix = features[columns].to_numpy(dtype=np.float32)
    target = labels["label"].to_numpy(dtype=np.float32)
    horizon = request.labels.horizon
    min_train = max(request.model.seq_len * 8, len(features) // (request.folds + 2))
    splits = walk_forward(len(features), request.folds, horizon, min_train)
    probabilities = np.full(len(features), np.nan)
    fold_rows: list[dict[str, Any]] = []
    model: TrainedModel | None = None
    for number, split in enumerate(splits, start=1):
        if progress is not None:
            progress(f"fold {number}/{len(splits)}: training on {len(split.train):,} rows")
        model = train(matrix, target, split.train, split.validation, request.model)
        fold_probabilities = predict_proba(model, matrix, request.model.seq_len)
        probabilities[split.test] = fold_probabilities[split.test]
        fold_rows.append(
            {
                "fold": number,
                "train_rows": len(split.train),
                "test_first": features["timestamp"].iloc[split.test[0]].isoformat(),
                "test_last": features["timestamp"].iloc[split.test[-1]].isoformat(),
                "best_epoch": model.best_epoch,
            }
        )
    assert model is not None
    tested = np.concatenate([s.test for s in splits])
    labelled = tested[~np.isnan(target[tested]) & ~np.isnan(probabilities[tested])]
    classification = classification_metrics(target[labelled], probabilities[labelled])
    scored = features.assign(model_score=probabilities)
    trading = _trading(aligned, scored, splits, timeframe, asset_class, request)
    evaluation = Evaluation(
        probabilities, classification, trading["hybrid"], trading["baseline"], trading["buy_and_hold"],
        trading["curves"], fold_rows, model,
    )
    return features, evaluation


def _trading(
    bars: pd.DataFrame,
    scored: pd.DataFrame,
    splits: list[Any],
    timeframe: Timeframe,
    asset_class: AssetClass,
    request: TrainRequest,
) -> dict[str, Any]:
    base = REGISTRY.build(request.base_strategy)
    hybrid = ModelGated(base, threshold=request.threshold)
    frame = bars.assign(model_score=scored["model_score"].to_numpy())
    ppy = bars_per_year(timeframe.seconds, asset_class.value)
    curves: dict[str, list[pd.DataFrame]] = {"hybrid": [], "baseline": [], "buy_and_hold": []}
    strategies = {"hybrid": hybrid, "baseline": base, "buy_and_hold": REGISTRY.build("buy_and_hold")}
    trades: dict[str, list[pd.DataFrame]] = {name: [] for name in strategies}
    fills: dict[str, list[pd.DataFrame]] = {name: [] for name in strategies}
    for split in splits:
        start, stop = int(split.test[0]), int(split.test[-1]) + 1
        window = frame.iloc[:stop]
        for name, strategy in strategies.items():
            targets = strategy.targets(window)
            aims = targets.exposure.copy()
            aims[:start] = np.nan  # trade only inside the out-of-sample block
            block = window.iloc[start:stop].reset_index(drop=True)
            orders = targets.slice(start, len(aims)).orders
            result = run(block, aims[start:], targets.reason[start:], targets.reasons, request.engine, orders=orders)
            curves[name].append(result.equity[["timestamp", "equity", "position_value", "cash"]])
            trades[name].append(result.trades)
            fills[name].append(result.fills)
    out: dict[str, Any] = {}
    chained: dict[str, pd.Series] = {}
    for name in strategies:
        equity = _chain([c.copy() for c in curves[name]], request.engine.cash)
        closes = pd.concat([frame.iloc[int(s.test[0]): int(s.test[-1]) + 1]["close"] for s in splits])
        out[name] = compute_metrics(
            equity, pd.concat(trades[name], ignore_index=True), pd.concat(fills[name], ignore_index=True),
            closes.reset_index(drop=True), ppy,
        )
        chained[name] = equity.set_index("timestamp")["equity"]
    out["curves"] = pd.DataFrame(chained).reset_index()
    return out


def _chain(parts: list[pd.DataFrame], cash: float) -> pd.DataFrame:
    """Join fold equity curves, each started from ``cash``, into one compounded curve."""
    scale = 1.0
    chained = []
    for part in parts:
        part[["equity", "position_value", "cash"]] *= scale
        chained.append(part)
        scale = float(part["equity"].iloc[-1]) / cash
    return pd.concat(chained, ignore_index=True)


def train_and_register(
    bars: pd.DataFrame,
    instrument: Instrument,
    timeframe: Timeframe,
    request: TrainRequest,
    registry: ModelRegistry,
    progress: Progress | None = None,
) -> TrainOutcome:
    """The whole life cycle for one symbol and timeframe; see the module docstring."""
    features, evaluation = evaluate(bars, timeframe, instrument.asset_class, request, progress)
    name = model_name("hybrid", instrument.key, str(timeframe))
    hybrid, baseline = evaluation.hybrid, evaluation.baseline
    metrics: dict[str, float | None] = {
        **{f"oos_{k}": v for k, v in evaluation.classification.items()},
        "oos_sharpe": hybrid["sharpe"],
        "oos_max_drawdown": hybrid["max_drawdown"],
        "oos_total_return": hybrid["total_return"],
        "oos_trades": float(hybrid["trades"]),
        "baseline_sharpe": baseline["sharpe"],
        "baseline_max_drawdown": baseline["max_drawdown"],
        "baseline_total_return": baseline["total_return"],
        "buy_and_hold_return": evaluation.buy_and_hold["total_return"],
        "train_samples_per_second": evaluation.last_model.samples_per_second,
    }
    columns = [c for c in features.columns if c != "timestamp"]
    seq_len = request.model.seq_len
    example = features[columns].to_numpy(dtype=np.float32)[-seq_len:][None, :, :]
    params = {
        "strategy": "hybrid",
        "base_strategy": request.base_strategy,
        "threshold": request.threshold,
        "symbol": instrument.symbol,
        "venue": instrument.venue,
        "timeframe": str(timeframe),
        **{f"model.{k}": v for k, v in request.model.model_dump().items()},
        **{f"features.{k}": v for k, v in request.features.model_dump().items()},
        "features.hash": request.features.hash(),
        **{f"labels.{k}": v for k, v in request.labels.model_dump().items()},
        "folds": request.folds,
        "data.first": str(bars["timestamp"].iloc[0]),
        "data.last": str(bars["timestamp"].iloc[-1]),
        "data.rows": len(bars),
        "data.hash": data_hash(bars),
        "engine": request.engine.model_dump(),
    }
    report = {"classification": evaluation.classification, "hybrid": hybrid, "baseline": baseline,
              "buy_and_hold": evaluation.buy_and_hold, "folds": evaluation.folds}
    artifacts = {
        "scaler.json": json.dumps(evaluation.last_model.scaler.to_dict()).encode(),
        "feature_names.json": json.dumps(columns).encode(),
        "feature_spec.json": request.features.model_dump_json().encode(),
        "label_spec.json": request.labels.model_dump_json().encode(),
        "evaluation.json": json.dumps(report, default=str, indent=2).encode(),
        "evaluation.png": _plot(evaluation, features),
    }
    tags = {"feature_spec_hash": request.features.hash(), "symbol": instrument.symbol, "timeframe": str(timeframe)}
    if progress is not None:
        progress(f"logging {name} to MLflow")
    logged = registry.log_training(
        name, evaluation.last_model.net, example, params, evaluation.last_model.history, metrics, artifacts, tags
    )
    current = registry.production(name)
    production = registry.scores(current) if current is not None else None
    decision: Decision = decide(
        Scores(_finite(hybrid["sharpe"]), _finite(hybrid["max_drawdown"], 1.0), int(hybrid["trades"])),
        Scores(_finite(baseline["sharpe"]), _finite(baseline["max_drawdown"], 1.0)),
        production,
        request.promote,
    )
    registry.record_decision(name, logged.version, decision)
    if decision.promote:
        registry.promote(name, logged.version, decision.reason)
    return TrainOutcome(
        logged.run_id, name, logged.version, metrics, decision.promote, decision.reason, evaluation.last_model, features
    )


def _finite(value: object, default: float = float("-inf")) -> float:
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else default


def _plot(evaluation: Evaluation, features: pd.DataFrame) -> bytes:
    """Out-of-sample equity of hybrid, rule-only and buy-and-hold, above the model's probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[2, 1])
    curves = evaluation.curves
    for column, label in (("hybrid", "hybrid (model-gated)"), ("baseline", "rule only"),
                          ("buy_and_hold", "buy and hold")):
        top.plot(curves["timestamp"], curves[column], label=label, linewidth=1)
    top.set_ylabel("equity (out of sample)")
    top.legend(loc="upper left")
    bottom.plot(features["timestamp"], evaluation.probabilities, linewidth=0.6, color="tab:purple")
    bottom.set_ylabel("P(up)")
    bottom.set_ylim(0, 1)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
