"""The model registry: MLflow tracking and registry behind one small API. The only module that imports mlflow.

Store: by default a SQLite database ``mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts`` (setting
``mlflow_tracking_uri``; an ``http(s)://`` tracking server works too). A SQLite file that is not an MLflow store
(tradeforge's state database, another application's, a file that is not a database) is refused before MLflow
touches it (:mod:`pipeline.models.tracking_store`). One registered model per strategy/symbol/timeframe, e.g.
``hybrid-BTC-USDT-1h``. The version that carries the alias ``production`` is the one everything trades; a user who
moves the alias in the MLflow UI is obeyed, because every reader asks MLflow for the alias and never remembers a
version itself.

Only the parameters given here are logged: model configuration, feature and label specs, data range and hash.
No setting, secret or environment variable is ever sent to MLflow.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from pipeline.clock import Clock, SystemClock
from pipeline.domain import DataError
from pipeline.models import predict_proba
from pipeline.models.promotion import Decision, Scores
from pipeline.models.tracking_store import check_tracking_store

PRODUCTION = "production"
EXPERIMENT = "tradeforge-training"
BACKTEST_EXPERIMENT = "nightly-backtests"
TAG_SPEC_HASH = "feature_spec_hash"


def model_name(strategy: str, symbol_key: str, timeframe: str) -> str:
    """The registered model's name for a strategy on a symbol and timeframe, e.g. ``hybrid-BTC-USDT-1h``."""
    return f"{strategy}-{symbol_key}-{timeframe}"


@dataclass(frozen=True)
class LoggedVersion:
    name: str
    version: str
    run_id: str


@dataclass(frozen=True)
class ProductionModel:
    """The model behind an alias, with what is needed to feed it correctly."""

    name: str
    version: str
    run_id: str
    net: torch.nn.Module
    feature_spec_hash: str
    feature_spec: dict[str, Any]
    feature_names: list[str]
    seq_len: int
    label_spec: dict[str, Any]

    def check(self, spec_hash: str, columns: list[str]) -> None:
        """Refuse features built with another spec, or with other columns, than the model was trained on."""
        if spec_hash != self.feature_spec_hash:
            raise DataError(
                f"model {self.name} v{self.version} was trained on feature spec {self.feature_spec_hash}; "
                f"these features were built with spec {spec_hash}: rebuild them with the model's spec"
            )
        if columns != self.feature_names:
            raise DataError(f"model {self.name} v{self.version} expects feature columns {self.feature_names}")

    def predict(self, features: pd.DataFrame, spec_hash: str) -> np.ndarray:
        """Probability of an up-move for every row (NaN until a full window of ``seq_len`` rows exists)."""
        columns = [c for c in features.columns if c != "timestamp"]
        self.check(spec_hash, columns)
        matrix = features[columns].to_numpy(dtype=np.float32)
        return predict_proba(self.net, matrix, self.seq_len)


def _artifact_root(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return (database.parent.resolve() / "artifacts").as_uri()
    return None


class ModelRegistry:
    """Training runs, registered versions, the production alias and the promotion tags."""

    def __init__(self, tracking_uri: str, experiment: str = EXPERIMENT, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        """Stamps promotions (``promoted_at``)."""
        check_tracking_store(tracking_uri)
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            root = _artifact_root(tracking_uri)
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=root)
        else:
            self.experiment_id = found.experiment_id

    # ------------------------------------------------------------------ logging a training run
    def log_training(
        self,
        name: str,
        net: torch.nn.Module,
        input_example: np.ndarray,
        params: Mapping[str, Any],
        history: list[dict[str, float]],
        metrics: Mapping[str, float | None],
        artifacts: Mapping[str, bytes],
        tags: Mapping[str, str],
    ) -> LoggedVersion:
        """Log a run (params, per-epoch and final metrics, artifacts, the model) and register a version."""
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=name) as run:
            mlflow.log_params({key: _param(value) for key, value in params.items()})
            for row in history:
                step = int(row["epoch"])
                mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=step)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
            mlflow.set_tags(dict(tags))
            _log_artifacts(artifacts)
            net.eval()
            example = np.array(input_example, dtype=np.float32, copy=True)
            with torch.inference_mode():
                output = net(torch.from_numpy(example)).numpy()
            quiet = logging.getLogger("mlflow.pytorch")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # the pickle-format notice: our own classes, from our own store
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = mlflow.pytorch.log_model(
                    net,
                    name="model",
                    input_example=example,
                    signature=infer_signature(example, output),
                    serialization_format="pickle",
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
                    registered_model_name=name,
                )
            quiet.setLevel(level)
        version = str(info.registered_model_version)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)
        return LoggedVersion(name, version, run.info.run_id)

    # ------------------------------------------------------------------ logging a backtest
    def log_backtest_run(
        self,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        artifacts: Mapping[str, bytes],
        tags: Mapping[str, str],
        experiment: str = BACKTEST_EXPERIMENT,
    ) -> str:
        """Log one backtest as a run of ``experiment`` (created when missing): its parameters, its finite numeric
        metrics and its artifacts; returns the run id."""
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found is not None
            else self.client.create_experiment(experiment, artifact_location=_artifact_root(self.tracking_uri))
        )
        numbers = {
            key: float(value) for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params({key: _param(value) for key, value in params.items()})
            mlflow.log_metrics(numbers)
            mlflow.set_tags(dict(tags))
            _log_artifacts(artifacts)
        return str(run.info.run_id)

    def backtest_runs(self, experiment: str = BACKTEST_EXPERIMENT) -> list[dict[str, Any]]:
        """Every run of a backtest experiment: run id, name, params, metrics and tags (newest first)."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = self.client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
        return [{"run_id": r.info.run_id, "name": r.info.run_name, "params": dict(r.data.params),
                 "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in runs]

    # ------------------------------------------------------------------ reading
    def production(self, name: str) -> ModelVersion | None:
        try:
            return self.client.get_model_version_by_alias(name, PRODUCTION)
        except MlflowException:
            return None

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def scores(self, version: ModelVersion) -> Scores:
        metrics = self.run_metrics(str(version.run_id))
        return Scores(
            metrics.get("oos_sharpe", float("-inf")),
            metrics.get("oos_max_drawdown", 1.0),
            int(metrics.get("oos_trades", 0)),
        )

    def versions(self, name: str) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name = '{_quote(name)}'")
        return sorted(found, key=lambda v: int(v.version))

    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model and version with its aliases and headline out-of-sample metrics."""
        rows = []
        for model in self.client.search_registered_models():
            aliases_of: dict[str, list[str]] = {}
            for alias, number in self.client.get_registered_model(model.name).aliases.items():
                aliases_of.setdefault(str(number), []).append(alias)
            for version in self.versions(model.name):
                metrics = self.run_metrics(str(version.run_id))
                aliases = aliases_of.get(str(version.version), [])
                rows.append(
                    {
                        "name": model.name,
                        "version": str(version.version),
                        "aliases": aliases,
                        "production": PRODUCTION in aliases,
                        "run_id": version.run_id,
                        "created": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC").isoformat(),
                        "oos_sharpe": metrics.get("oos_sharpe"),
                        "oos_max_drawdown": metrics.get("oos_max_drawdown"),
                        "oos_auc": metrics.get("oos_auc"),
                        "promotion": version.tags.get("promotion_reason", ""),
                    }
                )
        return rows

    # ------------------------------------------------------------------ promotion
    def record_decision(self, name: str, version: str, decision: Decision) -> None:
        """Write the gate's decision and numbers as tags on the version."""
        self.client.set_model_version_tag(name, version, "promotion_decision",
                                          "promoted" if decision.promote else "rejected")
        self.client.set_model_version_tag(name, version, "promotion_reason", decision.reason)
        for key, value in decision.numbers.items():
            self.client.set_model_version_tag(name, version, f"gate_{key}", f"{value:.6g}")

    def promote(self, name: str, version: str, reason: str) -> None:
        """Move the production alias to ``version`` and record when and why."""
        self._require_version(name, version)
        self.client.set_registered_model_alias(name, PRODUCTION, version)
        self.client.set_model_version_tag(name, version, "promoted_at", self.clock.now().isoformat())
        self.client.set_model_version_tag(name, version, "promotion_reason", reason)

    def rollback(self, name: str) -> str:
        """Give the production alias back to the previously promoted version; returns that version."""
        current = self.production(name)
        if current is None:
            raise DataError(f"model {name!r} has no production version to roll back from")
        promoted = [
            v for v in self.versions(name) if v.version != current.version and "promoted_at" in v.tags
        ]
        current_at = current.tags.get("promoted_at", "9999")
        earlier = [v for v in promoted if v.tags["promoted_at"] < current_at] or promoted
        if not earlier:
            raise DataError(f"model {name!r} has no earlier promoted version to roll back to")
        target = max(earlier, key=lambda v: v.tags["promoted_at"])
        self.client.set_registered_model_alias(name, PRODUCTION, target.version)
        self.client.set_model_version_tag(name, target.version, "promoted_at", self.clock.now().isoformat())
        self.client.set_model_version_tag(name, target.version, "promotion_reason", f"rollback from v{current.version}")
        return str(target.version)

    def _require_version(self, name: str, version: str) -> None:
        try:
            self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise DataError(f"model {name!r} has no version {version!r}") from exc

    # ------------------------------------------------------------------ loading
    def load_production(self, name: str) -> ProductionModel:
        """The model carrying the production alias, with its metadata; DataError when there is none."""
        version = self.production(name)
        if version is None:
            raise DataError(f"model {name!r} has no version with the {PRODUCTION!r} alias")
        return self.load_version(name, str(version.version))

    def load_version(self, name: str, version: str) -> ProductionModel:
        self._require_version(name, version)
        details = self.client.get_model_version(name, version)
        run_id = str(details.run_id)
        with tempfile.TemporaryDirectory() as folder:
            spec = json.loads(Path(self.client.download_artifacts(run_id, "feature_spec.json", folder)).read_text())
            names = json.loads(Path(self.client.download_artifacts(run_id, "feature_names.json", folder)).read_text())
            label = json.loads(Path(self.client.download_artifacts(run_id, "label_spec.json", folder)).read_text())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = mlflow.pytorch.load_model(f"models:/{_quote(name)}/{version}", map_location="cpu")
        net.eval()
        params = self.client.get_run(run_id).data.params
        return ProductionModel(
            name=name,
            version=version,
            run_id=run_id,
            net=net,
            feature_spec_hash=details.tags.get(TAG_SPEC_HASH, ""),
            feature_spec=spec,
            feature_names=list(names),
            seq_len=int(params["model.seq_len"]),
            label_spec=label,
        )


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]


def _quote(name: str) -> str:
    return name.replace("'", "")


def _log_artifacts(artifacts: Mapping[str, bytes]) -> None:
    """Log in-memory files (name → bytes) as artifacts of the active run."""
    with tempfile.TemporaryDirectory() as folder:
        for filename, payload in artifacts.items():
            path = Path(folder) / filename
            path.write_bytes(payload)
            mlflow.log_artifact(str(path))
