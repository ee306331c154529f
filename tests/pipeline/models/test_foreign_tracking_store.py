"""The model registry opens a SQLite tracking URI only when the file is new, empty or an MLflow store: tradeforge's
own state database, another application's database and a file that is not a database are refused by name before
MLflow creates or migrates its tables there, and are left byte-for-byte as they were."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from pipeline.domain import DataError
from pipeline.models.registry import ModelRegistry
from pipeline.models.tracking_store import check_tracking_store
from pipeline.state import StateStore
from tests.conftest import lake_fingerprint


def state_database(path: Path) -> None:
    with StateStore(f"sqlite:///{path.as_posix()}") as store:
        store.set_status("running", "trading", mode="paper")


def another_application(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total TEXT); "
                           "INSERT INTO invoices VALUES (1, '9.99');")


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(3).randbytes(4096))


@pytest.mark.parametrize(("make", "reason"), [
    pytest.param(state_database, "it is tradeforge's state database", id="tradeforge-state"),
    pytest.param(another_application, "it holds 1 table(s) of another application (invoices), not MLflow's",
                 id="another-application"),
    pytest.param(random_bytes, "it is not a SQLite database", id="random-bytes"),
])
def test_a_sqlite_file_that_is_not_an_mlflow_store_is_refused_untouched(
        tmp_path: Path, make: Callable[[Path], None], reason: str) -> None:
    folder = tmp_path / "mlruns"
    folder.mkdir()
    path = folder / "mlflow.db"
    make(path)
    before = lake_fingerprint(folder)
    uri = f"sqlite:///{path.as_posix()}"

    with pytest.raises(DataError) as refused:
        ModelRegistry(uri)

    message = str(refused.value)
    assert f"cannot use {uri} as the MLflow store: {reason}" in message
    assert "TRADEFORGE_MLFLOW_TRACKING_URI" in message
    assert lake_fingerprint(folder) == before  # the same bytes, no side files, no artifacts folder


def test_a_new_or_empty_file_becomes_an_mlflow_store_that_opens_again(tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "mlflow.db"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    for path in (tmp_path / "new" / "mlflow.db", empty):
        uri = f"sqlite:///{path.as_posix()}"
        first = ModelRegistry(uri, experiment="tradeforge-training")

        again = ModelRegistry(uri, experiment="tradeforge-training")

        assert again.experiment_id == first.experiment_id


def test_an_mlflow_store_whose_writer_was_killed_mid_write_is_still_ours(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    uri = f"sqlite:///{path.as_posix()}"
    ModelRegistry(uri, experiment="tradeforge-training")
    writer = ("import os, sqlite3, sys\n"
              "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "c.execute('PRAGMA cache_size=1'); c.execute('BEGIN IMMEDIATE')\n"
              "c.execute('CREATE TABLE scratch (b BLOB)')\n"
              "for _ in range(2000): c.execute('INSERT INTO scratch VALUES (randomblob(1000))')\n"
              "os._exit(0)  # killed mid-transaction: the -journal stays beside the file\n")
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True)
    assert path.with_name("mlflow.db-journal").stat().st_size > 0
    before = lake_fingerprint(tmp_path)

    check_tracking_store(uri)  # ours: MLflow recovers the write when it opens the store

    assert lake_fingerprint(tmp_path) == before
