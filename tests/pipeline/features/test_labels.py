"""Labels on hand-made series (forward returns, dead zone, unlabeled tail, regression), the spec hash, and the
purged and embargoed time splits and walk-forward folds."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.domain import DataError
from pipeline.features.labels import LabelSpec, Split, make_labels, time_splits, walk_forward
from tests.conftest import shared_file


def bars_of(close: list[float]) -> pd.DataFrame:
    n = len(close)
    stamps = pd.Series(pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC").as_unit("ms"))
    return pd.DataFrame(
        {"timestamp": stamps, "open": close, "high": close, "low": close, "close": close, "volume": 1.0}
    )


# ------------------------------------------------------------------------------------------------ labels
def test_labels_of_a_hand_made_series() -> None:
    close = [100.0, 101.0, 100.5, 100.6, 99.0, 99.05, 102.0]
    labels = make_labels(bars_of(close), LabelSpec(horizon=2, dead_zone=0.003))
    expected_forward = [
        np.log(100.5 / 100.0),  # +0.50 %: up
        np.log(100.6 / 101.0),  # -0.40 %: down
        np.log(99.0 / 100.5),  # -1.50 %: down
        np.log(99.05 / 100.6),  # -1.55 %: down
        np.log(102.0 / 99.0),  # +2.99 %: up
        np.nan,
        np.nan,
    ]
    np.testing.assert_array_equal(labels["forward_return"].to_numpy(), expected_forward)
    np.testing.assert_array_equal(labels["label"].to_numpy(), [1.0, 0.0, 0.0, 0.0, 1.0, np.nan, np.nan])
    assert list(labels.columns) == ["timestamp", "forward_return", "label"]
    assert labels["timestamp"].equals(bars_of(close)["timestamp"])


def test_dead_zone_leaves_small_moves_unlabeled() -> None:
    close = [100.0, 100.05, 99.9, 100.0, 100.5, 100.0]
    labels = make_labels(bars_of(close), LabelSpec(horizon=1, dead_zone=0.002))
    # moves: +0.05 %, -0.15 %, +0.10 %, +0.50 %, -0.50 %
    np.testing.assert_array_equal(labels["label"].to_numpy(), [np.nan, np.nan, np.nan, 1.0, 0.0, np.nan])
    exact = make_labels(bars_of([100.0, 100.0, 101.0]), LabelSpec(horizon=1, dead_zone=0.0))
    np.testing.assert_array_equal(exact["label"].to_numpy(), [np.nan, 1.0, np.nan])  # no move, no class


def test_last_horizon_rows_are_unlabeled_on_real_data() -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:2_000].reset_index(drop=True)
    spec = LabelSpec()
    labels = make_labels(bars, spec)
    assert labels["forward_return"].iloc[-spec.horizon :].isna().all()
    assert labels["label"].iloc[-spec.horizon :].isna().all()
    assert labels["forward_return"].iloc[: -spec.horizon].notna().all()
    close = bars["close"].to_numpy()
    np.testing.assert_array_equal(labels["forward_return"].to_numpy()[:-12], np.log(close[12:] / close[:-12]))
    assert set(np.unique(labels["label"].dropna())) == {0.0, 1.0}


def test_regression_labels_are_the_forward_return() -> None:
    labels = make_labels(bars_of([100.0, 100.1, 101.0, 99.0]), LabelSpec(horizon=1, kind="regression"))
    np.testing.assert_array_equal(labels["label"].to_numpy(), labels["forward_return"].to_numpy())
    assert np.isnan(labels["label"].iloc[-1])


def test_bad_closes_are_refused() -> None:
    with pytest.raises(DataError, match=r"row 1 holds 0\.0"):
        make_labels(bars_of([100.0, 0.0, 101.0]), LabelSpec(horizon=1))
    with pytest.raises(DataError, match="lacks column 'close'"):
        make_labels(bars_of([100.0, 101.0]).drop(columns="close"), LabelSpec(horizon=1))


def test_label_spec_hash_and_validation() -> None:
    assert LabelSpec().hash() == LabelSpec(horizon=12, dead_zone=0.002).hash()
    variants = {LabelSpec(horizon=6).hash(), LabelSpec(dead_zone=0.001).hash(), LabelSpec(kind="regression").hash()}
    assert len(variants) == 3
    assert LabelSpec().hash() not in variants
    for fields in ({"horizon": 0}, {"dead_zone": -0.1}, {"kind": "ranking"}, {"extra": 1}):
        with pytest.raises(ValidationError):
            LabelSpec.model_validate(fields)
    with pytest.raises(ValidationError):
        LabelSpec().horizon = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ splits
def assert_purged(split: Split, horizon: int, embargo: int) -> None:
    """Time order, purge (no label window reaches the next block) and at least ``horizon + embargo`` rows apart."""
    blocks = [split.train, split.validation, split.test]
    for block in blocks:
        assert block.dtype == np.int64
        assert block.size > 0
        assert (np.diff(block) == 1).all()  # contiguous, ascending
    for before, after in itertools.pairwise(blocks):
        assert not (before + horizon >= after[0]).any()  # purge
        assert after[0] - before[-1] - 1 >= horizon + embargo  # purged rows + embargo between blocks
        assert after[0] - before[-1] - 1 >= 2 * horizon


def test_time_splits_are_ordered_purged_and_embargoed() -> None:
    split = time_splits(1_000, horizon=12)
    assert_purged(split, 12, 12)
    assert split.train.tolist() == list(range(0, 700 - 12))
    assert split.validation.tolist() == list(range(700 + 12, 850 - 12))
    assert split.test.tolist() == list(range(850 + 12, 1_000))
    wide = time_splits(1_000, horizon=5, train=0.6, validation=0.2, embargo=20)
    assert_purged(wide, 5, 20)
    assert wide.validation[0] == 620
    assert wide.test[0] == 820


def test_time_splits_refuse_bad_arguments() -> None:
    with pytest.raises(DataError, match=r"embargo \(3 rows\) must be at least the label horizon \(12 rows\)"):
        time_splits(1_000, horizon=12, embargo=3)
    with pytest.raises(DataError, match="too few to split"):
        time_splits(60, horizon=12)
    with pytest.raises(DataError, match="too few to split"):
        time_splits(0, horizon=1)
    with pytest.raises(DataError, match="fractions"):
        time_splits(1_000, horizon=1, train=0.9, validation=0.1)
    with pytest.raises(DataError, match="horizon"):
        time_splits(1_000, horizon=0)


def test_walk_forward_folds_are_ordered_purged_and_tile_the_tail() -> None:
    n, folds, horizon, min_train = 10_000, 5, 12, 3_000
    splits = walk_forward(n, folds, horizon, min_train)
    assert len(splits) == folds
    for split in splits:
        assert_purged(split, horizon, horizon)
    assert splits[0].train.size >= min_train
    assert splits[-1].test[-1] == n - 1
    for earlier, later in itertools.pairwise(splits):
        assert earlier.test[-1] < later.test[0]  # non-overlapping, in time order
        assert later.test[0] - earlier.test[-1] - 1 == horizon  # only the embargo between test blocks
        assert later.train.size > earlier.train.size  # expanding window
        assert later.validation[0] == earlier.test[0]  # the earlier test block validates the next fold
    tests = np.concatenate([s.test for s in splits])
    assert len(np.unique(tests)) == len(tests)


def test_walk_forward_with_a_longer_embargo_and_the_smallest_n() -> None:
    folds, horizon, embargo, min_train = 3, 4, 6, 50
    smallest = min_train + horizon + (folds + 1) * (horizon + embargo + 1)
    splits = walk_forward(smallest, folds, horizon, min_train, embargo=embargo)
    for split in splits:
        assert_purged(split, horizon, embargo)
        assert split.validation.size == 1
    assert splits[0].train.size == min_train
    with pytest.raises(DataError, match=f"at least {smallest} rows are needed"):
        walk_forward(smallest - 1, folds, horizon, min_train, embargo=embargo)


def test_walk_forward_refuses_bad_arguments() -> None:
    with pytest.raises(DataError, match="too few"):
        walk_forward(100, folds=5, horizon=12, min_train=50)
    with pytest.raises(DataError, match="at least 1 fold"):
        walk_forward(10_000, folds=0, horizon=12, min_train=50)
    with pytest.raises(DataError, match="min_train"):
        walk_forward(10_000, folds=3, horizon=12, min_train=0)
    with pytest.raises(DataError, match="embargo"):
        walk_forward(10_000, folds=3, horizon=12, min_train=50, embargo=11)
