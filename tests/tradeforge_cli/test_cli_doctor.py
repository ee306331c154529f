"""``tradeforge doctor``: every check as check/status/detail/fix, non-zero when broken, never a secret shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import Result

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

