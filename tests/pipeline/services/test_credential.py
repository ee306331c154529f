"""The operator credential: created once (random, mode 0600) and reused; the setting dashboard_password wins when
set; Prefect clients take PREFECT_API_AUTH_STRING from the environment first."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.services import credential
from pipeline.settings import Settings
from tests.conftest import REPO


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_first_start_creates_a_private_credential_and_later_starts_reuse_it(settings: Settings) -> None:
    assert credential.operator_credential(settings) is None  # nothing asks for one yet
    made = credential.ensure(settings)
    path = credential.credential_file(settings)
    assert path == settings.data_dir / "run" / "operator-credential"
    assert len(made) >= 32
    assert _mode(path) == 0o600
    assert credential.ensure(settings) == made
    assert credential.operator_credential(settings) == made
    other = Settings(data_dir=settings.data_dir.parent / "other", _env_file=None)  # type: ignore[call-arg]
    assert credential.ensure(other) != made


def test_a_stored_credential_readable_by_others_is_made_private_again(settings: Settings) -> None:
    made = credential.ensure(settings)
    path = credential.credential_file(settings)
    path.chmod(0o644)
    assert credential.ensure(settings) == made
    assert _mode(path) == 0o600


def test_the_dashboard_password_is_the_credential_when_set_and_nothing_is_written(tmp_path: Path) -> None:
    chosen = Settings(data_dir=tmp_path / "data", dashboard_password=SecretStr("operator's own"),  # type: ignore[call-arg]
                      _env_file=None)
    assert credential.ensure(chosen) == "operator's own"
    assert credential.operator_credential(chosen) == "operator's own"
    assert not credential.credential_file(chosen).exists()


def test_an_empty_stored_file_is_replaced(settings: Settings) -> None:
    path = credential.credential_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    assert credential.operator_credential(settings) is None
    made = credential.ensure(settings)
    assert made and path.read_text().strip() == made and _mode(path) == 0o600


def test_an_unreadable_stored_file_is_named(settings: Settings) -> None:
    path = credential.credential_file(settings)
    path.mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(credential.CredentialError, match=f"cannot read the operator credential {path}"):
        credential.ensure(settings)


def test_clients_take_the_environment_first(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(credential.CLIENT_VARIABLE, raising=False)
    assert credential.client_auth_string(settings) is None
    made = credential.ensure(settings)
    assert credential.client_auth_string(settings) == made
    monkeypatch.setenv(credential.CLIENT_VARIABLE, "from the environment")
    assert credential.client_auth_string(settings) == "from the environment"


def test_the_default_credential_file_is_ignored_by_git() -> None:
    default = Settings(data_dir=Settings.model_fields["data_dir"].default, _env_file=None)  # type: ignore[call-arg]
    path = credential.credential_file(default)
    assert not path.is_absolute()  # under the checkout's data folder
    ignored = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", str(path)], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{path} is not git-ignored"
