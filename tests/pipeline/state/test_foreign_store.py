"""The state store opens only its own database: an empty one or one carrying tradeforge's schema. Another
application's SQLite file, a file that is not a database and a PostgreSQL schema holding another application's
tables are refused with the URL and the reason, and left byte-for-byte as they were (no table, no version row, no
WAL switch, no side file)."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from pipeline.domain import DataError
from pipeline.state import SCHEMA_VERSION, ForeignStoreError, StateStore
from pipeline.state.schema import inspect_state
from tests.conftest import lake_fingerprint
from tests.pipeline.state.stores import PG_URL, postgres_error


# ------------------------------------------------------------------------------------------- foreign SQLite files
def mlflow_like(path: Path) -> None:
    """Another application's store, in SQLite's default rollback-journal mode: an Alembic revision of its own,
    experiments and runs, with rows."""
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript("""
            CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
            INSERT INTO alembic_version VALUES ('dc11669786a5');
            CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT UNIQUE);
            INSERT INTO experiments VALUES (0, 'Default');
            CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, experiment_id INTEGER REFERENCES experiments);
            INSERT INTO runs VALUES ('4f1c', 0);
        """)


def wal_app(path: Path) -> None:
    """Another application's database in WAL mode, closed (its whole content in the main file, no side files)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'x');")


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(17).randbytes(8192))


def damaged_sqlite(path: Path) -> None:
    """A SQLite header followed by a first page of garbage: SQLite's header, but no readable schema."""
    mlflow_like(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = random.Random(5).randbytes(3996)
    path.write_bytes(bytes(data))


FOREIGN = [
    pytest.param(mlflow_like, "holds 3 table(s) of another application (alembic_version, experiments, runs)",
                 id="another-applications-sqlite"),
    pytest.param(wal_app, "holds 1 table(s) of another application (notes)", id="another-applications-wal-sqlite"),
    pytest.param(random_bytes, "it is not a SQLite database", id="random-bytes"),
    pytest.param(damaged_sqlite, "it cannot be read as a SQLite database", id="damaged-sqlite"),
]

OPENINGS: dict[str, Callable[[str], StateStore]] = {
    "for-writing": StateStore,
    "existing-only": lambda url: StateStore(url, create=False),
    "read-only": StateStore.read_only,
}


@pytest.mark.parametrize("opening", list(OPENINGS))
@pytest.mark.parametrize(("make", "reason"), FOREIGN)
def test_a_sqlite_file_that_is_not_ours_is_refused_and_left_byte_identical(
        tmp_path: Path, make: Callable[[Path], None], reason: str, opening: str) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "store.db"
    make(path)
    before = lake_fingerprint(folder)
    url = f"sqlite:///{path.as_posix()}"

    with pytest.raises(ForeignStoreError) as refused:
        OPENINGS[opening](url)

    message = str(refused.value)
    assert f"cannot use {url} as the state database" in message
    assert reason in message
    assert "left untouched" in message
    assert isinstance(refused.value, DataError)  # bad input: every command reports it on one line
    assert lake_fingerprint(folder) == before  # the same bytes, and no -wal, -shm or -journal beside it


def test_a_foreign_database_in_use_is_read_through_its_wal_and_refused(tmp_path: Path) -> None:
    """Another application holds its WAL database open with tables not yet checkpointed: they are seen (the refusal
    names them) and neither the database file nor its WAL changes."""
    path = tmp_path / "busy.db"
    with closing(sqlite3.connect(path)) as app:
        app.execute("PRAGMA journal_mode=WAL")
        app.execute("PRAGMA wal_autocheckpoint=0")
        app.executescript("CREATE TABLE orders_of_the_app (id INTEGER PRIMARY KEY); INSERT INTO orders_of_the_app "
                          "VALUES (1);")
        wal = path.with_name("busy.db-wal")
        assert wal.stat().st_size > 0
        before = path.read_bytes(), wal.read_bytes()

        with pytest.raises(ForeignStoreError, match="orders_of_the_app"):
            StateStore(f"sqlite:///{path.as_posix()}")

        assert (path.read_bytes(), wal.read_bytes()) == before
        assert app.execute("SELECT name FROM sqlite_master").fetchall() == [("orders_of_the_app",)]


# ------------------------------------------------------------------------------------------- ours: still opens
def no_file(path: Path) -> None:
    pass


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def no_tables(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript("CREATE TABLE t (x); DROP TABLE t;")
    assert path.stat().st_size > 0


@pytest.mark.parametrize("make", [no_file, zero_bytes, no_tables], ids=["no-file", "zero-bytes", "no-tables"])
def test_an_empty_sqlite_database_becomes_the_state(tmp_path: Path, make: Callable[[Path], None]) -> None:
    path = tmp_path / "state" / "tradeforge.db"
    path.parent.mkdir()
    make(path)

    with StateStore(f"sqlite:///{path.as_posix()}") as store:
        assert store.schema_version() == SCHEMA_VERSION

    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_our_database_opens_again_with_everything_in_it(db_url: str) -> None:
    with StateStore(db_url) as store:
        store.set_status("running", "started by the test", mode="paper")
    assert inspect_state(db_url) == SCHEMA_VERSION

    with StateStore(db_url) as again, StateStore.read_only(db_url) as reader:
        state = again.bot_state()
        assert state is not None and state.status_reason == "started by the test"
        assert reader.schema_version() == SCHEMA_VERSION


def test_our_database_with_a_table_of_the_operators_own_still_opens(db_url: str) -> None:
    with StateStore(db_url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE operator_notes (id INTEGER PRIMARY KEY, body TEXT)")

    with StateStore(db_url) as again:
        assert again.schema_version() == SCHEMA_VERSION
        assert "operator_notes" in sa.inspect(again.engine).get_table_names()


# ---------------------------------------------------------------------------------------------- inspect_state
@pytest.mark.parametrize(("make", "reason"), FOREIGN)
def test_inspecting_a_file_that_is_not_ours_names_it_and_changes_nothing(
        tmp_path: Path, make: Callable[[Path], None], reason: str) -> None:
    path = tmp_path / "store.db"
    make(path)
    before = lake_fingerprint(tmp_path)

    with pytest.raises(ForeignStoreError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        inspect_state(f"sqlite:///{path.as_posix()}")

    assert lake_fingerprint(tmp_path) == before


def test_inspecting_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tradeforge.db"
    path.parent.mkdir()

    assert inspect_state(f"sqlite:///{path.as_posix()}") is None

    assert list(path.parent.iterdir()) == []


# ------------------------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema of the test database (dropped afterwards)."""
    error = postgres_error()
    if error is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    schema = f"tf_foreign_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _schema_contents(schema: str) -> tuple[list[str], list[tuple[object, ...]]]:
    with psycopg.connect(PG_URL, connect_timeout=2) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
        rows = conn.execute(f'SELECT * FROM "{schema}".experiments ORDER BY 1').fetchall()
    return tables, rows


@pytest.mark.parametrize("opening", list(OPENINGS))
def test_a_postgres_schema_holding_another_applications_tables_is_refused_untouched(pg_schema: str,
                                                                                    opening: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE TABLE "{pg_schema}".experiments (experiment_id integer PRIMARY KEY, name text)')
        conn.execute(f"INSERT INTO \"{pg_schema}\".experiments VALUES (0, 'Default')")
    before = _schema_contents(pg_schema)
    options = f"-c search_path={pg_schema}".replace(" ", "%20").replace("=", "%3D")
    url = f"postgresql+psycopg://postgres:pg-secret-word@127.0.0.1:5432/test?options={options}"

    with pytest.raises(ForeignStoreError) as refused:
        OPENINGS[opening](url)

    message = str(refused.value)
    assert "postgres:***@127.0.0.1:5432/test" in message and "pg-secret-word" not in message
    assert "holds 1 table(s) of another application (experiments)" in message
    assert _schema_contents(pg_schema) == before == (["experiments"], [(0, "Default")])


def test_an_empty_postgres_schema_becomes_the_state(pg_schema: str) -> None:
    options = f"-c search_path={pg_schema}".replace(" ", "%20").replace("=", "%3D")
    url = f"{PG_URL}?options={options}"
    assert inspect_state(url) is None

    with StateStore(url) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert inspect_state(url) == SCHEMA_VERSION
