"""A rejected bad input: a non-zero exit, an error naming the input and what is wrong, and nothing changes."""

# A rejected input ends with a non-zero exit and an error on stderr that names the input (file, column, option or
# symbol) and what is wrong with it; nothing is printed on stdout and nothing under the data dir changes.

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.domain import epoch_ms
from tests.conftest import lake_fingerprint
from tests.tradeforge_cli import bad_input_helpers
from tests.tradeforge_cli.bad_input_helpers import (
    SYMBOL,
    Stored,
    ingest_args,
    quarantine_counts,
    write_csv,
    write_parquet,
)
from tests.tradeforge_cli.cli_helpers import assert_no_output_but_error, cli, squash

stored = bad_input_helpers.stored  # a lake holding 240 real BTC/USDT 1h bars


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
    assert_no_output_but_error(result)
    message = squash(result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert squash(fragment) in message, f"{fragment!r} not in error: {result.stderr}"
    assert lake_fingerprint(stored.data_dir) == before, "a rejected input changed the data dir"
    assert quarantine_counts() == {}
