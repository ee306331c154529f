"""The reporting contract of the ``tradeforge`` command.

Reporting commands given ``--json`` print exactly one JSON document on stdout (progress and errors go to stderr);
a failing command exits non-zero with a message naming what is wrong and prints nothing on stdout. ``doctor``
reports every check as check/status/detail/fix, exits non-zero when something is broken and never shows a secret.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from tests.conftest import shared_file
from tradeforge_cli.app import app

runner = CliRunner()
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
DOCTOR_FIELDS = {"check", "status", "detail", "fix"}


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def json_of(result: Result) -> Any:
    """The one JSON document a successful ``--json`` command prints on stdout."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def squash(text: str) -> str:
    """``text`` without any whitespace: messages may be wrapped to the terminal width."""
    return "".join(text.split())


def assert_fails_cleanly(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed instead of reporting: {result.exception!r}"
    assert result.stdout == ""
    for fragment in fragments:
        assert squash(fragment) in squash(result.stderr), f"{fragment!r} not in error: {result.stderr}"


def iso(stamp: pd.Timestamp) -> str:
    return stamp.isoformat()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder))
    return folder


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


# --------------------------------------------------------------------------------------------------- doctor
@pytest.fixture
def healthy_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Path:
    """Everything doctor looks at points into the test's own folder, telemetry is off."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').as_posix()}")
    monkeypatch.setenv("COLUMNS", "1000")  # the table form on one line per check
    return tmp_path


def doctor_checks(result: Result) -> dict[str, dict[str, str]]:
    document = json.loads(result.stdout)
    assert isinstance(document, list)
    assert document
    for check in document:
        assert set(check) == DOCTOR_FIELDS
        assert check["status"] in {"ok", "warn", "fail"}
        if check["status"] != "ok":
            assert check["fix"], f"{check['check']} is {check['status']} without a fix"
    return {check["check"]: check for check in document}


def test_doctor_passes_on_a_healthy_setup(healthy_setup: Path, data_dir: Path) -> None:
    result = cli("doctor", "--json")

    assert result.exit_code == 0, result.output
    checks = doctor_checks(result)
    assert not [c for c in checks.values() if c["status"] == "fail"]
    assert {
        "python",
        "packages",
        "data dir",
        "lake",
        "state db",
        "mlflow store",
        "prefect home",
        "telemetry",
        "venue keys",
    } <= set(checks)
    assert checks["data dir"]["status"] == "ok"
    assert checks["data dir"]["detail"] == str(data_dir.resolve())
    assert checks["telemetry"]["status"] == "ok"
    assert checks["prefect home"]["status"] == "ok"
    assert checks["mlflow store"]["status"] == "ok"


def test_doctor_fails_when_the_data_dir_is_not_writable(
    healthy_setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a folder\n")
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(blocker / "data"))

    result = cli("doctor", "--json")

    assert result.exit_code != 0
    checks = doctor_checks(result)
    assert checks["data dir"]["status"] == "fail"
    assert str(blocker / "data") in checks["data dir"]["detail"]
    assert "TRADEFORGE_DATA_DIR" in checks["data dir"]["fix"]
    assert blocker.read_text() == "not a folder\n"


SECRETS = [
    pytest.param("TRADEFORGE_ALPACA_API_KEY", "supersecretvalue", "supersecretvalue", id="alpaca-key"),
    pytest.param("TRADEFORGE_ALPACA_API_SECRET", "alpacasecretvalue", "alpacasecretvalue", id="alpaca-secret"),
    pytest.param("TRADEFORGE_CCXT_API_KEY", "ccxtkeyvalue", "ccxtkeyvalue", id="ccxt-key"),
    pytest.param("TRADEFORGE_CCXT_API_SECRET", "ccxtsecretvalue", "ccxtsecretvalue", id="ccxt-secret"),
    pytest.param(
        "TRADEFORGE_DATABASE_URL",
        "postgresql+psycopg://trader:dbsecretpassword@127.0.0.1:1/tradeforge",
        "dbsecretpassword",
        id="database-password",
    ),
    pytest.param(
        "TRADEFORGE_MLFLOW_TRACKING_URI",
        "http://trader:mlflowsecretpassword@127.0.0.1:1",
        "mlflowsecretpassword",
        id="mlflow-password",
    ),
]


@pytest.mark.parametrize(("variable", "value", "secret"), SECRETS)
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_doctor_never_shows_a_secret(
    healthy_setup: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, secret: str, as_json: bool
) -> None:
    monkeypatch.setenv(variable, value)

    result = cli("doctor", *(["--json"] if as_json else []))

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert secret not in result.output
    assert secret not in squash(result.output)
    if as_json:
        doctor_checks(result)


def test_doctor_says_which_venue_keys_are_set_without_their_values(
    healthy_setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEFORGE_ALPACA_API_KEY", "supersecretvalue")

    checks = doctor_checks(cli("doctor", "--json"))

    assert "alpaca" in checks["venue keys"]["detail"]
    assert "supersecretvalue" not in json.dumps(checks)


# --------------------------------------------------------------------------------------------------- console script
def console_script() -> Path:
    beside = Path(sys.executable).parent / "tradeforge"
    if beside.exists():
        return beside
    found = shutil.which("tradeforge")
    assert found, "the tradeforge console script is not installed"
    return Path(found)


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFORGE_") or k == "TRADEFORGE_SHARED_DATA"}
    env["TRADEFORGE_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [str(console_script()), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_installed_console_script_prints_one_json_document(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "ingest", "--source", "sample", "--symbol", "ETH/USDT", "--timeframe", "1d", "--json")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1, proc.stdout
    report = json.loads(proc.stdout)
    assert (report["venue"], report["symbol"], report["timeframe"], report["sample"]) == (
        "sample",
        "ETH/USDT",
        "1d",
        True,
    )
    assert report["rows_written"] > 1000
    assert report["first"] == "2024-01-01T00:00:00+00:00"
    assert sorted(p.name for p in (tmp_path / "data" / "lake" / "sample" / "ETH-USDT" / "1d").glob("*.parquet"))


def test_installed_console_script_reports_bad_input_on_stderr(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "ingest", "--source", "sample", "--symbol", "ETH/USDT", "--timeframe", "abc", "--json")

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "timeframe 'abc' is not valid" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "lake").exists()


# --------------------------------------------------------------------------------------------------- terminal width
# Nothing machine-relevant (an error, a path, an id) is wrapped to the terminal's width: a narrow terminal and a
# long temporary path must not split what a user copies or a test looks for.
NARROW = "40"


def long_path(tmp_path: Path, name: str) -> Path:
    """A path several times as long as a narrow terminal is wide, with spaces in it."""
    return tmp_path.joinpath(*["a folder with a rather long name"] * 4, name)


def one_line_holds(text: str, *fragments: str) -> bool:
    return any(all(fragment in line for fragment in fragments) for line in text.splitlines())


def test_an_error_naming_a_long_path_is_one_line_on_a_narrow_terminal(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", NARROW)
    missing = long_path(tmp_path, "bars.parquet")
    message = f"--data {str(missing)!r} does not exist"

    result = cli("backtest", "--strategy", "sma_cross", "--data", str(missing), "--json")
    assert_fails_cleanly(result)
    assert one_line_holds(result.stderr, message), result.stderr

    proc = run_script(tmp_path, "backtest", "--strategy", "sma_cross", "--data", str(missing), "--json")
    assert proc.returncode == 1
    assert one_line_holds(proc.stderr, message), proc.stderr


def test_usage_errors_are_plain_lines_on_a_narrow_terminal(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", NARROW)
    result = cli("ingest", "--source", "nosuch", "--symbol", "BTC/USDT", "--timeframe", "1h", "--json")

    assert_fails_cleanly(result)
    assert one_line_holds(result.stderr, "Invalid value for '--source'",
                          "'nosuch' is not one of 'sample', 'ccxt', 'alpaca', 'files'."), result.stderr


def test_a_table_prints_a_long_path_whole_on_a_narrow_terminal(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", NARROW)
    bars = long_path(tmp_path, "bars.parquet")
    bars.parent.mkdir(parents=True)
    pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[:500].to_parquet(bars)

    result = cli("backtest", "--strategy", "sma_cross", "--data", str(bars))

    assert result.exit_code == 0, result.output
    (stored,) = (data_dir / "backtests").iterdir()
    assert one_line_holds(result.stdout, str(stored)), result.stdout


# ----------------------------------------------------------------------------------------------------- start-up
def test_help_loads_no_pandas_torch_or_numba() -> None:
    """``tradeforge --help`` (and the import of every command group) stays light: each command imports what it
    needs when it runs."""
    script = ("import sys\nsys.argv = ['tradeforge', '--help']\nfrom tradeforge_cli.app import main\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "heavy = ('pandas', 'numpy', 'torch', 'numba', 'mlflow', 'prefect')\n"
              "print('loaded:', sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)

    assert proc.returncode == 0, proc.stderr
    assert "Usage: tradeforge" in proc.stdout and "runtime" in proc.stdout
    assert "loaded: []" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------------ runtime config
def test_the_runtime_command_line_round_trips_through_its_config(tmp_path: Path) -> None:
    from runtime.config import RuntimeConfig, parse_args, runtime_command, to_args

    config = RuntimeConfig(mode="live", portfolio=tmp_path / "p.toml", venue="binance", feed="ccxt", speed="60",
                           batch=1, start="2024-01-01", params=("fast=10", "slow=30"), fee_bps=5.0, no_breakers=True,
                           breaker_cooldown_bars=30, fresh=True, verbose=True, as_json=True)

    args = to_args(config)
    assert parse_args(args) == config
    assert args[args.index("--param") + 1] == "fast=10" and args.count("--param") == 2
    assert "--json" in args and "--no-breakers" in args and "--timeframe" not in args  # defaults are left out
    assert runtime_command(config, "python")[:3] == ["python", "-m", "runtime"]
    assert parse_args([]) == RuntimeConfig()


@pytest.mark.parametrize(("args", "named"), [
    (["--speed", "fast"], "--speed 'fast' is not a number (or 'max')"),
    (["--speed", "0"], "--speed must be positive"),
    (["--param", "fast"], "--param 'fast' is not of the form name=value"),
    (["--fresh", "--restore"], "--fresh and --restore exclude each other"),
])
def test_a_bad_runtime_option_is_named_by_both_commands(data_dir: Path, args: list[str], named: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.config import parse_args

    result = cli("runtime", "--strategy", "sma_cross", "--symbol", "BTC/USDT", *args)
    assert_fails_cleanly(result, named)

    with pytest.raises(SystemExit) as exited:
        parse_args(["--strategy", "sma_cross", *args])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err
