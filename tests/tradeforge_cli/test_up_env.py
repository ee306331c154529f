"""What each child of `tradeforge up` receives: an allow-list per child, so that secrets reach only the children that
use them; and the Prefect server's protection in the pool the children's environments are picked from."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.services import credential
from pipeline.settings import Settings
from tests.conftest import REPO
from tradeforge_cli import up_env
from tradeforge_cli.up import DASHBOARD_OPTIONS
from tradeforge_cli.up_guard import INSTANCE_VARIABLE

ENVIRONMENT = {
    "PATH": "/usr/bin", "HOME": "/home/operator", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/checkout",
    INSTANCE_VARIABLE: "1-abc", "DO_NOT_TRACK": "true",
    "PREFECT_HOME": "/checkout/.prefect", "PREFECT_SERVER_API_AUTH_STRING": "operator", "PREFECT_API_KEY": "cloud",
    "MLFLOW_DISABLE_TELEMETRY": "true", "STREAMLIT_THEME_BASE": "dark", "DASK_DISTRIBUTED__WORKERS": "2",
    "HTTPS_PROXY": "http://user:pass@proxy:3128", "no_proxy": "127.0.0.1",
    "TRADEFORGE_DATA_DIR": "/data", "TRADEFORGE_DATABASE_URL": "sqlite:////data/state.db",
    "TRADEFORGE_CCXT_API_KEY": "venue key", "TRADEFORGE_ALPACA_API_SECRET": "venue secret",
    "tradeforge_telegram_token": "telegram token", "TRADEFORGE_API_TOKEN": "api token",
    "TRADEFORGE_DASHBOARD_PASSWORD": "dashboard password", "TRADEFORGE_NOT_A_SETTING": "x",
    "AWS_SECRET_ACCESS_KEY": "cloud secret", "GITHUB_TOKEN": "token", "PGPASSWORD": "database password",
}
STATE = {"PGPASSWORD"}  # the children that open the state database
ARTIFACTS = {"AWS_SECRET_ACCESS_KEY"}  # the children that read MLflow's artifacts
BASICS = {"PATH", "HOME", "LC_ALL", "PYTHONPATH", INSTANCE_VARIABLE, "DO_NOT_TRACK"}


@pytest.mark.parametrize(("receives", "expected"), [
    (up_env.PREFECT_SERVER, {"PREFECT_HOME", "PREFECT_SERVER_API_AUTH_STRING"}),
    (up_env.MLFLOW_UI, {"MLFLOW_DISABLE_TELEMETRY"} | ARTIFACTS),
    (up_env.DASHBOARD, {"MLFLOW_DISABLE_TELEMETRY", "STREAMLIT_THEME_BASE", "TRADEFORGE_DATA_DIR",
                        "TRADEFORGE_DATABASE_URL", "TRADEFORGE_DASHBOARD_PASSWORD"} | STATE | ARTIFACTS),
    (up_env.FLOW_RUNNER, {"PREFECT_HOME", "PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_DISABLE_TELEMETRY",
                          "DASK_DISTRIBUTED__WORKERS", "HTTPS_PROXY", "no_proxy", "TRADEFORGE_DATA_DIR",
                          "TRADEFORGE_DATABASE_URL", "TRADEFORGE_CCXT_API_KEY", "TRADEFORGE_ALPACA_API_SECRET",
                          "tradeforge_telegram_token"} | STATE | ARTIFACTS),
    (up_env.RUNTIME, {"MLFLOW_DISABLE_TELEMETRY", "HTTPS_PROXY", "no_proxy", "TRADEFORGE_DATA_DIR",
                      "TRADEFORGE_DATABASE_URL", "TRADEFORGE_CCXT_API_KEY", "TRADEFORGE_ALPACA_API_SECRET",
                      "tradeforge_telegram_token"} | STATE | ARTIFACTS),
    (up_env.BOT_API, {"TRADEFORGE_DATA_DIR", "TRADEFORGE_DATABASE_URL", "TRADEFORGE_API_TOKEN"} | STATE),
], ids=["prefect", "mlflow", "dashboard", "flow runner", "runtime", "bot api"])
def test_each_child_receives_only_what_it_uses(receives: up_env.Receives, expected: set[str]) -> None:
    assert set(receives.pick(ENVIRONMENT)) == BASICS | expected


def test_an_allow_list_names_only_secret_settings() -> None:
    assert up_env.secret_settings() >= up_env.VENUE_SECRETS | up_env.TELEGRAM_SECRETS | {"api_token",
                                                                                          "dashboard_password"}
    with pytest.raises(ValueError, match="not secret settings: data_dir"):
        up_env.Receives(secrets=frozenset({"data_dir"}))


def test_the_pool_closes_the_prefect_server_with_the_operator_credential(settings: Settings,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.setenv("TRADEFORGE_CCXT_API_KEY", "venue key")
    settings = settings.model_copy(update={"prefect_api_url": "http://127.0.0.1:4321/api"})
    env = up_env.base_env(settings, Path("/checkout"), "1-abc")
    secret = credential.stored(settings)
    assert secret is not None
    assert stat.S_IMODE(credential.credential_file(settings).stat().st_mode) == 0o600
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == env["PREFECT_API_AUTH_STRING"] == secret
    assert env["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert env["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == ("http://127.0.0.1:4321,http://localhost:4321,"
                                                          "http://[::1]:4321")  # the UI opened by any loopback name
    assert env["PREFECT_HOME"] == "/checkout/.prefect"
    assert up_env.base_env(settings, Path("/checkout"), "1-abc")["PREFECT_API_AUTH_STRING"] == secret  # reused
    own = up_env.own_env(env)
    assert own["PREFECT_API_AUTH_STRING"] == secret and "TRADEFORGE_CCXT_API_KEY" not in own
    assert "PREFECT_SERVER_API_AUTH_STRING" not in up_env.DASHBOARD.pick(env)


def test_make_dashboard_starts_streamlit_with_the_options_up_gives_it() -> None:
    recipe = subprocess.run(["make", "-n", "-s", "dashboard"], cwd=REPO, capture_output=True, text=True, check=True)
    words = recipe.stdout.replace("\\\n", " ").split()
    assert "--client.toolbarMode" in words and words[words.index("--client.toolbarMode") + 1] == "viewer"
    for option, value in zip(DASHBOARD_OPTIONS[::2], DASHBOARD_OPTIONS[1::2], strict=True):
        assert words[words.index(option) + 1] == value, option
