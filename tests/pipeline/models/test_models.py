"""Sequence models on real BTC/USDT 1h bars: training, reproducibility, early stopping, scaling, inference."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
import torch

from pipeline.domain import DataError
from pipeline.models import (
    MODEL_KINDS,
    ModelConfig,
    Scaler,
    TrainedModel,
    classification_metrics,
    load_net,
    pick_device,
    predict_proba,
    predict_window,
    train,
)
from tests.conftest import REPO, shared_file

N_BARS = 3000
HORIZON = 12
DEAD_ZONE = 0.002
TINY = {"hidden": 8, "seq_len": 16, "epochs": 3}


def _lagged_change(values: np.ndarray, bars: int) -> np.ndarray:
    out = np.full_like(values, np.nan)
    out[bars:] = values[bars:] - values[:-bars]
    return out


def btc_dataset() -> tuple[np.ndarray, np.ndarray]:
    """Causal features of the last 3,000 BTC/USDT 1h bars (warm-up rows are NaN) and 12-bar up/down labels."""
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).tail(N_BARS).reset_index(drop=True)
    close = bars["close"].to_numpy()
    log_close = np.log(close)
    returns = _lagged_change(log_close, 1)
    features = np.column_stack(
        [
            returns,
            _lagged_change(log_close, 4),
            _lagged_change(log_close, 12),
            pd.Series(returns).rolling(24).std().to_numpy(),
            close / pd.Series(close).rolling(24).mean().to_numpy() - 1.0,
        ]
    ).astype(np.float32)
    forward = np.full_like(close, np.nan)
    forward[:-HORIZON] = close[HORIZON:] / close[:-HORIZON] - 1.0
    labels = np.where(forward > DEAD_ZONE, 1.0, np.where(forward < -DEAD_ZONE, 0.0, np.nan)).astype(np.float32)
    return features, labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return btc_dataset()


TRAIN = np.arange(0, 2100)
VAL = np.arange(2100, 2550)
TEST = np.arange(2550, N_BARS)


@pytest.fixture(scope="module")
def models(data: tuple[np.ndarray, np.ndarray]) -> dict[str, TrainedModel]:
    X, y = data
    return {kind: train(X, y, TRAIN, VAL, ModelConfig(kind=kind, **TINY)) for kind in MODEL_KINDS}


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_kind_trains_and_scores_the_test_split(
    kind: str, data: tuple[np.ndarray, np.ndarray], models: dict[str, TrainedModel]
) -> None:
    X, y = data
    model = models[kind]
    assert model.config.kind == kind
    assert model.net.kind == kind
    assert model.n_features == X.shape[1] == 5
    assert 1 <= len(model.history) <= 3
    assert [r["epoch"] for r in model.history] == list(range(1, len(model.history) + 1))
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in model.history)
    assert model.best_val_loss == min(r["val_loss"] for r in model.history)
    assert model.samples_per_second > 0
    assert not model.net.training
    assert all(p.device.type == "cpu" for p in model.net.parameters())
    # The warm-up rows (NaN features) are skipped, not fed to the network: the losses above are finite.
    labelled = ~np.isnan(y[TRAIN]) & (24 + TINY["seq_len"] - 1 <= TRAIN)
    assert model.train_samples == int(labelled.sum())

    p = predict_proba(model, X)
    assert p.shape == (N_BARS,)
    assert np.isnan(p[: TINY["seq_len"] - 1]).all()
    scored = p[TEST]
    assert np.isfinite(scored).all()
    assert ((scored > 0) & (scored < 1)).all()
    metrics = classification_metrics(y[TEST], scored)
    assert metrics["n"] == int((~np.isnan(y[TEST])).sum())
    assert metrics["log_loss"] is not None and 0.5 < metrics["log_loss"] < 1.0


def test_training_reports_progress_every_epoch(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    calls: list[tuple[int, int, float, float]] = []
    model = train(X, y, TRAIN, VAL, ModelConfig(kind="gru", **TINY), progress=lambda *args: calls.append(args))
    assert [(e, t) for e, t, _, _ in calls] == [(r["epoch"], 3) for r in model.history]
    assert [(tl, vl) for _, _, tl, vl in calls] == [(r["train_loss"], r["val_loss"]) for r in model.history]


def test_same_seed_gives_bit_identical_runs_and_another_seed_does_not(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = data
    config = ModelConfig(kind="lstm_attention", hidden=8, seq_len=16, epochs=2, patience=5, dropout=0.2)
    first = train(X, y, TRAIN, VAL, config)
    second = train(X, y, TRAIN, VAL, config)
    other = train(X, y, TRAIN, VAL, config.model_copy(update={"seed": 8}))

    def losses(model: TrainedModel) -> list[tuple[float, float]]:
        return [(r["train_loss"], r["val_loss"]) for r in model.history]

    assert losses(first) == losses(second)
    assert first.best_epoch == second.best_epoch
    assert _states_equal(first.net, second.net)
    assert np.array_equal(predict_proba(first, X), predict_proba(second, X), equal_nan=True)

    assert losses(first) != losses(other)
    assert not _states_equal(first.net, other.net)
    assert not np.array_equal(predict_proba(first, X), predict_proba(other, X), equal_nan=True)
    assert not torch.are_deterministic_algorithms_enabled(), "training must restore the global setting"


def test_early_stopping_keeps_the_best_epochs_weights(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    eager = ModelConfig(kind="lstm", hidden=16, seq_len=16, epochs=40, lr=0.01, patience=1)
    stopped = train(X, y, TRAIN, VAL, eager)
    ran = len(stopped.history)
    assert ran < eager.epochs, "an over-eager learner on this data must stop early"
    assert ran == stopped.best_epoch + eager.patience
    val_losses = [r["val_loss"] for r in stopped.history]
    assert stopped.best_val_loss == min(val_losses)
    assert val_losses[-1] > stopped.best_val_loss + 1e-3

    # The returned network scores the validation split at the best epoch's loss, not the last epoch's.
    p = predict_proba(stopped, X)
    rows = VAL[~np.isnan(y[VAL])]
    rescored = classification_metrics(y[rows], p[rows])["log_loss"]
    assert rescored == pytest.approx(stopped.best_val_loss, abs=1e-6)
    # Runs are reproducible, so training for exactly best_epoch epochs reaches the very same weights.
    exact = train(X, y, TRAIN, VAL, eager.model_copy(update={"epochs": stopped.best_epoch, "patience": 100}))
    assert _states_equal(stopped.net, exact.net)


def test_scaler_is_fitted_on_the_training_rows_only(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    train_idx = np.arange(100, 1500)
    model = train(X, y, train_idx, VAL, ModelConfig(kind="gru", hidden=8, seq_len=16, epochs=1))
    rows = train_idx[~np.isnan(y[train_idx])]
    expected_mean = X[rows].astype(np.float64).mean(axis=0)
    expected_std = X[rows].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(model.scaler.mean, expected_mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.scaler.std, expected_std, rtol=1e-6, atol=1e-9)
    assert not np.allclose(model.scaler.mean, np.nanmean(X.astype(np.float64), axis=0), rtol=1e-3, atol=0)
    # The network standardises with exactly these statistics.
    assert np.array_equal(model.net.mean.numpy(), model.scaler.mean)
    assert np.array_equal(model.net.std.numpy(), model.scaler.std)


def test_scaler_floors_std_and_round_trips_through_a_dict() -> None:
    values = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=np.float32)
    scaler = Scaler.fit(values)
    assert scaler.mean.tolist() == [3.0, 5.0]
    assert scaler.std[1] == np.float32(1e-8)
    np.testing.assert_allclose(scaler.std[0], np.sqrt(8 / 3), rtol=1e-7)
    again = Scaler.from_dict(scaler.to_dict())
    assert np.array_equal(again.mean, scaler.mean) and np.array_equal(again.std, scaler.std)
    assert np.array_equal(again.transform(values)[:, 1], np.zeros(3, dtype=np.float32))
    with pytest.raises(DataError, match="equally long"):
        Scaler.from_dict({"mean": [0.0, 1.0], "std": [1.0]})
    with pytest.raises(DataError, match="positive"):
        Scaler.from_dict({"mean": [0.0], "std": [0.0]})


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_batch_and_single_window_predictions_agree(
    kind: str, data: tuple[np.ndarray, np.ndarray], models: dict[str, TrainedModel]
) -> None:
    X, _ = data
    model = models[kind]
    seq_len = model.config.seq_len
    batch = predict_proba(model, X, seq_len, batch_size=97)
    rows = np.r_[TEST, np.arange(seq_len - 1, seq_len + 60)]  # the test split and the NaN warm-up edge
    single = np.array([predict_window(model.net, X[i - seq_len + 1 : i + 1]) for i in rows])
    np.testing.assert_array_equal(np.isnan(single), np.isnan(batch[rows]))
    assert np.nanmax(np.abs(single - batch[rows])) <= 1e-6
    assert np.isfinite(single).sum() > len(TEST)


def test_state_dict_and_whole_module_round_trip_give_identical_predictions(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], models: dict[str, TrainedModel]
) -> None:
    X, _ = data
    for kind, model in models.items():
        expected = predict_proba(model, X)
        weights = tmp_path / f"{kind}.pt"
        torch.save(model.net.state_dict(), weights)
        rebuilt = load_net(model.config, model.n_features, torch.load(weights, weights_only=True))
        assert np.array_equal(predict_proba(rebuilt, X), expected, equal_nan=True)
        module = tmp_path / f"{kind}-module.pt"
        torch.save(model.net, module)
        loaded = torch.load(module, weights_only=False)  # our own file, written just above
        assert np.array_equal(predict_proba(loaded, X), expected, equal_nan=True)


def test_classification_metrics_on_hand_computed_cases() -> None:
    y = np.array([0, 0, 1, 1], dtype=np.float32)
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(y, p)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(0.75)  # 3 of the 4 (up, down) pairs are ordered correctly
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4)

    tied = classification_metrics(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.2, 0.9]))
    assert tied["auc"] == pytest.approx(3.5 / 4)  # the tied (0.5, 0.5) pair counts half
    assert tied["accuracy"] == pytest.approx(0.75)  # 0.5 counts as up

    with_gaps = classification_metrics(np.array([1.0, np.nan, 0.0, 1.0]), np.array([0.0, 0.3, 0.0, np.nan]))
    assert with_gaps["n"] == 2
    assert with_gaps["log_loss"] == pytest.approx(-math.log(1e-15) / 2)
    assert with_gaps["auc"] == pytest.approx(0.5)

    assert classification_metrics(np.ones(3), np.array([0.2, 0.6, 0.9]))["auc"] is None
    perfect = classification_metrics(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    assert perfect["auc"] == 1.0 and perfect["brier"] == 0.0 and perfect["accuracy"] == 1.0

    with pytest.raises(DataError, match="0 \\(down\\), 1 \\(up\\)"):
        classification_metrics(np.array([2.0]), np.array([0.5]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        classification_metrics(np.array([1.0]), np.array([1.5]))
    with pytest.raises(DataError, match="same length"):
        classification_metrics(np.array([1.0, 0.0]), np.array([0.5]))


def test_device_picking_returns_the_cpu_here() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator; the CPU fallback cannot be observed")
    assert pick_device() == torch.device("cpu")


def test_bad_inputs_get_clear_errors(data: tuple[np.ndarray, np.ndarray], models: dict[str, TrainedModel]) -> None:
    X, y = data
    config = ModelConfig(kind="lstm", **TINY)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        ModelConfig(kind="lstm", hiden=8)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(kind="transformer")
    with pytest.raises(pydantic.ValidationError):
        config.hidden = 4  # type: ignore[misc]
    with pytest.raises(DataError, match="labels y must be 0"):
        train(X, np.where(np.isnan(y), np.nan, y * 2), TRAIN, VAL, config)
    with pytest.raises(DataError, match="labels y has 10 rows"):
        train(X, y[:10], TRAIN, VAL, config)
    with pytest.raises(DataError, match="val_idx holds no sample"):
        train(X, y, TRAIN, np.arange(0, 10), config)
    with pytest.raises(DataError, match="share sample rows"):
        train(X, y, TRAIN, np.arange(2000, 2200), config)
    with pytest.raises(DataError, match="outside"):
        train(X, y, TRAIN, np.array([N_BARS]), config)
    net = models["lstm"].net
    with pytest.raises(DataError, match="window must have shape \\(16, 5\\)"):
        predict_window(net, X[:8])
    with pytest.raises(DataError, match="seq_len 32 differs"):
        predict_proba(net, X, 32)
    with pytest.raises(DataError, match="expects 5"):
        predict_proba(net, X[:, :3])
    with pytest.raises(DataError, match="expected a trained tradeforge sequence network"):
        predict_window(torch.nn.Linear(5, 1), X[:16])


def test_the_package_loads_torch_lazily_and_never_mlflow_prefect_or_streamlit() -> None:
    code = (
        "import sys\n"
        "from pipeline.models import ModelConfig, classification_metrics\n"
        "assert 'torch' not in sys.modules, 'config and metrics must not load torch'\n"
        "import pipeline.models as m\n"
        "m.train, m.predict_proba, m.predict_window, m.build_net\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'mlflow', 'prefect', 'streamlit'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
