"""The data commands (ingest, data health, data sql): one JSON document with ``--json``, clean failures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import shared_file
from tests.tradeforge_cli import cli_helpers
from tests.tradeforge_cli.cli_helpers import assert_fails_cleanly, cli, json_of

data_dir = cli_helpers.data_dir  # the test's own data dir (TRADEFORGE_DATA_DIR)

HEALTH_FIELDS = {
    "venue",
    "symbol",
    "timeframe",
    "sample",
    "rows",
    "first",
    "last",
    "gaps",
    "missing_bars",
    "duplicates",
    "quarantined",
    "stale",
}


def iso(stamp: pd.Timestamp) -> str:
    return stamp.isoformat()


# --------------------------------------------------------------------------------------------------- ingest
def test_sample_ingest_prints_one_json_document_and_a_second_run_writes_nothing(data_dir: Path) -> None:
    args = ("ingest", "--source", "sample", "--symbol", "BTC/USDT", "--timeframe", "1d", "--json")

    first = cli(*args)

    report = json_of(first)
    assert isinstance(report, dict)
    assert first.stdout.count("\n") == 1, "stdout holds one JSON document and nothing else"
    assert report["sample"] is True
    assert (report["venue"], report["symbol"], report["timeframe"]) == ("sample", "BTC/USDT", "1d")
    assert report["rows_written"] > 1000
    assert report["rows_quarantined"] == 0
    assert report["first"] == "2024-01-01T00:00:00+00:00"
    last_closed_day = pd.Timestamp.now(tz="UTC").floor("1D") - pd.Timedelta(days=1)
    assert report["last"] == iso(last_closed_day)
    stored = json_of(
        cli("data", "sql", "select count(*) as n, min(timestamp) as lo, max(timestamp) as hi from bars", "--json")
    )
    assert stored == [{"n": report["rows_written"], "lo": report["first"], "hi": report["last"]}]

    second = json_of(cli(*args))

    assert second["rows_written"] == 0
    assert second["rows_quarantined"] == 0
    assert (second["first"], second["last"]) == (None, None)
    assert second["series_rows"] == report["rows_written"]
    assert second["sample"] is True


def test_ingest_without_json_prints_a_table_flagged_as_sample_data(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("ingest", "--source", "sample", "--symbol", "ETH/USDT", "--timeframe", "1d")

    assert result.exit_code == 0, result.output
    assert "rows_written" in result.stdout
    assert "SAMPLE DATA" in result.stdout


def test_failed_ingest_prints_nothing_on_stdout(data_dir: Path) -> None:
    result = cli("ingest", "--source", "sample", "--symbol", "BTC/USDT", "--timeframe", "7m", "--json")

    assert_fails_cleanly(result, "timeframe '7m' is not supported")


# --------------------------------------------------------------------------------------------------- health
@pytest.fixture
def populated(data_dir: Path, tmp_path: Path) -> Path:
    """A lake with real BTC/USDT 1h bars (one gap of 3 bars, one duplicate row quarantined) and ETH/USDT 1d bars."""
    hourly = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet"))
    start = int(hourly["timestamp"].searchsorted(pd.Timestamp("2024-02-26", tz="UTC")))
    btc = hourly.iloc[start : start + 48].reset_index(drop=True)
    spoilt = pd.concat([btc.drop(index=[10, 11, 12]), btc.iloc[[20]]], ignore_index=True)
    btc_path = tmp_path / "inputs" / "btc_1h.csv"
    btc_path.parent.mkdir(parents=True)
    spoilt.to_csv(btc_path, index=False)
    daily = pd.read_parquet(shared_file("binance_ETH-USDT_1d.parquet"))
    start = int(daily["timestamp"].searchsorted(pd.Timestamp("2024-01-01", tz="UTC")))
    eth_path = tmp_path / "inputs" / "eth_1d.parquet"
    daily.iloc[start : start + 30].to_parquet(eth_path, index=False)

    btc_report = json_of(
        cli(
            "ingest",
            "--source",
            "files",
            "--path",
            str(btc_path),
            "--symbol",
            "BTC/USDT",
            "--timeframe",
            "1h",
            "--json",
        )
    )
    assert (btc_report["rows_written"], btc_report["quarantine_reasons"]) == (45, {"duplicate timestamp": 1})
    eth_report = json_of(
        cli(
            "ingest",
            "--source",
            "files",
            "--path",
            str(eth_path),
            "--symbol",
            "ETH/USDT",
            "--timeframe",
            "1d",
            "--json",
        )
    )
    assert eth_report["rows_written"] == 30
    return data_dir


def test_health_lists_every_series_with_its_figures(populated: Path) -> None:
    records = json_of(cli("data", "health", "--json"))

    assert [(r["venue"], r["symbol"], r["timeframe"]) for r in records] == [
        ("binance", "BTC/USDT", "1h"),
        ("binance", "ETH/USDT", "1d"),
    ]
    for record in records:
        assert set(record) >= HEALTH_FIELDS
    btc, eth = records
    assert btc["rows"] == 45
    assert (btc["first"], btc["last"]) == ("2024-02-26T00:00:00+00:00", "2024-02-27T23:00:00+00:00")
    assert (btc["gaps"], btc["missing_bars"]) == (1, 3)
    assert (btc["duplicates"], btc["quarantined"]) == (1, 1)
    assert btc["sample"] is False
    assert btc["stale"] is True  # its last bar is long past
    assert eth["rows"] == 30
    assert (eth["first"], eth["last"]) == ("2024-01-01T00:00:00+00:00", "2024-01-30T00:00:00+00:00")
    assert (eth["gaps"], eth["duplicates"], eth["quarantined"]) == (0, 0, 0)
    assert eth["stale"] is True


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (("--symbol", "ETH/USDT"), [("ETH/USDT", "1d")]),
        (("--symbol", "btc/usdt"), [("BTC/USDT", "1h")]),
        (("--timeframe", "1h"), [("BTC/USDT", "1h")]),
        (("--timeframe", "60m"), [("BTC/USDT", "1h")]),
        (("--symbol", "ETH/USDT", "--timeframe", "1d"), [("ETH/USDT", "1d")]),
    ],
)
def test_health_filters_by_symbol_and_timeframe(
    populated: Path, filters: tuple[str, ...], expected: list[tuple[str, str]]
) -> None:
    records = json_of(cli("data", "health", *filters, "--json"))

    assert [(r["symbol"], r["timeframe"]) for r in records] == expected


@pytest.mark.parametrize(
    ("filters", "fragments"),
    [
        (("--symbol", "SOL/USDT"), ("no series in the lake matches", "SOL/USDT")),
        (("--symbol", "ETH/USDT", "--timeframe", "1h"), ("no series in the lake matches", "ETH/USDT", "1h")),
        (("--timeframe", "5m"), ("no series in the lake matches", "5m")),
        (("--timeframe", "7m"), ("timeframe '7m' is not supported",)),
        (("--symbol", "BTC USDT"), ("symbol 'BTC USDT' is not valid",)),
    ],
)
def test_health_filter_matching_nothing_fails_with_a_clear_message(
    populated: Path, filters: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_fails_cleanly(cli("data", "health", *filters, "--json"), *fragments)


def test_health_of_an_empty_lake_is_an_empty_list(data_dir: Path) -> None:
    assert json_of(cli("data", "health", "--json")) == []


# --------------------------------------------------------------------------------------------------- sql
def test_sql_queries_the_bars_health_and_quarantine_views(populated: Path) -> None:
    bars = json_of(
        cli(
            "data",
            "sql",
            "select symbol, timeframe, count(*) as n, min(timestamp) as lo from bars group by 1, 2 order by 1, 2",
            "--json",
        )
    )
    assert bars == [
        {"symbol": "BTC/USDT", "timeframe": "1h", "n": 45, "lo": "2024-02-26T00:00:00+00:00"},
        {"symbol": "ETH/USDT", "timeframe": "1d", "n": 30, "lo": "2024-01-01T00:00:00+00:00"},
    ]
    health = json_of(cli("data", "sql", "select symbol, rows, gaps, quarantined from health order by symbol", "--json"))
    assert health == [
        {"symbol": "BTC/USDT", "rows": 45, "gaps": 1, "quarantined": 1},
        {"symbol": "ETH/USDT", "rows": 30, "gaps": 0, "quarantined": 0},
    ]
    quarantine = json_of(cli("data", "sql", "select symbol, reason, timestamp, source from quarantine", "--json"))
    assert quarantine == [
        {
            "symbol": "BTC/USDT",
            "reason": "duplicate timestamp",
            "timestamp": "2024-02-26T20:00:00+00:00",
            "source": "files",
        }
    ]


def test_sql_views_exist_on_an_empty_lake(data_dir: Path) -> None:
    for view in ("bars", "health", "quarantine"):
        assert json_of(cli("data", "sql", f"select count(*) as n from {view}", "--json")) == [{"n": 0}]


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        pytest.param("select * from nosuch", ("query failed", "nosuch"), id="unknown-table"),
        pytest.param("selec count(*) from bars", ("query failed", "selec"), id="syntax-error"),
        pytest.param("select nosuchcolumn from bars", ("query failed", "nosuchcolumn"), id="unknown-column"),
        pytest.param(
            "select [x] from bars",
            ("query failed", "select [x] from bars"),
            id="square-brackets-in-query",
        ),
    ],
)
def test_bad_sql_fails_cleanly(populated: Path, query: str, fragments: tuple[str, ...]) -> None:
    assert_fails_cleanly(cli("data", "sql", query, "--json"), *fragments)
