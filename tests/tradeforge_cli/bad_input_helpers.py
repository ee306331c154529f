"""The bad-input tests' setup: real Binance BTC/USDT bars, file writers and a lake already holding real bars."""

# Bad input never damages the lake (design, rules of the house 10). Every case first imports a slice of real
# Binance BTC/USDT 1h bars through ``tradeforge ingest`` (the ``stored`` fixture), so that the lake holds data worth
# protecting, then feeds one bad input to the same command. A bad input is either rejected
# (``test_bad_input_rejected``) or quarantined (``test_bad_input_quarantined``); Binance kline files are good input
# and must import exactly (``test_ingest_binance_klines``).

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pipeline.settings import Settings
from tests.conftest import lake_fingerprint, shared_file
from tests.tradeforge_cli.cli_helpers import cli

SYMBOL = "BTC/USDT"
HOURLY_START = pd.Timestamp("2024-02-26", tz="UTC")  # the slice spans a month boundary (two lake partitions)
HOURLY_ROWS = 240
MINUTE_START = pd.Timestamp("2024-01-01", tz="UTC")
MINUTE_ROWS = 180


@functools.cache
def _real_slice(name: str, start: pd.Timestamp, rows: int) -> pd.DataFrame:
    frame = pd.read_parquet(shared_file(name))
    first = int(frame["timestamp"].searchsorted(start))
    return frame.iloc[first : first + rows].reset_index(drop=True)


def real_hourly() -> pd.DataFrame:
    """Real BTC/USDT 1h bars from 2024-02-26 on (a fresh copy each call)."""
    return _real_slice("binance_BTC-USDT_1h.parquet", HOURLY_START, HOURLY_ROWS).copy()


def real_minutes() -> pd.DataFrame:
    """Real BTC/USDT 1m bars from 2024-01-01 00:00 on (a fresh copy each call)."""
    return _real_slice("binance_BTC-USDT_1m.parquet", MINUTE_START, MINUTE_ROWS).copy()


def ingest_args(path: Path | str, *, symbol: str = SYMBOL, timeframe: str = "1h") -> list[str]:
    return ["ingest", "--source", "files", "--path", str(path), "--symbol", symbol, "--timeframe", timeframe, "--json"]


def quarantine_counts() -> dict[str, int]:
    """Reason → rows in the quarantine, as ``tradeforge data sql`` reports them."""
    result = cli("data", "sql", "select reason, count(*) as n from quarantine group by 1 order by 1", "--json")
    assert result.exit_code == 0, result.output
    return {str(row["reason"]): int(row["n"]) for row in json.loads(result.stdout)}


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


@dataclass(frozen=True)
class Stored:
    """The lake after a good import of the real hourly slice."""

    data_dir: Path
    inputs: Path
    bars: pd.DataFrame
    good_file: Path

    @property
    def lake(self) -> Path:
        return self.data_dir / "lake"

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stored:
    """A data dir whose lake holds 240 real BTC/USDT 1h bars, imported through the CLI."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(data_dir))
    inputs = tmp_path / "inputs"
    bars = real_hourly()
    good_file = write_parquet(bars, inputs / "btc_usdt_1h.parquet")
    result = cli(*ingest_args(good_file))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows_written"] == HOURLY_ROWS
    assert report["rows_quarantined"] == 0, report["quarantine_reasons"]
    assert lake_fingerprint(data_dir / "lake")
    return Stored(data_dir, inputs, bars, good_file)
