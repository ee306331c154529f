"""The installed console script, machine-relevant output on a narrow terminal and a light ``--help``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import shared_file
from tests.tradeforge_cli import cli_helpers
from tests.tradeforge_cli.cli_helpers import assert_fails_cleanly, cli, run_script

data_dir = cli_helpers.data_dir  # the test's own data dir (TRADEFORGE_DATA_DIR)


# --------------------------------------------------------------------------------------------------- console script
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
    assert json.loads(proc.stdout) == {"error": json.loads(proc.stdout)["error"]}
    assert "timeframe 'abc'" in json.loads(proc.stdout)["error"]
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
