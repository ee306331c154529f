"""Feature values: columns, warm-up, NaN handling, the formulas against independent references and bad bars."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import TIMESTAMP_DTYPE, AssetClass, DataError
from pipeline.features.build import FeatureSpec, build_features
from pipeline.strategies.rsi_reversion import wilder_rsi
from tests.conftest import shared_file
from tests.pipeline.features import feature_helpers
from tests.pipeline.features.feature_helpers import AAPL_D1, BTC_H1, SPEC, crypto, stock

btc = feature_helpers.btc  # module-scoped slices of real bars
aapl = feature_helpers.aapl


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
