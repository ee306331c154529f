"""``tradeforge doctor``: every check as check/status/detail/fix, non-zero when broken, never a secret shown."""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from typer.testing import Result

from tests.conftest import lake_fingerprint
from tests.pipeline.state.stores import PG_URL, postgres_error
from tests.tradeforge_cli import cli_helpers
from tests.tradeforge_cli.cli_helpers import cli, squash

data_dir = cli_helpers.data_dir  # the test's own data dir (TRADEFORGE_DATA_DIR)

DOCTOR_FIELDS = {"check", "status", "detail", "fix"}


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



# ------------------------------------------------------------------------------------------- stores not ours
def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(23).randbytes(4096))


def _another_application(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript("""
            CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
            INSERT INTO alembic_version VALUES ('dc11669786a5');
            CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT);
            CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, experiment_id INTEGER);
        """)


NOT_OURS = [
    pytest.param(_random_bytes, "it is not a SQLite database", id="not-a-database"),
    pytest.param(_another_application, "holds 3 table(s) of another application (alembic_version, experiments, runs)",
                 id="another-applications-database"),
]


@pytest.mark.parametrize(("make", "reason"), NOT_OURS)
def test_doctor_fails_a_state_database_that_is_not_ours_and_leaves_it_untouched(
    healthy_setup: Path, data_dir: Path, make: Callable[[Path], None], reason: str
) -> None:
    path = data_dir / "state" / "tradeforge.db"  # where the runtime keeps its state by default
    path.parent.mkdir(parents=True)
    make(path)
    before = lake_fingerprint(path.parent)

    result = cli("doctor", "--json")

    assert result.exit_code != 0
    check = doctor_checks(result)["state db"]
    assert check["status"] == "fail"
    assert f"cannot use sqlite:///{path.as_posix()} as the state database" in check["detail"]
    assert reason in check["detail"]
    assert "TRADEFORGE_DATABASE_URL" in check["fix"]
    assert lake_fingerprint(path.parent) == before  # the same bytes, and no -wal, -shm or -journal beside it


def test_doctor_fails_a_state_database_that_is_not_ours_in_the_table_form(
    healthy_setup: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = healthy_setup / "elsewhere.db"
    _random_bytes(path)
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"sqlite:///{path.as_posix()}")

    result = cli("doctor")

    assert result.exit_code == 1
    [row] = [line for line in result.stdout.splitlines() if "state db" in line]  # one line per check
    assert " fail " in row and " ok " not in row
    assert squash(f"{path.as_posix()} as the state database: it is not a SQLite database") in squash(result.stdout)


def test_doctor_fails_a_postgres_schema_holding_another_applications_tables(
    healthy_setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if postgres_error() is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {postgres_error()}")
    schema = f"tf_doctor_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".invoices (id integer PRIMARY KEY)')
    try:
        options = f"-c search_path={schema}".replace(" ", "%20").replace("=", "%3D")
        monkeypatch.setenv("TRADEFORGE_DATABASE_URL",
                           f"postgresql://postgres:pg-secret-word@127.0.0.1:5432/test?options={options}")

        result = cli("doctor", "--json")

        assert result.exit_code != 0
        check = doctor_checks(result)["state db"]
        assert check["status"] == "fail"
        assert "holds 1 table(s) of another application (invoices)" in check["detail"]
        assert "pg-secret-word" not in result.output
        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                  (schema,)).fetchall()
        assert tables == [("invoices",)]
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_doctor_passes_our_own_state_database(healthy_setup: Path, data_dir: Path) -> None:
    from pipeline.settings import Settings
    from pipeline.state import SCHEMA_VERSION, StateStore

    with StateStore(Settings(data_dir=data_dir, _env_file=None).state_url) as store:
        store.set_status("running", "trading", mode="paper")

    checks = doctor_checks(cli("doctor", "--json"))

    assert checks["state db"]["status"] == "ok"
    assert checks["state db"]["detail"].endswith(f"(schema version {SCHEMA_VERSION})")


@pytest.mark.parametrize(("make", "reason"), [
    pytest.param(_random_bytes, "it is not a SQLite database", id="not-a-database"),
    pytest.param(None, "it is tradeforge's state database", id="tradeforge-state"),
])
def test_doctor_fails_an_mlflow_store_that_is_not_mlflows(
    healthy_setup: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], None] | None,
    reason: str
) -> None:
    from pipeline.settings import Settings
    from pipeline.state import StateStore

    if make is None:
        url = Settings(data_dir=data_dir, _env_file=None).state_url
        StateStore(url).close()
        path = Path(url.removeprefix("sqlite:///"))
    else:
        path = healthy_setup / "mlruns" / "mlflow.db"
        path.parent.mkdir()
        make(path)
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{path.as_posix()}")
    before = lake_fingerprint(path.parent)

    result = cli("doctor", "--json")

    assert result.exit_code != 0
    check = doctor_checks(result)["mlflow store"]
    assert check["status"] == "fail"
    assert f"cannot use sqlite:///{path.as_posix()} as the MLflow store: {reason}" in check["detail"]
    assert lake_fingerprint(path.parent) == before


def test_doctor_fails_a_lake_folder_holding_files_that_are_not_ours(healthy_setup: Path, data_dir: Path) -> None:
    lake = data_dir / "lake"
    (lake / "photos").mkdir(parents=True)
    (lake / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")

    result = cli("doctor", "--json")

    assert result.exit_code != 0
    check = doctor_checks(result)["lake"]
    assert check["status"] == "fail"
    assert f"the lake folder {lake} holds files tradeforge did not write (photos/cat.jpg)" in check["detail"]
    assert "TRADEFORGE_DATA_DIR" in check["fix"]
