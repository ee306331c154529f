"""Registered models for the dashboard: versions with their out-of-sample metrics and gate tags, manual
promotion and rollback (both through :class:`pipeline.models.registry.ModelRegistry`), and the production model's
probability over a chart's bars.

The registry (and with it MLflow and torch) is imported only when a function needs it. With a SQLite
tracking store that does not exist yet there are no models, and nothing is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.domain import AssetClass, DataError, Timeframe, epoch_ms, symbol_key
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.models.registry import ModelRegistry, ProductionModel

MODEL_COLUMNS = (
    "name", "version", "production", "aliases", "created", "oos_sharpe", "oos_max_drawdown", "oos_auc",
    "oos_accuracy", "oos_log_loss", "oos_trades", "decision", "promotion", "gate", "run_id",
)
PROBABILITY_MAX_BARS = 20_000
"""Above this many bars the chart does not score the model (it would take seconds)."""


def _store_exists(settings: Settings) -> bool:
    uri = settings.mlflow_tracking_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def registry(settings: Settings) -> ModelRegistry | None:
    """The model registry, or None when its SQLite store does not exist yet (nothing is created then)."""
    if not _store_exists(settings):
        return None
    from pipeline.models.registry import ModelRegistry

    return ModelRegistry(settings.mlflow_tracking_uri)


def model_versions(settings: Settings) -> pd.DataFrame:
    """Every registered version with its aliases, out-of-sample metrics and promotion-gate tags."""
    found = registry(settings)
    if found is None:
        return pd.DataFrame(columns=list(MODEL_COLUMNS))
    rows: list[dict[str, Any]] = []
    for row in found.list_models():
        version = found.client.get_model_version(row["name"], row["version"])
        tags = dict(version.tags)
        metrics = found.run_metrics(str(row["run_id"]))
        gate = {key.removeprefix("gate_"): value for key, value in sorted(tags.items()) if key.startswith("gate_")}
        rows.append({
            "name": row["name"], "version": row["version"], "production": bool(row["production"]),
            "aliases": ", ".join(row["aliases"]), "created": pd.Timestamp(row["created"]),
            "oos_sharpe": metrics.get("oos_sharpe"), "oos_max_drawdown": metrics.get("oos_max_drawdown"),
            "oos_auc": metrics.get("oos_auc"), "oos_accuracy": metrics.get("oos_accuracy"),
            "oos_log_loss": metrics.get("oos_log_loss"), "oos_trades": metrics.get("oos_trades"),
            "decision": tags.get("promotion_decision", ""), "promotion": tags.get("promotion_reason", ""),
            "gate": "; ".join(f"{k}={v}" for k, v in gate.items()), "run_id": row["run_id"],
        })
    frame = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    return frame.sort_values(["name", "version"], key=lambda c: c.astype(int) if c.name == "version" else c,
                             ignore_index=True)


def production_versions(settings: Settings) -> dict[str, str]:
    """The version carrying the production alias, per registered model that has one."""
    frame = model_versions(settings)
    chosen = frame.loc[frame["production"]]
    return dict(zip(chosen["name"], chosen["version"], strict=True))


def _require(settings: Settings) -> ModelRegistry:
    found = registry(settings)
    if found is None:
        raise DataError(f"no model registry at {settings.mlflow_tracking_uri}: train a model first")
    return found


def promote(settings: Settings, name: str, version: str, who: str = "dashboard") -> None:
    """Give ``version`` of ``name`` the production alias, recorded as a manual decision by ``who``."""
    _require(settings).promote(name, version, f"promoted by hand ({who})")


def rollback(settings: Settings, name: str) -> str:
    """Give the production alias back to the previously promoted version of ``name``; returns that version."""
    return _require(settings).rollback(name)


@dataclass(frozen=True)
class Probability:
    """The production model's probability of an up-move at each bar of a series."""

    model_name: str
    version: str
    frame: pd.DataFrame
    """timestamp, probability (NaN during the model's warm-up)."""


def hybrid_model_name(symbol: str, timeframe: Timeframe) -> str:
    from pipeline.models.registry import model_name

    return model_name("hybrid", symbol_key(symbol), str(timeframe))


def load_production(settings: Settings, symbol: str, timeframe: Timeframe) -> ProductionModel | None:
    """The production model of ``hybrid-<SYMBOL>-<tf>``, or None when there is none."""
    found = registry(settings)
    if found is None:
        return None
    name = hybrid_model_name(symbol, timeframe)
    if found.production(name) is None:
        return None
    return found.load_production(name)


def probability(model: ProductionModel, bars: pd.DataFrame, asset_class: AssetClass) -> Probability:
    """Score ``bars`` (canonical, of the model's timeframe) with ``model``: rows before the feature warm-up and
    the model's window are NaN."""
    from pipeline.features.build import FeatureSpec, build_features

    if len(bars) > PROBABILITY_MAX_BARS:
        raise DataError(f"{len(bars)} bars are too many to score on the fly (at most {PROBABILITY_MAX_BARS})")
    spec = FeatureSpec.model_validate(model.feature_spec)
    values = np.full(len(bars), np.nan)
    if len(bars) > spec.warmup + model.seq_len:
        features = build_features(bars, spec, asset_class)
        values[len(bars) - len(features):] = model.predict(features, spec.hash())
    frame = pd.DataFrame({"timestamp": bars["timestamp"].to_numpy(), "probability": values})
    return Probability(model.name, model.version, frame)


def sample_at(probability_frame: pd.DataFrame, stamps: pd.Series, timeframe: Timeframe) -> np.ndarray:
    """The last probability inside each bar of ``timeframe`` opening at ``stamps`` (for down-sampled charts)."""
    keys = (epoch_ms(probability_frame["timestamp"]) // timeframe.millis) * timeframe.millis
    last = probability_frame.groupby(keys)["probability"].last()
    return last.reindex(epoch_ms(stamps)).to_numpy(dtype=np.float64)


def chart_probability(settings: Settings, model: ProductionModel, venue: str, symbol: str, timeframe: Timeframe,
                      shown: pd.DataFrame, shown_timeframe: Timeframe) -> np.ndarray:
    """The production model's probability at each shown bar (its last value inside a down-sampled bar).

    The model scores bars of its own ``timeframe`` from enough history before the first shown bar for the
    feature warm-up and its window, so the first shown bars have a value when the lake has that history.
    """
    from pipeline.data.catalog import read_bars
    from pipeline.data.lake import Lake
    from pipeline.features.build import FeatureSpec

    if shown.empty:
        return np.empty(0)
    spec = FeatureSpec.model_validate(model.feature_spec)
    first = pd.Timestamp(shown["timestamp"].iloc[0])
    end = pd.Timestamp(shown["timestamp"].iloc[-1]) + shown_timeframe.delta
    lookback = first - timeframe.delta * (spec.warmup + model.seq_len)
    bars = read_bars(settings, symbol, timeframe, lookback, end, venue)
    series = Lake(settings.lake_dir).find(symbol, venue=venue)
    asset_class = series[0].instrument.asset_class if series else AssetClass.CRYPTO
    scored = probability(model, bars, asset_class)
    return sample_at(scored.frame, shown["timestamp"], shown_timeframe)
