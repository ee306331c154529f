"""Project-level promises: every setting documented, secrets and data kept out of the repository."""

from __future__ import annotations

import subprocess

from pipeline.settings import Settings
from tests.conftest import REPO
from tradeforge_cli.config_doc import env_example, markdown_table


def test_every_setting_is_in_the_readme_table_and_env_example() -> None:
    readme = (REPO / "README.md").read_text()
    example = (REPO / ".env.example").read_text()
    for name in Settings.model_fields:
        variable = f"TRADEFORGE_{name.upper()}"
        assert f"| `{name}` | `{variable}` |" in readme, f"{variable} missing from the README configuration table"
        assert f"# {variable}=" in example, f"{variable} missing from .env.example"
    assert example == env_example(), ".env.example is out of date: regenerate it with `tradeforge config env-example`"
    assert markdown_table() in readme, "the README settings table is out of date: `tradeforge config table`"


def test_env_lake_and_stores_are_git_ignored() -> None:
    for path in (".env", "data/lake/x.parquet", "mlruns/mlflow.db", ".prefect/prefect.db", ".venv/bin/python"):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert result.returncode == 0, f"{path} is not git-ignored"


def test_secrets_are_never_shown_by_the_settings_model() -> None:
    settings = Settings(alpaca_api_key="very-secret-key", _env_file=None)  # type: ignore[call-arg]
    assert "very-secret-key" not in repr(settings)
    assert "very-secret-key" not in str(settings.model_dump())
