"""The ``tradeforge`` command's test setup: an in-process runner, the installed console script and a data dir."""

# The reporting contract: reporting commands given ``--json`` print exactly one JSON document on stdout (progress
# and errors go to stderr); a failing command exits non-zero with a message naming what is wrong and prints nothing
# on stdout.

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tradeforge_cli.app import app

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def json_of(result: Result) -> Any:
    """The one JSON document a successful ``--json`` command prints on stdout."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def squash(text: str) -> str:
    """``text`` without any whitespace: messages may be wrapped to the terminal width."""
    return "".join(text.split())


def assert_no_output_but_error(result: Result) -> None:
    """A refused command prints nothing on stdout, or, given ``--json``, only its error document."""
    if result.stdout:
        document = json.loads(result.stdout)
        assert set(document) == {"error"} and document["error"], result.stdout


def assert_fails_cleanly(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed instead of reporting: {result.exception!r}"
    assert_no_output_but_error(result)
    for fragment in fragments:
        assert squash(fragment) in squash(result.stderr), f"{fragment!r} not in error: {result.stderr}"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder))
    return folder


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
