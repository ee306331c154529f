"""A state URL naming another application's SQLite file or a file that is not a database: ``tradeforge runtime``,
``tradeforge runtime ctl`` and ``python -m runtime`` (run and ctl) refuse it on one line naming the file and the
reason, with no traceback, and leave the file byte-for-byte as it was (no tables, no WAL, no side files). So is
tradeforge's own state written by a newer tradeforge."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import lake_fingerprint
from tests.tradeforge_cli import cli_helpers
from tests.tradeforge_cli.cli_helpers import assert_fails_cleanly, cli

data_dir = cli_helpers.data_dir  # the test's own data dir (TRADEFORGE_DATA_DIR)

RUN = ("--feed", "sample", "--strategy", "sma_cross", "--symbol", "BTC/USDT")


def mlflow_like(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript("""
            CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
            INSERT INTO alembic_version VALUES ('dc11669786a5');
            CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT);
            INSERT INTO experiments VALUES (0, 'Default');
            CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, experiment_id INTEGER);
        """)


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(11).randbytes(4096))


FOREIGN = [
    pytest.param(mlflow_like, "holds 3 table(s) of another application (alembic_version, experiments, runs)",
                 id="another-applications-sqlite"),
    pytest.param(random_bytes, "it is not a SQLite database", id="random-bytes"),
]
COMMANDS = [pytest.param(("runtime", "ctl", "pause"), id="runtime-ctl"), pytest.param(("runtime", *RUN), id="runtime")]


def _foreign_state(tmp_path: Path, make: Callable[[Path], None]) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "store.db"
    make(path)
    return path, lake_fingerprint(folder)


@pytest.mark.parametrize("args", COMMANDS)
@pytest.mark.parametrize(("make", "reason"), FOREIGN)
def test_tradeforge_runtime_refuses_a_state_database_that_is_not_ours(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], None], reason: str,
        args: tuple[str, ...]) -> None:
    path, before = _foreign_state(tmp_path, make)
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"sqlite:///{path.as_posix()}")

    result = cli(*args)

    assert_fails_cleanly(result, f"cannot use sqlite:///{path.as_posix()} as the state database", reason)
    assert len(result.stderr.strip().splitlines()) == 1
    assert lake_fingerprint(path.parent) == before


@pytest.mark.parametrize("args", [pytest.param(("ctl", "pause"), id="ctl"), pytest.param(RUN, id="run")])
@pytest.mark.parametrize(("make", "reason"), FOREIGN)
def test_python_m_runtime_refuses_a_state_database_that_is_not_ours(
        tmp_path: Path, make: Callable[[Path], None], reason: str, args: tuple[str, ...]) -> None:
    path, before = _foreign_state(tmp_path, make)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEFORGE_") or k == "TRADEFORGE_SHARED_DATA"}
    env.update(TRADEFORGE_DATA_DIR=str(tmp_path / "data"), TRADEFORGE_DATABASE_URL=f"sqlite:///{path.as_posix()}")

    done = subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300, check=False)

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: cannot use sqlite:///{path.as_posix()} as the state database: ")
    assert reason in lines[0]
    assert lake_fingerprint(path.parent) == before


def newer_state(path: Path) -> None:
    """tradeforge's state as a newer tradeforge left it (schema version 99)."""
    from pipeline.state import StateStore

    with StateStore(f"sqlite:///{path.as_posix()}") as store:
        store.set_status("running", "trading", mode="paper")
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
        conn.commit()


@pytest.mark.parametrize("args", COMMANDS)
def test_a_state_database_of_a_newer_tradeforge_is_refused_on_one_line(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]) -> None:
    path, before = _foreign_state(tmp_path, newer_state)
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"sqlite:///{path.as_posix()}")

    result = cli(*args)

    assert_fails_cleanly(result, f"sqlite:///{path.as_posix()} has schema version 99", "upgrade tradeforge")
    assert len(result.stderr.strip().splitlines()) == 1
    assert lake_fingerprint(path.parent) == before
