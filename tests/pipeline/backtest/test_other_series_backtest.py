"""A strategy reading another symbol in a backtest and a paper replay: both read the other series from the lake
over the same span, so the replay's fills are the backtest's, fill for fill, across a restart too (the series'
cursor is saved with the decision stream); a series the lake lacks is named with the command that ingests it.

Real bars: ETH/BTC 5m (January 2018) traded with BTC/USDT 1h as the regime (the example ``regime_filtered``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.settings import Settings
from pipeline.state import StateStore
from tests.conftest import REPO, shared_file
from tradeforge_cli.app import app

EXAMPLE = f"{REPO / 'examples' / 'strategies' / 'regime_filtered.py'}:RegimeFiltered"
COMMON = ["--fee-bps", "10", "--max-position", "1.0", "--no-breakers", "--param", "regime_window=12", "--json"]
PORTFOLIO = """
cash = 100000
[[strategies]]
id = "regime"
strategy = "{example}"
symbols = ["ETH/BTC"]
timeframe = "5m"
allocation = 0.5
params = {{ fast = 6, slow = 24, regime_window = 6 }}
engine = {{ max_position = 1.0 }}

[[strategies]]
id = "trend"
strategy = "sma_cross"
symbols = ["ETH/BTC"]
timeframe = "5m"
allocation = 0.5
"""


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A lake holding real ETH/BTC 5m bars and the BTC/USDT hours around them, on the venue binance."""
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    eth = pd.read_parquet(shared_file("binance_ETH-BTC_5m.parquet"))
    hours = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"),
                            filters=[("timestamp", ">=", pd.Timestamp("2017-12-25", tz="UTC")),
                                     ("timestamp", "<", pd.Timestamp("2018-02-05", tz="UTC"))])
    for symbol, timeframe, bars in (("ETH/BTC", "5m", eth), ("BTC/USDT", "1h", hours)):
        path = tmp_path / f"{symbol.replace('/', '-')}-{timeframe}.parquet"
        bars.to_parquet(path)
        ingested = _invoke(["ingest", "--source", "files", "--path", str(path), "--venue", "binance", "--symbol",
                            symbol, "--timeframe", timeframe, "--json"])
        assert ingested["rows_written"] == len(bars)
    return Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]


def _invoke(args: list[str], code: int = 0) -> dict[str, object]:
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == code, outcome.stderr
    return json.loads(outcome.stdout) if code == 0 else {"stderr": outcome.stderr}


def _backtest_fills(document: dict[str, object]) -> pd.DataFrame:
    fills = pd.read_parquet(Path(str(document["stored"])) / "fills.parquet")
    return fills[["timestamp", "side", "qty", "price", "reason"]].reset_index(drop=True)


def _replay_fills(settings: Settings, sleeve: str = "main:ETH/BTC") -> pd.DataFrame:
    rows = [(pd.Timestamp(f.at), f.side, float(f.qty), float(f.price), f.reason)
            for f in StateStore(settings.state_url).fills() if f.sleeve == sleeve]
    frame = pd.DataFrame(rows, columns=["timestamp", "side", "qty", "price", "reason"])
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _same(left: pd.DataFrame, right: pd.DataFrame) -> None:
    assert len(left) == len(right) > 10
    assert (pd.to_datetime(left["timestamp"], utc=True) == pd.to_datetime(right["timestamp"], utc=True)).all()
    assert left["side"].astype(str).tolist() == right["side"].astype(str).tolist()
    assert left["reason"].tolist() == right["reason"].tolist()
    for column in ("qty", "price"):
        assert np.array_equal(left[column].to_numpy(dtype=float), right[column].to_numpy(dtype=float)), column


def test_a_paper_replay_fills_as_the_backtest_that_read_the_other_series_from_the_lake(lake: Settings) -> None:
    run = ["--strategy", EXAMPLE, "--symbol", "ETH/BTC", "--timeframe", "5m", *COMMON]
    ran = _invoke(["backtest", *run])
    assert "BTC/USDT 1h above its 12-bar mean" in str(_backtest_fills(ran)["reason"].iloc[0])
    middle = "2018-01-20T07:35:00+00:00"  # a restart mid-way: the series' cursor is restored with the stream
    first = _invoke(["runtime", "--mode", "paper", "--feed", "replay", "--speed", "max", "--batch", "97",
                     "--end", middle, "--fresh", *run])
    rest = _invoke(["runtime", "--mode", "paper", "--feed", "replay", "--speed", "max", "--batch", "61", *run])
    assert int(str(first["bars"])) + int(str(rest["bars"])) == ran["bars"] == 5760
    assert any("decision stream restored" in note for note in rest["recovery"])  # type: ignore[attr-defined]
    _same(_backtest_fills(ran), _replay_fills(lake))
    assert (ran["trades"], ran["final_equity"]) == (int(str(first["trades"])) + int(str(rest["trades"])),
                                                    rest["final_equity"])


def test_a_portfolio_reading_the_other_series_trades_alike_in_backtest_and_replay(lake: Settings,
                                                                                  tmp_path: Path) -> None:
    path = tmp_path / "portfolio.toml"
    path.write_text(PORTFOLIO.format(example=EXAMPLE))
    ran = _invoke(["backtest", "--portfolio", str(path), "--json"])
    replayed = _invoke(["runtime", "--mode", "paper", "--feed", "replay", "--speed", "max", "--batch", "500",
                        "--portfolio", str(path), "--fresh", "--json"])
    assert replayed["bars"] == 5760
    fills = pd.read_parquet(Path(str(ran["stored"])) / "fills.parquet")
    for sleeve in ("regime:ETH/BTC", "trend:ETH/BTC"):
        mine = fills.loc[fills["sleeve"] == sleeve, ["timestamp", "side", "qty", "price", "reason"]]
        _same(mine.reset_index(drop=True), _replay_fills(lake, sleeve))
    assert ran["final_equity"] == replayed["final_equity"]


def test_a_series_missing_from_the_lake_is_named_with_how_to_ingest_it(lake: Settings, tmp_path: Path) -> None:
    run = ["--strategy", EXAMPLE, "--symbol", "ETH/BTC", "--timeframe", "5m", "--param", "regime_symbol=ETH/USDT",
           "--json"]
    wanted = ("reads ETH/USDT 1h on venue 'binance', which is not in the lake",
              "tradeforge ingest --source ccxt --exchange binance --symbol ETH/USDT --timeframe 1h")
    for command in (["backtest", *run], ["runtime", "--feed", "replay", "--fresh", *run]):
        error = " ".join(str(_invoke(command, code=1)["stderr"]).split())
        assert all(text in error for text in wanted), error
    finer = ["--param", "regime_timeframe=30m", "--json"]  # stored at 1h only, which 30m cannot be made of
    error = " ".join(str(_invoke(["backtest", *run[:-3], *finer], code=1)["stderr"]).split())
    assert "reads BTC/USDT 30m on venue 'binance': BTC/USDT has no 30m bars" in error, error
    assert "--symbol BTC/USDT --timeframe 30m" in error, error
    path = tmp_path / "portfolio.toml"
    path.write_text(PORTFOLIO.format(example=EXAMPLE).replace("regime_window = 6", 'regime_symbol = "SOL/USDT"'))
    error = " ".join(str(_invoke(["backtest", "--portfolio", str(path), "--json"], code=1)["stderr"]).split())
    assert "sleeve 'regime:ETH/BTC' (regime_filtered) reads SOL/USDT 1h on venue 'binance'" in error, error
    assert not StateStore(lake.state_url).fills()
