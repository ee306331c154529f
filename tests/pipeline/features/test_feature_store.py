"""The feature spec (hash, validation, the spec check) and the feature store (round trip and refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.domain import DataError
from pipeline.features.build import FeatureSpec, check_spec, load_features, store_features
from tests.pipeline.features import feature_helpers
from tests.pipeline.features.feature_helpers import DEFAULT_HASH, SPEC, crypto, stock

btc = feature_helpers.btc  # module-scoped slices of real bars
aapl = feature_helpers.aapl


# ------------------------------------------------------------------------------------------------- spec
def test_spec_hash_is_stable_and_names_the_parameters() -> None:
    assert SPEC.hash() == DEFAULT_HASH  # changing it orphans every stored feature set: bump `version` instead
    assert FeatureSpec().hash() == FeatureSpec(bollinger=(20, 2)).hash() == DEFAULT_HASH
    assert FeatureSpec.model_validate_json(SPEC.canonical_json()) == SPEC
    variants = [
        FeatureSpec(version=2),
        FeatureSpec(return_horizons=(1, 4, 12)),
        FeatureSpec(ma_windows=(10, 50, 100)),
        FeatureSpec(rsi_period=21),
        FeatureSpec(macd=(8, 17, 9)),
        FeatureSpec(bollinger=(20, 2.5)),
        FeatureSpec(atr_period=20),
        FeatureSpec(vol_windows=(30, 60)),
        FeatureSpec(volume_window=100),
    ]
    hashes = {v.hash() for v in variants}
    assert len(hashes) == len(variants)
    assert DEFAULT_HASH not in hashes
    assert all(len(h) == 12 and int(h, 16) >= 0 for h in hashes)


def test_spec_is_frozen_and_validated() -> None:
    with pytest.raises(ValidationError):
        SPEC.rsi_period = 7  # type: ignore[misc]
    invalid: list[dict[str, object]] = [
        {"colour": "red"},
        {"macd": (26, 12, 9)},
        {"ma_windows": (10, 10)},
        {"vol_windows": (1,)},
        {"bollinger": (20, 0.0)},
        {"return_horizons": (0,)},
        {"version": 0},
    ]
    for fields in invalid:
        with pytest.raises(ValidationError):
            FeatureSpec.model_validate(fields)


def test_check_spec_refuses_a_different_spec() -> None:
    check_spec(DEFAULT_HASH, FeatureSpec())
    other = FeatureSpec(rsi_period=21)
    with pytest.raises(DataError, match=f"feature spec {other.hash()} differs from the model's {DEFAULT_HASH}"):
        check_spec(DEFAULT_HASH, other)


# ------------------------------------------------------------------------------------------------ store
def test_store_and_load_round_trip_exactly(tmp_path: Path, aapl: pd.DataFrame) -> None:
    frame = stock(aapl)
    path = store_features(frame, SPEC, tmp_path, "quandlwiki", "AAPL", "1d")
    assert path == tmp_path / "features" / DEFAULT_HASH / "quandlwiki" / "AAPL" / "1d.parquet"
    spec_file = tmp_path / "features" / DEFAULT_HASH / "spec.json"
    assert FeatureSpec.model_validate(json.loads(spec_file.read_text())) == SPEC
    loaded = load_features(SPEC, tmp_path, "quandlwiki", "AAPL", "1d")
    pd.testing.assert_frame_equal(loaded, frame, check_exact=True)
    assert [p.name for p in path.parent.iterdir()] == ["1d.parquet"]  # no temporary file left behind


def test_load_names_what_is_missing(tmp_path: Path, btc: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=rf"feature set {DEFAULT_HASH} is not in the store .*spec.json"):
        load_features(SPEC, tmp_path, "binance", "BTC-USDT", "1h")
    store_features(crypto(btc), SPEC, tmp_path, "binance", "BTC-USDT", "1h")
    with pytest.raises(DataError, match=r"no features of set .* for binance ETH-USDT 1h .*1h.parquet is missing"):
        load_features(SPEC, tmp_path, "binance", "ETH-USDT", "1h")
    other = FeatureSpec(rsi_period=21)
    with pytest.raises(DataError, match=f"feature set {other.hash()} is not in the store"):
        load_features(other, tmp_path, "binance", "BTC-USDT", "1h")


def test_store_refuses_bad_frames_and_names(tmp_path: Path, btc: pd.DataFrame) -> None:
    frame = crypto(btc)
    with pytest.raises(DataError, match="do not match feature set"):
        store_features(frame.drop(columns="rsi_14"), SPEC, tmp_path, "binance", "BTC-USDT", "1h")
    with pytest.raises(DataError, match="do not match feature set"):
        store_features(frame, FeatureSpec(rsi_period=21), tmp_path, "binance", "BTC-USDT", "1h")
    with pytest.raises(DataError, match="venue"):
        store_features(frame, SPEC, tmp_path, "../up", "BTC-USDT", "1h")
    with pytest.raises(DataError, match="symbol key"):
        store_features(frame, SPEC, tmp_path, "binance", "BTC/USDT", "1h")
    with pytest.raises(DataError, match="timeframe"):
        store_features(frame, SPEC, tmp_path, "binance", "BTC-USDT", "60m")
    assert not (tmp_path / "features").exists()
