"""Bad input never damages the lake (design, rules of the house 10).

Every case first imports a slice of real Binance BTC/USDT 1h bars through ``tradeforge ingest``, so that the lake
holds data worth protecting, then feeds one bad input to the same command. A bad input ends one of two ways:

* **rejected**: a non-zero exit and an error on stderr that names the input (file, column, option or symbol) and
  what is wrong with it; nothing is printed on stdout and nothing under the data dir changes;
* **quarantined**: exit 0, the bad rows are counted in ``rows_quarantined`` and stored in the quarantine with their
  reason, and the lake is byte-for-byte unchanged (the inputs carry no good new rows, only stored rows or bad ones).

Binance kline files (with or without a header, millisecond or microsecond open times, plain or zipped) are good
input and must import exactly.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from pipeline.data.catalog import read_bars
from pipeline.domain import bars_equal, epoch_ms
from pipeline.settings import Settings
from tests.conftest import lake_fingerprint, shared_file
from tradeforge_cli.app import app

SYMBOL = "BTC/USDT"
HOURLY_START = pd.Timestamp("2024-02-26", tz="UTC")  # the slice spans a month boundary (two lake partitions)
HOURLY_ROWS = 240
MINUTE_START = pd.Timestamp("2024-01-01", tz="UTC")
MINUTE_ROWS = 180

runner = CliRunner()


# --------------------------------------------------------------------------------------------------- helpers
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


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ingest_args(path: Path | str, *, symbol: str = SYMBOL, timeframe: str = "1h") -> list[str]:
    return ["ingest", "--source", "files", "--path", str(path), "--symbol", symbol, "--timeframe", timeframe, "--json"]


def squash(text: str) -> str:
    """``text`` without any whitespace: error lines may be wrapped to the terminal width."""
    return "".join(text.split())


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


# --------------------------------------------------------------------------------------------------- rejected
# Each builder writes a bad input under ``inputs`` and returns the CLI arguments and the fragments the error must
# contain (the input it names and what is wrong with it).
Case = Callable[[Path, pd.DataFrame], tuple[list[str], list[str]]]


def truncated_parquet(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    whole = write_parquet(bars, inputs / "whole.parquet").read_bytes()
    path = inputs / "truncated.parquet"
    path.write_bytes(whole[: len(whole) // 2])
    return ingest_args(path), [str(path), "is not a readable Parquet file"]


def parquet_with_wrong_columns(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    renamed = bars.rename(columns={"timestamp": "when", "open": "o", "high": "h", "low": "l", "close": "c"})
    path = write_parquet(renamed, inputs / "wrong_columns.parquet")
    return ingest_args(path), [str(path), "lacks a 'timestamp' column", "--columns"]


def csv_without_volume(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = write_csv(bars.drop(columns=["volume"]), inputs / "no_volume.csv")
    return ingest_args(path), [str(path), "lacks a 'volume' column"]


def parquet_with_text_prices(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    frame = bars.astype({"close": "object"})
    frame.loc[7, "close"] = "n/a"
    frame["close"] = frame["close"].astype("string")
    path = write_parquet(frame, inputs / "text_prices.parquet")
    return ingest_args(path), [str(path), "'close'", "not numbers"]


def csv_with_mixed_timezones(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    text = bars["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S").astype(object)
    text[:10] = text[:10] + "+00:00"
    shifted = (bars["timestamp"][10:20] + pd.Timedelta(hours=2)).dt.strftime("%Y-%m-%d %H:%M:%S") + "+02:00"
    text[10:20] = shifted
    path = write_csv(bars.assign(timestamp=text), inputs / "mixed_tz.csv")
    return ingest_args(path), [str(path), "mixes timestamps with and without a UTC offset"]


def csv_with_unparseable_timestamps(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    text = bars["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S").astype(object)
    text[3] = "yesterday-ish"
    path = write_csv(bars.assign(timestamp=text), inputs / "bad_stamps.csv")
    return ingest_args(path), [str(path), "timestamps that cannot be parsed"]


def empty_parquet(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "empty.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return ingest_args(path), [str(path), "is empty"]


def empty_csv(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "empty.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return ingest_args(path), [str(path), "is empty"]


def csv_with_header_only(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "header_only.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,open,high,low,close,volume\n")
    return ingest_args(path), [str(path), "holds no rows"]


def headerless_csv_not_binance(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "no_header.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    bars.assign(timestamp=epoch_ms(bars["timestamp"])).to_csv(path, index=False, header=False)
    return ingest_args(path), [str(path), "has no header row and 6 columns"]


def symbol_with_space(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    return ingest_args(inputs / "btc_usdt_1h.parquet", symbol="BTC USDT"), ["symbol 'BTC USDT' is not valid"]


def symbol_of_punctuation(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    return ingest_args(inputs / "btc_usdt_1h.parquet", symbol="???"), ["symbol '???' is not valid"]


def symbol_with_markup_characters(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    return ingest_args(inputs / "btc_usdt_1h.parquet", symbol="[/]"), ["symbol '[/]' is not valid"]


def timeframe_seven_minutes(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    return ingest_args(inputs / "btc_usdt_1h.parquet", timeframe="7m"), ["timeframe '7m' is not supported"]


def timeframe_not_a_length(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    return ingest_args(inputs / "btc_usdt_1h.parquet", timeframe="abc"), ["timeframe 'abc' is not valid"]


def since_not_a_date(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    args = [*ingest_args(inputs / "btc_usdt_1h.parquet"), "--since", "notadate"]
    return args, ["--since 'notadate' is not a date"]


def unknown_source(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    args = ["ingest", "--source", "nosuch", "--symbol", SYMBOL, "--timeframe", "1h", "--json"]
    return args, ["'--source'", "'nosuch'"]


def files_source_without_path(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    args = ["ingest", "--source", "files", "--symbol", SYMBOL, "--timeframe", "1h", "--json"]
    return args, ["--source files needs --path"]


def zip_without_csv(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "BTCUSDT-1h-2024-02.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.md", "klines went elsewhere\n")
        archive.writestr("BTCUSDT-1h-2024-02.parquet", b"PAR1")
    return ingest_args(path), [str(path), "contains no CSV file"]


def text_file_named_zip(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "BTCUSDT-1h-2024-03.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(bars.to_csv(index=False))  # plain CSV text behind a .zip name
    return ingest_args(path), [str(path), "is not a valid zip archive"]


def path_that_does_not_exist(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "nowhere" / "bars.csv"
    return ingest_args(path), [str(path), "does not exist"]


def path_with_markup_characters(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "bars[red].csv"
    return ingest_args(path), [str(path), "does not exist"]


def folder_without_bar_files(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    folder = inputs / "notes"
    folder.mkdir(parents=True)
    (folder / "readme.md").write_text("nothing to import\n")
    return ingest_args(folder), [str(folder), "holds no importable files"]


def unsupported_file_type(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "bars.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    bars.to_json(path, date_format="iso")
    return ingest_args(path), [str(path), "unsupported type"]


def mapping_names_missing_column(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    path = inputs / "btc_usdt_1h.parquet"
    args = [*ingest_args(path), "--columns", "timestamp=Date"]
    return args, [str(path), "has no column 'Date' (mapped to timestamp)"]


def mapping_without_equals(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    args = [*ingest_args(inputs / "btc_usdt_1h.parquet"), "--columns", "Date"]
    return args, ["column mapping item 'Date'", "canonical=file_column"]


def mapping_to_unknown_field(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    args = [*ingest_args(inputs / "btc_usdt_1h.parquet"), "--columns", "price=close"]
    return args, ["column mapping names 'price'"]


def venue_with_space(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    args = [*ingest_args(inputs / "btc_usdt_1h.parquet"), "--venue", "my exchange!"]
    return args, ["venue 'my exchange!' is not valid"]


def venue_reserved_for_sample_data(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Real bars filed under the venue ``sample`` would be flagged as synthetic and could join a sample series."""
    args = [*ingest_args(inputs / "btc_usdt_1h.parquet"), "--venue", "sample"]
    return args, ["venue", "'sample'"]


def hourly_file_as_daily(inputs: Path, bars: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Bars one hour apart cannot be daily bars; their midnight rows must not be stored as days."""
    path = inputs / "btc_usdt_1h.parquet"
    return ingest_args(path, timeframe="1d"), [str(path), "1d"]


REJECTED: list[object] = [
    pytest.param(truncated_parquet, id="truncated-parquet"),
    pytest.param(parquet_with_wrong_columns, id="parquet-wrong-columns"),
    pytest.param(csv_without_volume, id="csv-missing-volume-column"),
    pytest.param(parquet_with_text_prices, id="parquet-text-in-price-column"),
    pytest.param(csv_with_mixed_timezones, id="csv-mixed-timezones"),
    pytest.param(csv_with_unparseable_timestamps, id="csv-unparseable-timestamp"),
    pytest.param(empty_parquet, id="empty-parquet-0-bytes"),
    pytest.param(empty_csv, id="empty-csv-0-bytes"),
    pytest.param(csv_with_header_only, id="csv-header-only"),
    pytest.param(headerless_csv_not_binance, id="csv-headerless-not-binance"),
    pytest.param(symbol_with_space, id="symbol-with-space"),
    pytest.param(symbol_of_punctuation, id="symbol-question-marks"),
    pytest.param(
        symbol_with_markup_characters,
        id="symbol-with-square-brackets",
    ),
    pytest.param(timeframe_seven_minutes, id="timeframe-7m"),
    pytest.param(timeframe_not_a_length, id="timeframe-abc"),
    pytest.param(since_not_a_date, id="since-notadate"),
    pytest.param(unknown_source, id="source-nosuch"),
    pytest.param(files_source_without_path, id="files-source-without-path"),
    pytest.param(zip_without_csv, id="zip-without-csv"),
    pytest.param(text_file_named_zip, id="not-a-zip-named-zip"),
    pytest.param(path_that_does_not_exist, id="path-does-not-exist"),
    pytest.param(
        path_with_markup_characters,
        id="path-with-square-brackets",
    ),
    pytest.param(folder_without_bar_files, id="folder-without-bar-files"),
    pytest.param(unsupported_file_type, id="unsupported-file-type"),
    pytest.param(mapping_names_missing_column, id="columns-maps-missing-column"),
    pytest.param(mapping_without_equals, id="columns-item-without-equals"),
    pytest.param(mapping_to_unknown_field, id="columns-maps-unknown-field"),
    pytest.param(venue_with_space, id="venue-not-valid"),
    pytest.param(
        venue_reserved_for_sample_data,
        id="venue-sample-for-real-file",
    ),
    pytest.param(
        hourly_file_as_daily,
        id="hourly-file-as-daily-timeframe",
    ),
]


@pytest.mark.parametrize("case", REJECTED)
def test_bad_input_is_rejected_with_a_clear_error_and_nothing_changes(stored: Stored, case: Case) -> None:
    args, fragments = case(stored.inputs, stored.bars)
    before = lake_fingerprint(stored.data_dir)

    result = cli(*args)

    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed instead of reporting: {result.exception!r}"
    assert result.stdout == "", "a failed command prints no JSON document"
    message = squash(result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert squash(fragment) in message, f"{fragment!r} not in error: {result.stderr}"
    assert lake_fingerprint(stored.data_dir) == before, "a rejected input changed the data dir"
    assert quarantine_counts() == {}


# --------------------------------------------------------------------------------------------------- quarantined
# Each builder returns the bad frame (stored rows, some of them spoilt, and/or bad new rows) and the reasons the
# quarantine must hold for it.
Spoilt = Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, int]]]


def nan_prices(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[[10, 11, 12], "close"] = np.nan
    return bars, {"non-finite close": 3}


def nan_in_new_rows(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    new = bars.iloc[-3:].copy()
    new["timestamp"] = new["timestamp"] + 3 * pd.Timedelta(hours=1)
    new[["open", "high", "low", "close", "volume"]] = np.nan
    return pd.concat([bars, new], ignore_index=True), {"non-finite open": 3}


def negative_prices(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[5, "low"] = -1.0
    bars.loc[6, "open"] = -bars.loc[6, "open"]
    bars.loc[7, "close"] = 0.0
    return bars, {"non-positive low": 1, "non-positive open": 1, "non-positive close": 1}


def negative_volume(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[50, "volume"] = -bars.loc[50, "volume"]
    return bars, {"negative volume": 1}


def high_below_low(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    bars.loc[[20, 21], ["high", "low"]] = bars.loc[[20, 21], ["low", "high"]].to_numpy()
    return bars, {"OHLC inconsistent": 2}


def identical_duplicate(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    frame = pd.concat([bars.iloc[:31], bars.iloc[[30]], bars.iloc[31:]], ignore_index=True)
    return frame, {"duplicate timestamp": 1}


def conflicting_duplicate(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    other = bars.iloc[[30]].copy()
    other["close"] = (other["high"] + other["low"]) / 2 + 0.01
    assert (other["close"] != bars.loc[30, "close"]).all()
    frame = pd.concat([bars.iloc[:31], other, bars.iloc[31:]], ignore_index=True)
    return frame, {"conflicting duplicate": 2}


def out_of_order(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    order = list(range(len(bars)))
    order[40], order[41] = order[41], order[40]
    order[100], order[130] = order[130], order[100]
    # bar 40 comes after bar 41; bars 101..129 and bar 100 come after bar 130
    return bars.iloc[order].reset_index(drop=True), {"out of order": 1 + 29 + 1}


def not_closed_yet(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    now = pd.Timestamp.now(tz="UTC")
    future = bars.iloc[-2:].copy()
    future["timestamp"] = [now.floor("1h") + pd.Timedelta(hours=1), pd.Timestamp("2099-01-01", tz="UTC")]
    return pd.concat([bars, future], ignore_index=True), {"not closed yet": 2}


def off_grid(bars: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    odd = bars.iloc[[-1]].copy()
    odd["timestamp"] = odd["timestamp"] + pd.Timedelta(minutes=30)
    return pd.concat([bars, odd], ignore_index=True), {"not aligned to 1h grid": 1}


QUARANTINED: list[object] = [
    pytest.param(nan_prices, "parquet", id="nan-close-parquet"),
    pytest.param(nan_prices, "csv", id="nan-close-csv"),
    pytest.param(nan_in_new_rows, "parquet", id="nan-new-rows"),
    pytest.param(negative_prices, "parquet", id="negative-and-zero-prices"),
    pytest.param(negative_volume, "csv", id="negative-volume"),
    pytest.param(high_below_low, "parquet", id="high-below-low"),
    pytest.param(identical_duplicate, "parquet", id="duplicate-identical"),
    pytest.param(conflicting_duplicate, "parquet", id="duplicate-conflicting"),
    pytest.param(out_of_order, "parquet", id="out-of-order"),
    pytest.param(not_closed_yet, "parquet", id="bar-not-closed-yet"),
    pytest.param(off_grid, "csv", id="timestamp-off-grid"),
]


@pytest.mark.parametrize(("spoil", "kind"), QUARANTINED)
def test_bad_rows_are_quarantined_with_their_reason_and_the_lake_is_unchanged(
    stored: Stored, spoil: Spoilt, kind: str
) -> None:
    frame, reasons = spoil(real_hourly())
    writer = write_csv if kind == "csv" else write_parquet
    path = writer(frame, stored.inputs / f"spoilt.{kind}")
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows_fetched"] == len(frame)
    assert report["rows_written"] == 0
    assert report["rows_quarantined"] == sum(reasons.values())
    assert report["quarantine_reasons"] == reasons
    assert quarantine_counts() == reasons
    assert lake_fingerprint(stored.lake) == before
    assert bars_equal(read_bars(stored.settings(), SYMBOL, "1h"), stored.bars)


def test_reimport_with_different_prices_is_quarantined_and_stored_bars_are_kept(stored: Stored) -> None:
    """Same timestamps as stored, other prices: every row conflicts, the stored values stay as they were."""
    changed = real_hourly()
    changed[["open", "high", "low", "close"]] = changed[["open", "high", "low", "close"]] * 1.01
    path = write_parquet(changed, stored.inputs / "restated.parquet")
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows_written"] == 0
    assert report["rows_quarantined"] == HOURLY_ROWS
    assert report["quarantine_reasons"] == {"conflicts with stored bar": HOURLY_ROWS}
    assert quarantine_counts() == {"conflicts with stored bar": HOURLY_ROWS}
    assert lake_fingerprint(stored.lake) == before
    kept = read_bars(stored.settings(), SYMBOL, "1h")
    assert bars_equal(kept, stored.bars)
    assert not np.array_equal(kept["close"].to_numpy(), changed["close"].to_numpy())


def test_reimport_of_the_same_bars_as_csv_writes_and_quarantines_nothing(stored: Stored) -> None:
    """The stored bars exported to CSV and imported again are recognised as identical (no conflicts)."""
    path = write_csv(stored.bars, stored.inputs / "same.csv")
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows_written"], report["rows_quarantined"]) == (0, 0), report["quarantine_reasons"]
    assert lake_fingerprint(stored.lake) == before


# --------------------------------------------------------------------------------------------------- good klines
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_base_volume,taker_buy_quote_volume,ignore"
)


def kline_csv(bars: pd.DataFrame, *, header: bool, micros: bool) -> str:
    """Binance public-data kline rows for ``bars``: 12 columns, open/close times in ms or µs."""
    scale = 1000 if micros else 1
    open_time = epoch_ms(bars["timestamp"]) * scale
    close_time = open_time + 60_000 * scale - 1
    lines = [KLINE_HEADER] if header else []
    for i, row in enumerate(bars.itertuples(index=False)):
        quote = row.volume * row.close
        lines.append(
            f"{open_time[i]},{row.open!r},{row.high!r},{row.low!r},{row.close!r},{row.volume!r},"
            f"{close_time[i]},{quote!r},{100 + i},{row.volume / 2!r},{quote / 2!r},0"
        )
    return "\n".join(lines) + "\n"


KLINES: list[object] = [
    pytest.param(False, False, False, id="csv-no-header-ms"),
    pytest.param(True, True, False, id="csv-header-us"),
    pytest.param(False, True, False, id="csv-no-header-us"),
    pytest.param(False, False, True, id="zip-no-header-ms"),
    pytest.param(True, True, True, id="zip-header-us"),
]


@pytest.mark.parametrize(("header", "micros", "zipped"), KLINES)
def test_binance_kline_files_import_exactly(stored: Stored, header: bool, micros: bool, zipped: bool) -> None:
    """Binance kline files are good input: every bar lands in the lake exactly, the stored 1h series is untouched."""
    minutes = real_minutes()
    text = kline_csv(minutes, header=header, micros=micros)
    stored.inputs.mkdir(parents=True, exist_ok=True)
    if zipped:
        path = stored.inputs / "BTCUSDT-1m-2024-01.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("BTCUSDT-1m-2024-01.csv", text)
    else:
        path = stored.inputs / "BTCUSDT-1m-2024-01.csv"
        path.write_text(text)
    before = lake_fingerprint(stored.lake)

    result = cli(*ingest_args(path, timeframe="1m"))

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rows_quarantined"] == 0, report["quarantine_reasons"]
    assert report["rows_written"] == MINUTE_ROWS
    assert pd.Timestamp(report["first"]) == minutes["timestamp"].iloc[0]
    assert pd.Timestamp(report["last"]) == minutes["timestamp"].iloc[-1]
    assert bars_equal(read_bars(stored.settings(), SYMBOL, "1m"), minutes)
    after = lake_fingerprint(stored.lake)
    assert {name: after[name] for name in before} == before, "the stored 1h series changed"

    again = cli(*ingest_args(path, timeframe="1m"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rows_written"] == 0
    assert lake_fingerprint(stored.lake) == after
