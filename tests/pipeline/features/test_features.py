"""Features: causality of every column on truncated prefixes of real data (and a planted look-ahead that the
same check catches), the formulas against independent references, warm-up, NaN handling, bad input, the
spec hash, the feature store and the spec check."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, DataError
from pipeline.features.build import (
    FeatureSpec,
    build_features,
    check_spec,
    load_features,
    store_features,
    window_mean_std,
)
from pipeline.strategies.rsi_reversion import wilder_rsi
from tests.conftest import shared_file

BTC_H1 = "binance_BTC-USDT_1h.parquet"
AAPL_D1 = "quandlwiki_AAPL_1d.parquet"
SPEC = FeatureSpec()
DEFAULT_HASH = "f5e9adfc56ac"
TAIL = 200
STRIDE = 7

Builder = Callable[[pd.DataFrame], pd.DataFrame]


def real_bars(name: str, start: int, stop: int) -> pd.DataFrame:
    return pd.read_parquet(shared_file(name)).iloc[start:stop].reset_index(drop=True)


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    """1,500 hourly bars holding two gaps in the data (rows 718 and 1,230) and a zero-volume bar (1,229)."""
    return real_bars(BTC_H1, 28_000, 29_500)


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    """1,500 daily AAPL bars from March 2000, across the September 2001 market closure."""
    return real_bars(AAPL_D1, 0, 1_500)


def crypto(bars: pd.DataFrame) -> pd.DataFrame:
    return build_features(bars, SPEC, AssetClass.CRYPTO)


def stock(bars: pd.DataFrame) -> pd.DataFrame:
    return build_features(bars, SPEC, AssetClass.STOCK)


def prefix_lengths(n: int, first: int) -> list[int]:
    """Every prefix length over the last ``TAIL`` bars, every ``STRIDE``-th one before."""
    return sorted(set(range(first, n - TAIL, STRIDE)) | set(range(max(first, n - TAIL), n + 1)))


def truncation_mismatches(build: Builder, bars: pd.DataFrame, lengths: list[int]) -> Counter[str]:
    """For each prefix length, the columns whose last row differs from the full run's row at that bar.

    Comparison is exact (bit for bit, NaN equal to NaN): a causal feature is computed from the same bars in the
    same order whatever follows, so no tolerance is needed.
    """
    full = build(bars)
    columns = [c for c in full.columns if c != "timestamp"]
    position = {stamp: row for row, stamp in enumerate(full["timestamp"])}
    reference = full[columns].to_numpy()
    mismatches: Counter[str] = Counter()
    for length in lengths:
        part = build(bars.iloc[:length])
        stamp = part["timestamp"].iloc[-1]
        assert stamp == bars["timestamp"].iloc[length - 1]
        got = part[columns].to_numpy()[-1]
        want = reference[position[stamp]]
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        mismatches.update(c for c, ok in zip(columns, same, strict=True) if not ok)
    return mismatches


def with_look_ahead(bars: pd.DataFrame) -> pd.DataFrame:
    """Crypto features plus three leaks: the next bar's return, a centred mean and a full-sample z-score."""
    frame = crypto(bars)
    close = bars["close"]
    leaks = pd.DataFrame(
        {
            "next_return": np.log(close.shift(-1) / close),
            "centred_mean": close.rolling(5, center=True, min_periods=1).mean() / close - 1,
            "global_z": (close - close.mean()) / close.std(),
        }
    ).iloc[SPEC.warmup :]
    return pd.concat([frame, leaks.reset_index(drop=True)], axis=1)


# --------------------------------------------------------------------------------------------- causality
@pytest.mark.parametrize(("fixture", "build"), [("btc", crypto), ("aapl", stock)])
def test_every_feature_is_causal_on_real_data(request: pytest.FixtureRequest, fixture: str, build: Builder) -> None:
    bars: pd.DataFrame = request.getfixturevalue(fixture)
    lengths = prefix_lengths(len(bars), SPEC.warmup + 1)
    assert len(lengths) > TAIL + 100
    assert truncation_mismatches(build, bars, lengths) == Counter()


def test_every_prefix_of_a_short_slice_is_causal(btc: pd.DataFrame) -> None:
    """Exhaustive: every prefix of a 400-bar slice that holds a gap and a zero-volume bar."""
    bars = btc.iloc[1_000:1_400].reset_index(drop=True)
    lengths = list(range(SPEC.warmup + 1, len(bars) + 1))
    assert truncation_mismatches(crypto, bars, lengths) == Counter()


def test_planted_look_ahead_fails_the_causality_check(btc: pd.DataFrame) -> None:
    lengths = prefix_lengths(len(btc), SPEC.warmup + 1)
    mismatches = truncation_mismatches(with_look_ahead, btc, lengths)
    assert set(mismatches) == {"next_return", "centred_mean", "global_z"}
    # Every prefix but the full frame itself exposes the first two; the z-score moves with every new bar.
    assert mismatches["next_return"] == len(lengths) - 1
    assert mismatches["centred_mean"] == len(lengths) - 1
    assert mismatches["global_z"] == len(lengths) - 1


def test_window_features_depend_only_on_their_window(btc: pd.DataFrame) -> None:
    """Dropping early bars changes no window feature (EMA-based ones depend on the first bar, as documented)."""
    full = crypto(btc)
    later = crypto(btc.iloc[300:].reset_index(drop=True))
    common = full.loc[full["timestamp"] >= later["timestamp"].iloc[0]].reset_index(drop=True)
    window_only = [c for c in SPEC.columns(AssetClass.CRYPTO) if not c.startswith(("ema_dev", "macd", "rsi", "atr"))]
    for name in window_only:
        np.testing.assert_array_equal(later[name].to_numpy(), common[name].to_numpy(), err_msg=name)
    assert not np.array_equal(later["ema_dev_200"].to_numpy(), common["ema_dev_200"].to_numpy())


def test_window_moments_are_independent_of_the_start() -> None:
    x = pd.read_parquet(shared_file(BTC_H1), columns=["close"])["close"].to_numpy()[:5_000]
    for window in (2, 7, 20, 200):
        mean, std = window_mean_std(x, window, 1)
        for offset in (1, 3, 8, 501):
            shifted_mean, shifted_std = window_mean_std(x[offset:], window, 1)
            np.testing.assert_array_equal(shifted_mean[window - 1 :], mean[offset + window - 1 :])
            np.testing.assert_array_equal(shifted_std[window - 1 :], std[offset + window - 1 :])


# ------------------------------------------------------------------------------- shape, warm-up and NaN
def test_output_columns_dtypes_and_warmup_rows_dropped(btc: pd.DataFrame, aapl: pd.DataFrame) -> None:
    for bars, asset_class in ((btc, AssetClass.CRYPTO), (aapl, AssetClass.STOCK)):
        frame = build_features(bars, SPEC, asset_class)
        assert list(frame.columns) == ["timestamp", *SPEC.columns(asset_class)]
        assert len(frame) == len(bars) - SPEC.warmup
        assert frame["timestamp"].dtype == TIMESTAMP_DTYPE
        assert frame["timestamp"].equals(bars["timestamp"].iloc[SPEC.warmup :].reset_index(drop=True))
        assert all(frame[c].dtype == np.float64 for c in SPEC.columns(asset_class))
        assert np.isfinite(frame.drop(columns="timestamp").to_numpy()).all()
        assert list(frame.index) == list(range(len(frame)))
    assert "gap" in SPEC.columns(AssetClass.STOCK)
    assert "gap" not in SPEC.columns(AssetClass.CRYPTO)


def test_no_nan_on_whole_real_files() -> None:
    for name, asset_class in ((BTC_H1, AssetClass.CRYPTO), (AAPL_D1, AssetClass.STOCK)):
        bars = pd.read_parquet(shared_file(name))
        frame = build_features(bars, SPEC, asset_class)
        assert np.isfinite(frame.drop(columns="timestamp").to_numpy()).all(), name


def test_warmup_is_the_largest_look_back() -> None:
    assert SPEC.warmup == 200  # the 200-bar EMA
    assert FeatureSpec(ma_windows=(10,)).warmup == 120  # realised volatility over 120 returns
    assert FeatureSpec(ma_windows=(10,), vol_windows=(300,)).warmup == 300
    assert FeatureSpec(ma_windows=(5,), vol_windows=(5,), macd=(12, 60, 20)).warmup == 80  # slow + signal
    assert FeatureSpec(ma_windows=(5,), vol_windows=(5,), return_horizons=(90,)).warmup == 90
    assert FeatureSpec(ma_windows=(5,), vol_windows=(5,), volume_window=101).warmup == 100


SMALL = {"return_horizons": (1,), "ma_windows": (5,), "vol_windows": (5,), "volume_window": 5}


@pytest.mark.parametrize(
    "dominant",
    [
        {"return_horizons": (333,)},
        {"ma_windows": (5, 333)},
        {"rsi_period": 333},
        {"macd": (12, 300, 33)},
        {"bollinger": (334, 2.0)},
        {"atr_period": 333},
        {"vol_windows": (333,)},
        {"volume_window": 334},
    ],
)
def test_warmup_covers_each_feature_when_it_dominates(dominant: dict[str, object]) -> None:
    """With the warm-up set by one feature, ``warmup + 1`` bars give one row with every value defined."""
    spec = FeatureSpec.model_validate({**SMALL, **dominant})
    assert spec.warmup == 333
    bars = pd.read_parquet(shared_file(AAPL_D1)).iloc[: spec.warmup + 1]
    frame = build_features(bars, spec, AssetClass.STOCK)
    assert len(frame) == 1
    assert np.isfinite(frame.drop(columns="timestamp").to_numpy()).all()


def test_shortest_frame_gives_one_full_window_row(btc: pd.DataFrame) -> None:
    bars = btc.iloc[: SPEC.warmup + 1]
    frame = crypto(bars)
    assert len(frame) == 1
    close = bars["close"].to_numpy()
    assert frame["sma_dev_200"].iloc[0] == pytest.approx(close[-1] / close[-200:].mean() - 1, rel=1e-9, abs=1e-15)
    with pytest.raises(DataError, match=r"needs more than 200 bars .* got 200"):
        crypto(bars.iloc[: SPEC.warmup])


def test_flat_market_gives_exact_neutral_values() -> None:
    n = 400
    bars = pd.DataFrame(
        {
            "timestamp": pd.Series(pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC").as_unit("ms")),
            "open": 100.0,
            "high": 100.0,
            "low": 100.0,
            "close": 100.0,
            "volume": 3.0,
        }
    )
    frame = crypto(bars)
    expected_zero = [c for c in SPEC.columns(AssetClass.CRYPTO) if not c.startswith(("rsi", "bb_pctb", "to"))]
    assert (frame[expected_zero].to_numpy() == 0.0).all()
    assert (frame["rsi_14"] == 50.0).all()
    assert (frame["bb_pctb_20_2"] == 0.5).all()


# ------------------------------------------------------------------------------- formulas vs references
def ema_reference(x: np.ndarray, span: int) -> np.ndarray:
    alpha = 2.0 / (span + 1)
    out = np.empty_like(x)
    out[0] = x[0]
    for i in range(1, len(x)):
        out[i] = (1 - alpha) * out[i - 1] + alpha * x[i]
    return out


def wilder_reference(x: np.ndarray, period: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[period] = x[1 : period + 1].mean()
    for i in range(period + 1, len(x)):
        out[i] = out[i - 1] + (x[i] - out[i - 1]) / period
    return out


def trailing(x: np.ndarray, window: int, reducer: Callable[[np.ndarray], float]) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(window - 1, len(x)):
        out[i] = reducer(x[i - window + 1 : i + 1])
    return out


def test_formulas_match_independent_references(aapl: pd.DataFrame) -> None:
    bars = aapl
    frame = stock(bars)
    w = SPEC.warmup
    o, h, lo, c, v = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    r = np.r_[np.nan, np.diff(np.log(c))]
    macd_line = ema_reference(c, 12) - ema_reference(c, 26)
    signal = ema_reference(macd_line, 9)
    mid = trailing(c, 20, np.mean)
    sd = trailing(c, 20, np.std)
    previous = np.r_[np.nan, c[:-1]]
    true_range = np.nanmax(np.vstack([h - lo, np.abs(h - previous), np.abs(lo - previous)]), axis=0)
    level = np.log1p(v)
    expected = {
        "logret_12": np.log(c / np.r_[np.full(12, np.nan), c[:-12]]),
        "sma_dev_50": c / trailing(c, 50, np.mean) - 1,
        "ema_dev_200": c / ema_reference(c, 200) - 1,
        "rsi_14": wilder_rsi(c, 14),
        "macd_12_26_9": macd_line / c,
        "macd_signal_12_26_9": signal / c,
        "macd_hist_12_26_9": (macd_line - signal) / c,
        "bb_pctb_20_2": (c - (mid - 2 * sd)) / (4 * sd),
        "bb_width_20_2": 4 * sd / mid,
        "atr_14": wilder_reference(true_range, 14) / c,
        "rvol_30": trailing(r, 30, lambda x: float(np.std(x, ddof=1))),
        "volume_z_50": (level - trailing(level, 50, np.mean)) / trailing(level, 50, lambda x: float(np.std(x, ddof=1))),
        "bar_range": (h - lo) / c,
        "gap": np.log(o / previous),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(frame[name].to_numpy(), values[w:], rtol=1e-9, atol=1e-12, err_msg=name)


def test_time_of_day_and_week_from_the_bar_open_time() -> None:
    n = 400
    stamps = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC").as_unit("ms")  # a Monday
    bars = pd.DataFrame({"timestamp": pd.Series(stamps), "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5})
    bars["volume"] = np.arange(n, dtype=float)
    frame = crypto(bars)
    hours = frame["timestamp"].dt.hour + frame["timestamp"].dt.minute / 60
    week_hours = frame["timestamp"].dt.day_of_week * 24 + hours
    np.testing.assert_allclose(frame["tod_sin"], np.sin(2 * np.pi * hours / 24), atol=1e-12)
    np.testing.assert_allclose(frame["tod_cos"], np.cos(2 * np.pi * hours / 24), atol=1e-12)
    np.testing.assert_allclose(frame["tow_sin"], np.sin(2 * np.pi * week_hours / 168), atol=1e-12)
    np.testing.assert_allclose(frame["tow_cos"], np.cos(2 * np.pi * week_hours / 168), atol=1e-12)
    monday_midnight = frame["timestamp"] == pd.Timestamp("2024-01-15", tz="UTC")
    assert frame.loc[monday_midnight, ["tow_sin", "tow_cos"]].to_numpy().tolist() == [[0.0, 1.0]]


# ------------------------------------------------------------------------------------------ bad input
def test_bad_bars_are_refused_with_a_clear_error(btc: pd.DataFrame) -> None:
    cases: list[tuple[pd.DataFrame, str]] = [
        (btc.drop(columns="volume"), "lacks column"),
        (btc.assign(timestamp=btc["timestamp"].dt.tz_localize(None)), "tz-aware"),
        (btc.iloc[::-1].reset_index(drop=True), "strictly increasing"),
        (pd.concat([btc.iloc[:300], btc.iloc[299:]], ignore_index=True), "strictly increasing"),
        (btc.assign(close=btc["close"].where(btc.index != 250, np.nan)), "'close' must be finite and positive"),
        (btc.assign(low=btc["low"].where(btc.index != 250, 0.0)), "'low' must be finite and positive"),
        (btc.assign(volume=btc["volume"].where(btc.index != 250, -1.0)), "'volume' must be finite and non-negative"),
    ]
    for bars, message in cases:
        with pytest.raises(DataError, match=message):
            crypto(bars)


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
