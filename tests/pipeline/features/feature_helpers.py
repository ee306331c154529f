"""The feature tests' setup: slices of real BTC and AAPL bars and the default feature spec."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.domain import AssetClass
from pipeline.features.build import FeatureSpec, build_features
from tests.conftest import shared_file

BTC_H1 = "binance_BTC-USDT_1h.parquet"
AAPL_D1 = "quandlwiki_AAPL_1d.parquet"
SPEC = FeatureSpec()
DEFAULT_HASH = "f5e9adfc56ac"


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
