"""Feature causality: no column changes on truncated prefixes of real data; a planted look-ahead is caught."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import AssetClass
from pipeline.features.build import window_mean_std
from tests.conftest import shared_file
from tests.pipeline.features import feature_helpers
from tests.pipeline.features.feature_helpers import BTC_H1, SPEC, crypto, stock

btc = feature_helpers.btc  # module-scoped slices of real bars
aapl = feature_helpers.aapl

TAIL = 200
STRIDE = 7

Builder = Callable[[pd.DataFrame], pd.DataFrame]


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
