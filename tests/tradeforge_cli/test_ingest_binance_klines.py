"""Binance kline files (with or without a header, ms or µs open times, plain or zipped) import exactly."""

from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest

from pipeline.data.catalog import read_bars
from pipeline.domain import bars_equal, epoch_ms
from tests.conftest import lake_fingerprint
from tests.tradeforge_cli import bad_input_helpers
from tests.tradeforge_cli.bad_input_helpers import MINUTE_ROWS, SYMBOL, Stored, ingest_args, real_minutes
from tests.tradeforge_cli.cli_helpers import cli

stored = bad_input_helpers.stored  # a lake holding 240 real BTC/USDT 1h bars


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
