"""Bad input to ``backtest``, ``optimize`` and portfolio files: refused before anything runs, by name, with every
stored file byte-for-byte as it was.

Each case runs in a copy of one working folder built once for the module: a lake holding 240 real Binance BTC/USDT
1h bars imported through ``tradeforge ingest``, a stored backtest run and a stored portfolio run, the good bar file
they came from and bad files derived from it (``inputs/``). Every case is a mistake a careful new user makes: an
option the engine cannot honour, a date range the wrong way round, a bar file with a bad row, a portfolio file with
a typo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.tradeforge_cli.bad_input_helpers import (
    HOURLY_ROWS,
    ingest_args,
    real_hourly,
    real_minutes,
    write_csv,
    write_parquet,
)
from tests.tradeforge_cli.cli_helpers import cli
from tests.tradeforge_cli.refusals import Refusal, check_refused

LAKE = ("--strategy", "sma_cross", "--symbol", "BTC/USDT", "--timeframe", "1h")
"""A single-strategy backtest of the lake's bars (2024-02-26 00:00 to 2024-03-06 23:00)."""

PORTFOLIO = """\
cash: 100000
caps:
  max_gross_exposure: 1.0
  max_drawdown: 0.3
strategies:
  - id: btc_trend
    strategy: sma_cross
    symbols: [BTC/USDT]
    timeframe: 1h
    allocation: 0.5
    params: {fast: 10, slow: 30}
    engine: {max_position: 1.0, stop_loss: 0.05}
  - id: btc_rsi
    strategy: rsi_reversion
    symbols: [BTC/USDT]
    timeframe: 1h
    allocation: 0.4
"""

PORTFOLIO_TOML = """\
cash = 100000

[caps]
max_drawdown = 0.3

[[strategies]]
id = "btc_trend"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1h"
allocation = 0.5
"""


def portfolio(old: str, new: str, base: str = PORTFOLIO) -> str:
    """The good portfolio file with one mistake in it."""
    assert old in base, old
    return base.replace(old, new, 1)


def yaml_case(name: str, old: str, new: str, *names: str) -> Refusal:
    return Refusal(name, ("backtest", "--portfolio", "portfolio.yaml"), ("portfolio.yaml", *names),
                   files={"portfolio.yaml": portfolio(old, new)})


# ------------------------------------------------------------------------------------------------ the working folder
def _bad_files(inputs: Path) -> None:
    """Bad bar files, each the real slice with one mistake in it."""
    bars = real_hourly()
    nan_close = bars.copy()
    nan_close.loc[40, "close"] = float("nan")
    write_parquet(nan_close, inputs / "nan_close.parquet")
    negative = bars.copy()
    negative.loc[17, "close"] = -negative.loc[17, "close"]
    write_csv(negative, inputs / "negative_close.csv")
    zero_open = bars.copy()
    zero_open.loc[5, "open"] = 0.0
    write_csv(zero_open, inputs / "zero_open.csv")
    swapped = bars.copy()
    swapped.loc[100, ["high", "low"]] = swapped.loc[100, ["low", "high"]].to_numpy()
    write_parquet(swapped, inputs / "high_below_low.parquet")
    write_parquet(pd.concat([bars.iloc[:61], bars.iloc[60:]], ignore_index=True), inputs / "repeated_bar.parquet")
    write_parquet(bars.iloc[[*range(30), 31, 30, *range(32, len(bars))]], inputs / "unordered.parquet")
    write_csv(bars.drop(columns=["volume"]), inputs / "no_volume.csv")
    write_parquet(real_minutes(), inputs / "minutes.parquet")
    (inputs / "not_parquet.parquet").write_text("timestamp,open,high,low,close,volume\n")
    (inputs / "bars.xlsx").write_bytes(b"PK\x03\x04" + bytes(60))
    (inputs / "exports").mkdir()
    write_parquet(bars, inputs / "exports" / "btc_usdt_1h.parquet")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder every case copies: the lake with real bars, a stored backtest and portfolio run, and the
    input files."""
    work = tmp_path_factory.mktemp("stored")
    inputs = work / "inputs"
    good = write_parquet(real_hourly(), inputs / "btc_usdt_1h.parquet")
    _bad_files(inputs)
    (work / "portfolio.yaml").write_text(PORTFOLIO)
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("TRADEFORGE_") and n != "TRADEFORGE_SHARED_DATA"]:
            patch.delenv(name)
        patch.setenv("TRADEFORGE_DATA_DIR", str(work / "data"))
        patch.chdir(work)
        ingested = cli(*ingest_args(good))
        assert ingested.exit_code == 0, ingested.output
        assert json.loads(ingested.stdout)["rows_written"] == HOURLY_ROWS
        single = cli("backtest", *LAKE, "--json")
        assert single.exit_code == 0, single.output
        several = cli("backtest", "--portfolio", "portfolio.yaml", "--json")
        assert several.exit_code == 0, several.output
    assert len(list((work / "data" / "backtests").iterdir())) == 2
    return work


@pytest.fixture
def work(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the working folder, the settings pointing into it."""
    folder = tmp_path / "work"
    shutil.copytree(template, folder)
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder / "data"))
    return folder


# ---------------------------------------------------------------------------------------------------------- cases
FLAGS = [
    Refusal("max-position-above-the-leverage", ("backtest", *LAKE, "--max-position", "1.5"),
            ("--max-position 1.5 is out of range", "it must be > 0 and <= 1")),
    Refusal("max-position-as-a-percentage", ("backtest", *LAKE, "--max-position", "25"),
            ("--max-position 25", "> 0 and <= 1")),
    Refusal("fill-spelled-with-a-hyphen", ("backtest", *LAKE, "--fill", "next-open"),
            ("--fill 'next-open'", "next_open, close")),
    Refusal("negative-fee", ("backtest", *LAKE, "--fee-bps", "-5"), ("--fee-bps -5", ">= 0 and <= 1000")),
    Refusal("no-starting-cash", ("backtest", *LAKE, "--cash", "0"), ("--cash 0", "> 0")),
    Refusal("cooldown-of-zero-bars", ("backtest", *LAKE, "--breaker-cooldown-bars", "0"),
            ("--breaker-cooldown-bars 0", ">= 1")),
    Refusal("cooldown-without-breakers", ("backtest", *LAKE, "--no-breakers", "--breaker-cooldown-bars", "60"),
            ("--breaker-cooldown-bars 60", "--no-breakers")),
    Refusal("start-after-end", ("backtest", *LAKE, "--start", "2024-03-05", "--end", "2024-03-01"),
            ("--start 2024-03-05 is after --end 2024-03-01", "range is empty")),
    Refusal("start-equals-end", ("backtest", *LAKE, "--start", "2024-03-01", "--end", "2024-03-01"),
            ("--start 2024-03-01", "same time as --end 2024-03-01")),
    Refusal("start-that-is-not-a-date", ("backtest", *LAKE, "--start", "2024-02-30"),
            ("--start '2024-02-30'", "not a date")),
    Refusal("start-after-the-stored-bars", ("backtest", *LAKE, "--start", "2025-01-01"),
            ("no BTC/USDT 1h bars", "--start 2025-01-01", "its bars run from 2024-02-26")),
    Refusal("timeframe-in-capitals", ("backtest", "--strategy", "sma_cross", "--symbol", "BTC/USDT",
                                      "--timeframe", "1H"), ("--timeframe", "'1H' is not valid")),
    Refusal("symbol-not-in-the-lake", ("backtest", "--strategy", "sma_cross", "--symbol", "ETH/USDT",
                                       "--timeframe", "1h"), ("'ETH/USDT'", "not in the lake")),
    Refusal("strategy-spelled-with-a-hyphen", ("backtest", "--strategy", "sma-cross", "--symbol", "BTC/USDT",
                                               "--timeframe", "1h"), ("'sma-cross' is not known", "sma_cross")),
    Refusal("portfolio-with-a-fee-option", ("backtest", "--portfolio", "portfolio.yaml", "--fee-bps", "5"),
            ("--portfolio", "--fee-bps", "ignored")),
    Refusal("json-max-position-above-the-leverage", ("backtest", *LAKE, "--max-position", "2", "--json"),
            ("--max-position 2", "<= 1"), json_error=True),
]

FILES = [
    Refusal("data-nan-close", ("backtest", "--strategy", "sma_cross", "--data", "inputs/nan_close.parquet"),
            ("--data", "nan_close.parquet", "quality gate", "non-finite close", "row 41",
             "2024-02-27T16:00:00+00:00")),
    Refusal("data-negative-close", ("backtest", "--strategy", "sma_cross", "--data", "inputs/negative_close.csv"),
            ("negative_close.csv", "non-positive close", "row 18")),
    Refusal("data-zero-open", ("backtest", "--strategy", "sma_cross", "--data", "inputs/zero_open.csv"),
            ("zero_open.csv", "non-positive open", "row 6")),
    Refusal("data-high-below-low", ("backtest", "--strategy", "sma_cross", "--data",
                                    "inputs/high_below_low.parquet"),
            ("high_below_low.parquet", "OHLC inconsistent", "row 101")),
    Refusal("data-a-bar-twice", ("backtest", "--strategy", "sma_cross", "--data", "inputs/repeated_bar.parquet"),
            ("repeated_bar.parquet", "duplicate timestamp", "row 62")),
    Refusal("data-two-bars-swapped", ("backtest", "--strategy", "sma_cross", "--data", "inputs/unordered.parquet"),
            ("unordered.parquet", "out of order", "row 32")),
    Refusal("data-without-volume", ("backtest", "--strategy", "sma_cross", "--data", "inputs/no_volume.csv"),
            ("no_volume.csv", "lacks a 'volume' column")),
    Refusal("data-csv-named-parquet", ("backtest", "--strategy", "sma_cross", "--data", "inputs/not_parquet.parquet"),
            ("not_parquet.parquet", "not a readable Parquet file")),
    Refusal("data-spreadsheet", ("backtest", "--strategy", "sma_cross", "--data", "inputs/bars.xlsx"),
            ("bars.xlsx", "unsupported type")),
    Refusal("data-file-missing", ("backtest", "--strategy", "sma_cross", "--data", "inputs/btc_usdt_4h.parquet"),
            ("--data", "btc_usdt_4h.parquet", "does not exist")),
    Refusal("data-a-folder", ("backtest", "--strategy", "sma_cross", "--data", "inputs/exports"),
            ("--data", "exports", "is a folder")),
    Refusal("data-minutes-as-hours", ("backtest", "--strategy", "sma_cross", "--data", "inputs/minutes.parquet",
                                      "--timeframe", "1h"), ("minutes.parquet", "1 minute apart", "--timeframe 1h")),
    Refusal("data-range-outside-the-file", ("backtest", "--strategy", "sma_cross", "--data",
                                            "inputs/btc_usdt_1h.parquet", "--end", "2024-01-01"),
            ("btc_usdt_1h.parquet", "holds no bars", "--end 2024-01-01", "2024-02-26")),
    Refusal("data-columns-without-data", ("backtest", *LAKE, "--columns", "timestamp=Date"),
            ("--columns", "--data")),
]

PORTFOLIOS = [
    yaml_case("portfolio-allocation-above-one", "allocation: 0.5", "allocation: 1.5",
              "strategy 'btc_trend'", "allocation 1.5 is out of range", "> 0 and <= 1"),
    yaml_case("portfolio-allocations-above-one", "allocation: 0.4", "allocation: 0.6",
              "allocations add up to 1.1", "btc_trend 0.5 + btc_rsi 0.6"),
    yaml_case("portfolio-unknown-strategy", "strategy: sma_cross", "strategy: smacross",
              "strategy 'btc_trend'", "'smacross' is not known", "sma_cross, "),
    yaml_case("portfolio-key-typo", "allocation: 0.4", "alocation: 0.4",
              "strategy 'btc_rsi'", "unknown key 'alocation'", "did you mean 'allocation'"),
    yaml_case("portfolio-engine-max-position", "max_position: 1.0", "max_position: 1.5",
              "strategy 'btc_trend'", "engine.max_position 1.5", "<= 1"),
    yaml_case("portfolio-engine-key-typo", "stop_loss: 0.05", "stoploss: 0.05",
              "strategy 'btc_trend'", "engine", "unknown key 'stoploss'", "did you mean 'stop_loss'"),
    yaml_case("portfolio-engine-cash", "stop_loss: 0.05", "cash: 5000",
              "strategy 'btc_trend'", "engine.cash cannot be set"),
    yaml_case("portfolio-bad-parameters", "{fast: 10, slow: 30}", "{fast: 30, slow: 10}",
              "strategy 'btc_trend'", "'slow'"),
    yaml_case("portfolio-drawdown-as-a-percentage", "max_drawdown: 0.3", "max_drawdown: 30",
              "caps.max_drawdown 30", "> 0 and < 1"),
    yaml_case("portfolio-symbols-not-a-list", "symbols: [BTC/USDT]\n    timeframe: 1h\n    allocation: 0.4",
              "symbols: BTC/USDT\n    timeframe: 1h\n    allocation: 0.4",
              "strategy 'btc_rsi'", "symbols must be a list"),
    yaml_case("portfolio-same-id-twice", "id: btc_rsi", "id: btc_trend", "ids must be unique", "'btc_trend'"),
    yaml_case("portfolio-bad-indentation", "    engine:", "   engine:", "not valid YAML", "line 12"),
    yaml_case("portfolio-symbol-not-in-the-lake", "symbols: [BTC/USDT]\n    timeframe: 1h\n    allocation: 0.4",
              "symbols: [ETH/USDT]\n    timeframe: 1h\n    allocation: 0.4",
              "strategy 'btc_rsi'", "'ETH/USDT'", "not in the lake"),
    Refusal("portfolio-toml-unclosed-table", ("backtest", "--portfolio", "portfolio.toml"),
            ("portfolio.toml", "not valid TOML", "line 3"),
            files={"portfolio.toml": portfolio("[caps]", "[caps", PORTFOLIO_TOML)}),
    Refusal("portfolio-file-missing", ("backtest", "--portfolio", "portfolios/trend.yaml"),
            ("portfolio file", "trend.yaml", "does not exist")),
]

OPTIMIZE = ("optimize", "--strategy", "sma_cross", "--space", "fast=5:20", "--no-mlflow")
OPTIMIZATIONS = [
    Refusal("optimize-max-position-above-the-leverage",
            (*OPTIMIZE, "--symbol", "BTC/USDT", "--timeframe", "1h", "--max-position", "2"),
            ("--max-position 2", "> 0 and <= 1")),
    Refusal("optimize-start-after-end", (*OPTIMIZE, "--symbol", "BTC/USDT", "--timeframe", "1h",
                                         "--start", "2024-03-04", "--end", "2024-02-27"),
            ("--start 2024-03-04 is after --end 2024-02-27",)),
    Refusal("optimize-nan-close", (*OPTIMIZE, "--data", "inputs/nan_close.parquet"),
            ("nan_close.parquet", "non-finite close", "row 41")),
    Refusal("optimize-range-upside-down", ("optimize", "--strategy", "sma_cross", "--space", "fast=20:5",
                                           "--symbol", "BTC/USDT", "--timeframe", "1h", "--no-mlflow"),
            ("--space fast=20:5", "below LOW 20")),
    Refusal("optimize-no-trials", (*OPTIMIZE, "--symbol", "BTC/USDT", "--timeframe", "1h", "--trials", "0"),
            ("--trials", "0")),
    Refusal("optimize-fill-typo", (*OPTIMIZE, "--symbol", "BTC/USDT", "--timeframe", "1h", "--fill", "open",
                                   "--json"), ("--fill 'open'", "next_open, close"), json_error=True),
    Refusal("optimize-trials-with-grid", (*OPTIMIZE, "--symbol", "BTC/USDT", "--timeframe", "1h", "--grid",
                                          "--trials", "20"), ("--trials 20", "--grid evaluates every point")),
]

CASES = [*FLAGS, *FILES, *PORTFOLIOS, *OPTIMIZATIONS]


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


# ------------------------------------------------------------------------------------ the hints are what is accepted
def test_every_fill_the_refusal_lists_is_accepted(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    refused = cli("backtest", *LAKE, "--fill", "next-open", "--no-save")
    listed = re.search(r"one of ([\w, ]+)$", refused.stderr.strip())
    assert refused.exit_code != 0 and listed, refused.stderr
    values = [value.strip() for value in listed.group(1).split(",")]
    assert len(values) >= 2
    for value in values:
        result = cli("backtest", *LAKE, "--fill", value, "--no-save", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["config"]["fill"] == value


def test_the_largest_max_position_the_refusal_names_is_accepted(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    refused = cli("backtest", *LAKE, "--max-position", "1.5", "--no-save")
    largest = re.search(r"<= ([0-9.]+)", refused.stderr)
    assert refused.exit_code != 0 and largest, refused.stderr
    result = cli("backtest", *LAKE, "--max-position", largest.group(1), "--no-save", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["max_position"] == float(largest.group(1))


def test_a_clean_file_backtests_as_its_bars_in_the_lake(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quality gate lets a clean file through unchanged: the same bars from the file and from the lake trade
    alike."""
    monkeypatch.chdir(work)
    from_file = cli("backtest", "--strategy", "sma_cross", "--data", "inputs/btc_usdt_1h.parquet", "--no-save",
                    "--json")
    from_lake = cli("backtest", *LAKE, "--no-save", "--json")
    documents = [json.loads(result.stdout) for result in (from_file, from_lake)]
    keys = ("bars", "first", "last", "trades", "final_equity")
    assert [document["bars"] for document in documents] == [HOURLY_ROWS, HOURLY_ROWS]
    assert {key: documents[0][key] for key in keys} == {key: documents[1][key] for key in keys}
