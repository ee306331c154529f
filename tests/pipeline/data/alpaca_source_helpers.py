"""The Alpaca source tests' setup: real AAPL daily and session minute bars, the Alpaca stand-in, sources on it."""

# The stand-in serves real AAPL daily bars stamped the way Alpaca stamps them (midnight New York time) and real
# minute bars relabelled as a stock's regular session; the source must bring them back as canonical frames.

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.data.sources.alpaca_source import AlpacaSource
from pipeline.domain import TIMESTAMP_DTYPE, Timeframe
from pipeline.retry import DEFAULT_JITTER
from pipeline.settings import Settings
from tests.conftest import SHARED_DATA
from tests.fakes.alpaca_server import AlpacaServer, alpaca_daily_stamps

DATA = SHARED_DATA
AAPL_DAILY = DATA / "quandlwiki_AAPL_1d.parquet"
BTC_MINUTES = DATA / "binance_BTC-USDT_1m.parquet"

AFTER_LAST_BAR = "2013-03-04T12:00:00Z"  # the file ends with the session of Friday 2013-03-01
DAILY = Timeframe.parse("1d")
MINUTE = Timeframe.parse("1m")
SESSION_OPEN = pd.Timestamp("2024-07-29T13:30:00Z")  # 09:30 in New York (EDT)


@pytest.fixture(autouse=True)
def _no_outside_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come from the test alone: no TRADEFORGE_ variables, no .env in the working directory."""
    for name in list(os.environ):
        if name.upper().startswith("TRADEFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return pd.read_parquet(AAPL_DAILY)


@pytest.fixture(scope="module")
def session_minutes() -> pd.DataFrame:
    """390 real one-minute bars relabelled as one regular NYSE session (09:30-16:00 New York)."""
    start = pd.Timestamp("2024-07-29", tz="UTC")
    end = start + pd.Timedelta(minutes=390)
    frame = pd.read_parquet(BTC_MINUTES, filters=[("timestamp", ">=", start), ("timestamp", "<", end)])
    assert len(frame) == 390
    frame["timestamp"] = (SESSION_OPEN + pd.to_timedelta(range(390), unit="min")).astype(TIMESTAMP_DTYPE)
    return frame.reset_index(drop=True)


@pytest.fixture
def server(aapl: pd.DataFrame) -> Iterator[AlpacaServer]:
    with AlpacaServer() as fake:
        fake.add_bars("AAPL", "1Day", alpaca_daily_stamps(aapl))
        yield fake


def assert_backoff(sleeps: list[float], expected: list[float]) -> None:
    """Each wait is the configured exponential backoff, shortened by at most the retry policy's jitter."""
    assert len(sleeps) == len(expected), sleeps
    for slept, wait in zip(sleeps, expected, strict=True):
        assert wait * (1 - DEFAULT_JITTER) <= slept <= wait, sleeps


def make_settings(tmp_path: Path, server: AlpacaServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "alpaca_api_key": "k",
        "alpaca_api_secret": "s",
        "alpaca_data_url": server.url,
        "retry_backoff_s": 0.01,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_source(
    tmp_path: Path, server: AlpacaServer, now: str = AFTER_LAST_BAR, **overrides: Any
) -> tuple[AlpacaSource, list[float]]:
    sleeps: list[float] = []
    source = AlpacaSource(make_settings(tmp_path, server, **overrides), FixedClock(now), sleep=sleeps.append)
    return source, sleeps


def fetch_aapl(source: AlpacaSource, since: pd.Timestamp | None = None) -> pd.DataFrame:
    return source.fetch(source.instrument("AAPL"), DAILY, since)
