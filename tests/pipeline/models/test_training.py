"""The model life cycle on real BTC/USDT 1h data: train → register → gate → alias → load by alias."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.domain import DataError, Instrument, Timeframe
from pipeline.features.build import FeatureSpec, build_features
from pipeline.models import ModelConfig, predict_proba
from pipeline.models.lifecycle import TrainOutcome, TrainRequest, evaluate, train_and_register
from pipeline.models.promotion import Scores, decide
from pipeline.models.registry import PRODUCTION, ModelRegistry
from tests.conftest import shared_file
from tests.registry_state import registry_kept

BTC = Instrument.of("binance", "BTC/USDT")
H1 = Timeframe.parse("1h")
TINY = ModelConfig(kind="gru", hidden=8, seq_len=16, epochs=2, batch_size=128)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-5000:].reset_index(drop=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    folder = tmp_path_factory.mktemp("mlruns")
    return ModelRegistry(f"sqlite:///{folder / 'mlflow.db'}")


@pytest.fixture(scope="module")
def first(bars: pd.DataFrame, registry: ModelRegistry) -> TrainOutcome:
    request = TrainRequest(model=TINY, folds=2, threshold=0.0, promote="force")
    return train_and_register(bars, BTC, H1, request, registry)


@pytest.fixture
def registry_restored(first: TrainOutcome, registry: ModelRegistry) -> Iterator[None]:
    """For a test that registers versions or moves the alias of the shared model: afterwards the registry holds
    exactly the versions, tags and aliases it held before (``first`` in production), whatever the test did."""
    with registry_kept(registry, first.model_name):
        yield


@pytest.fixture
def mlflow_uris_restored() -> Iterator[None]:
    """ModelRegistry points MLflow's process-wide tracking and registry URIs (and MLFLOW_TRACKING_URI /
    MLFLOW_REGISTRY_URI) at its store, and logs runs and versions through them: a test whose code opens another
    store points them back afterwards, or this module's registry would go on logging into that other store."""
    tracking = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    registry = os.environ.get("MLFLOW_REGISTRY_URI")
    yield
    mlflow.set_tracking_uri(tracking)  # type: ignore[arg-type]  # None: unset, its variable too
    mlflow.set_registry_uri(registry)  # type: ignore[arg-type]  # None: follow the tracking URI again
    if registry is None:
        os.environ.pop("MLFLOW_REGISTRY_URI", None)


def test_cycle_registers_promotes_and_loads_by_alias_with_identical_predictions(
    first: TrainOutcome, registry: ModelRegistry
) -> None:
    assert first.promoted
    assert first.reason.startswith("forced")
    assert first.model_name == "hybrid-BTC-USDT-1h"
    loaded = registry.load_production(first.model_name)
    assert loaded.version == first.version
    assert loaded.run_id == first.run_id
    assert loaded.seq_len == TINY.seq_len
    assert loaded.feature_spec_hash == FeatureSpec().hash()
    columns = [c for c in first.features.columns if c != "timestamp"]
    before = predict_proba(first.trained, first.features[columns].to_numpy(np.float32))
    after = loaded.predict(first.features, FeatureSpec().hash())
    finite = ~np.isnan(before)
    assert finite.sum() > 1000
    assert np.array_equal(finite, ~np.isnan(after))
    assert np.max(np.abs(before[finite] - after[finite])) <= 1e-6


def test_the_run_carries_params_metrics_and_artifacts(first: TrainOutcome, registry: ModelRegistry) -> None:
    run = registry.client.get_run(first.run_id)
    params = run.data.params
    for key in ("model.kind", "model.seq_len", "features.hash", "labels.horizon", "data.first", "data.last",
                "data.hash", "symbol", "timeframe"):
        assert key in params
    assert params["features.hash"] == FeatureSpec().hash()
    for key in ("oos_log_loss", "oos_accuracy", "oos_auc", "oos_brier", "oos_sharpe", "oos_max_drawdown",
                "baseline_sharpe", "buy_and_hold_return"):
        assert key in run.data.metrics
    history = registry.client.get_metric_history(first.run_id, "val_loss")
    assert len(history) >= 1
    artifacts = {a.path for a in registry.client.list_artifacts(first.run_id)}
    assert {"scaler.json", "feature_names.json", "feature_spec.json", "label_spec.json", "evaluation.json",
            "evaluation.png"} <= artifacts
    assert not any("secret" in value.lower() or "api_key" in key.lower() for key, value in params.items())


def test_same_seed_and_data_give_the_same_metrics(bars: pd.DataFrame) -> None:
    request = TrainRequest(model=TINY, folds=2, threshold=0.0)
    _, one = evaluate(bars, H1, BTC.asset_class, request)
    _, two = evaluate(bars, H1, BTC.asset_class, request)
    assert one.classification == two.classification
    assert one.hybrid == two.hybrid
    assert np.array_equal(one.probabilities, two.probabilities, equal_nan=True)


def test_out_of_sample_rows_come_after_their_training_rows(bars: pd.DataFrame) -> None:
    request = TrainRequest(model=TINY, folds=2, threshold=0.0)
    features, evaluation = evaluate(bars, H1, BTC.asset_class, request)
    scored = ~np.isnan(evaluation.probabilities)
    first_scored = features["timestamp"][scored].iloc[0]
    assert first_scored == pd.Timestamp(evaluation.folds[0]["test_first"])
    assert all(f["test_first"] > previous["test_last"]
               for previous, f in zip(evaluation.folds, evaluation.folds[1:], strict=False))


def test_a_feature_spec_mismatch_is_refused(first: TrainOutcome, registry: ModelRegistry,
                                            bars: pd.DataFrame) -> None:
    loaded = registry.load_production(first.model_name)
    other = FeatureSpec(rsi_period=21)
    features = build_features(bars, other, BTC.asset_class)
    with pytest.raises(DataError, match="feature spec"):
        loaded.predict(features, other.hash())


def test_the_gate_refuses_a_worse_challenger_and_accepts_a_better_one() -> None:
    baseline = Scores(sharpe=0.5, max_drawdown=0.20, trades=10)
    production = Scores(sharpe=1.0, max_drawdown=0.15, trades=12)
    worse = decide(Scores(0.8, 0.15, 9), baseline, production)
    assert not worse.promote
    assert "production" in worse.reason
    deeper = decide(Scores(1.4, 0.25, 9), baseline, production)
    assert not deeper.promote
    assert "materially worse" in deeper.reason
    better = decide(Scores(1.2, 0.18, 9), baseline, production)
    assert better.promote
    assert decide(Scores(0.6, 0.2, 3), baseline, None).promote  # no production: beating the baseline suffices
    assert not decide(Scores(0.4, 0.1, 3), baseline, None).promote
    assert not decide(Scores(2.0, 0.1, 0), baseline, None).promote  # never traded out of sample
    assert decide(Scores(-5.0, 0.9, 0), baseline, production, mode="force").promote
    assert not decide(Scores(9.0, 0.0, 9), baseline, production, mode="never").promote


@pytest.mark.usefixtures("registry_restored")
def test_gate_decisions_are_tags_and_the_alias_moves_only_when_they_pass(
    first: TrainOutcome, registry: ModelRegistry, bars: pd.DataFrame
) -> None:
    before = registry.production(first.model_name)
    assert before is not None and str(before.version) == first.version
    challenger = train_and_register(bars, BTC, H1, TrainRequest(model=TINY, folds=2, threshold=0.0), registry)
    tags = registry.client.get_model_version(challenger.model_name, challenger.version).tags
    assert tags["promotion_decision"] == ("promoted" if challenger.promoted else "rejected")
    assert tags["promotion_reason"] == challenger.reason
    assert "gate_challenger_sharpe" in tags
    production = registry.production(challenger.model_name)
    assert production is not None
    assert str(production.version) == (challenger.version if challenger.promoted else first.version)


@pytest.mark.usefixtures("registry_restored")
def test_the_alias_moved_in_mlflow_is_obeyed_and_rollback_works(first: TrainOutcome, registry: ModelRegistry,
                                                                  bars: pd.DataFrame) -> None:
    name = first.model_name
    forced = train_and_register(bars, BTC, H1, TrainRequest(model=TINY, folds=2, threshold=0.0, promote="force"),
                                registry)
    assert registry.load_production(name).version == forced.version
    client = mlflow.MlflowClient(registry.tracking_uri)  # a user moving the alias, as in the MLflow UI
    client.set_registered_model_alias(name, PRODUCTION, first.version)
    assert registry.load_production(name).version == first.version
    registry.promote(name, forced.version, "by hand")
    assert registry.rollback(name) == first.version  # the version promoted before the forced one
    assert registry.load_production(name).version == first.version
    listed = [row for row in registry.list_models() if row["production"]]
    assert len(listed) == 1
    with pytest.raises(DataError, match="no version"):
        registry.promote(name, "999", "by hand")


def test_no_production_model_is_a_clear_error(registry: ModelRegistry) -> None:
    with pytest.raises(DataError, match="has no version with the 'production' alias"):
        registry.load_production("hybrid-NOPE-1h")


@pytest.mark.usefixtures("mlflow_uris_restored")
def test_cli_train_list_promote_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bars: pd.DataFrame) -> None:
    import json

    from typer.testing import CliRunner

    from tradeforge_cli.app import app

    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runner = CliRunner()
    path = tmp_path / "btc.parquet"
    bars.to_parquet(path)
    done = runner.invoke(app, ["ingest", "--source", "files", "--path", str(path), "--symbol", "BTC/USDT",
                               "--timeframe", "1h", "--json"])
    assert done.exit_code == 0, done.stderr
    built = runner.invoke(app, ["features", "build", "--symbol", "BTC/USDT", "--timeframe", "1h", "--json"])
    assert built.exit_code == 0, built.stderr
    assert json.loads(built.stdout)["spec_hash"] == FeatureSpec().hash()
    trained = runner.invoke(app, ["train", "--model", "lstm", "--symbol", "BTC/USDT", "--timeframe", "1h",
                                  "--epochs", "1", "--hidden", "8", "--seq-len", "16", "--folds", "2",
                                  "--promote", "force", "--json"])
    assert trained.exit_code == 0, trained.stderr
    document = json.loads(trained.stdout)
    assert {"run_id", "model_name", "version", "metrics", "promoted", "reason"} <= set(document)
    assert document["promoted"] is True
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert [row["production"] for row in listed] == [True]
    again = runner.invoke(app, ["train", "--model", "gru", "--symbol", "BTC/USDT", "--timeframe", "1h",
                                "--epochs", "1", "--hidden", "8", "--seq-len", "16", "--folds", "2",
                                "--promote", "never", "--json"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["promoted"] is False
    promoted = runner.invoke(app, ["models", "promote", "hybrid-BTC-USDT-1h", "2", "--json"])
    assert json.loads(promoted.stdout) == {"name": "hybrid-BTC-USDT-1h", "production": "2"}
    rolled = runner.invoke(app, ["models", "rollback", "hybrid-BTC-USDT-1h", "--json"])
    assert json.loads(rolled.stdout)["production"] == "1"
    missing = runner.invoke(app, ["models", "promote", "hybrid-BTC-USDT-1h", "9"])
    assert missing.exit_code == 1
    assert "no version '9'" in missing.stderr
