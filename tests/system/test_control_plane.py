"""The control plane of a real `tradeforge up` is closed, and its children hold only the secrets they use.

One `up` (no bootstrap) for the module, started with fake venue keys, a Telegram token (a local fake Bot API
answers it) and a bot API token in its environment:

* the Prefect API answers nothing without the operator credential `up` stored (0600), even under a foreign Host
  header; with it, reads work and changes need a CSRF token; the UI (in headless Chromium) asks for the
  credential and then opens the page asked for; a preflight from a foreign origin gets no
  access-control-allow-origin, the UI's own origin does;
* the `prefect` command line (with the README's export line) and tradeforge's own deployment trigger work with the
  stored credential, and fail without it;
* the environments of the Prefect server, the MLflow UI and Streamlit hold no venue key, no Telegram token and no
  bot API token (the runtime and the deployments' server do: they use them);
* the MLflow UI refuses a foreign Host header and a change from a foreign origin.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from pipeline.backtest.adhoc import AdhocRequest
from pipeline.services import credential, prefect_api
from tests.fakes.telegram_server import FakeTelegram
from tests.system.chromium import chromium
from tests.system.up_platform import PROC, Platform, descendants
from tests.waiting import wait_until
from tradeforge_cli import up_guard
from tradeforge_cli.up import pid_file

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PROC.is_dir(), reason="reads the children's environments through /proc")]

VENUE_SECRETS = {
    "TRADEFORGE_CCXT_API_KEY": "venue-key-7d1e93",
    "TRADEFORGE_CCXT_API_SECRET": "venue-secret-c42f08",
    "TRADEFORGE_ALPACA_API_KEY": "alpaca-key-51b6aa",
    "TRADEFORGE_ALPACA_API_SECRET": "alpaca-secret-90e3d7",
}
TELEGRAM_TOKEN = "424242:telegram-token-for-the-drill"
BOT_API_TOKEN = "bot-api-token-2f7c61"
FOREIGN = "http://evil.example"


@dataclass
class Up:
    platform: Platform
    process: subprocess.Popen[bytes]
    services: dict[str, int]
    """Service name → process id (from the pid file of `up`)."""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    home = tmp_path_factory.mktemp("control-plane")
    with FakeTelegram(TELEGRAM_TOKEN) as telegram:
        platform = Platform(home, {**VENUE_SECRETS, "TRADEFORGE_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
                                   "TRADEFORGE_TELEGRAM_API_URL": telegram.url, "TRADEFORGE_TELEGRAM_CHAT_IDS": "42",
                                   "TRADEFORGE_API_TOKEN": BOT_API_TOKEN})
        log = home / "up.log"
        process = platform.start([sys.executable, "-m", "tradeforge_cli", "up", "--no-bootstrap"], log)
        try:
            platform.wait_up(process, log, "the platform")
            record = up_guard.UpRecord.load(pid_file(platform.settings))
            assert record is not None
            yield Up(platform, process, dict(record.services))
        finally:
            if process.poll() is None:
                platform.stop(process, log)


def _request() -> AdhocRequest:
    return AdhocRequest(strategy="sma_cross", symbol="BTC/USDT", timeframe="1m", venue="sample", start="2024-01-01",
                        end="2024-01-02", params={"fast": "10", "slow": "30"})


# ------------------------------------------------------------------------------------------------ Prefect


def test_the_credential_is_stored_private_and_the_api_refuses_requests_without_it(up: Up) -> None:
    platform = up.platform
    path = credential.credential_file(platform.settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    api = platform.prefect_api
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200  # the health probe needs no credential
    for auth in (None, "a guess"):
        with prefect_api.PrefectAPI(api, auth) as client:
            assert client.get("/deployments/name/adhoc-backtest/adhoc-backtest").status_code == 401
            assert client.get("/csrf-token", client="a-page").status_code == 401  # no token without the credential
            assert client.post("/deployments/filter", {"limit": 1}).status_code in (401, 403)
    # a page that rebinds its own name to 127.0.0.1 sends a foreign Host header, and has no credential either
    rebound = httpx.get(f"{api}/deployments/name/adhoc-backtest/adhoc-backtest",
                        headers={"Host": f"evil.example:{platform.prefect}"}, timeout=10)
    assert rebound.status_code == 401
    with platform.prefect_client() as client:
        assert client.get("/deployments/name/adhoc-backtest/adhoc-backtest").status_code == 200
        assert client.post("/deployments/filter", {"limit": 1}).status_code == 200


def test_a_change_without_a_csrf_token_is_refused(up: Up) -> None:
    secret = up.platform.credential()
    answer = httpx.post(f"{up.platform.prefect_api}/deployments/filter", json={"limit": 1},
                        timeout=10,
                        headers={"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()})
    assert answer.status_code == 403
    assert "CSRF" in answer.text


def test_the_prefect_ui_asks_for_the_credential(up: Up) -> None:
    answer = httpx.get(f"http://127.0.0.1:{up.platform.prefect}/ui-settings", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["auth"] == "BASIC"
    assert answer.json()["csrf_enabled"] is True


def _body(driver: object) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]
    except StaleElementReferenceException:  # the page redrew while it was read
        return ""


def test_the_prefect_ui_signs_in_with_the_credential_on_the_page_asked_for(up: Up, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ui = f"http://127.0.0.1:{up.platform.prefect}"
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{ui}/deployments")  # type: ignore[attr-defined]
        fields = wait_until(lambda: "/login" in driver.current_url  # type: ignore[attr-defined]
                            and driver.find_elements(By.CSS_SELECTOR, 'input[type="password"]'),  # type: ignore[attr-defined]
                            "the Prefect UI's sign-in form")
        assert "adhoc-backtest" not in _body(driver)
        fields[0].send_keys(up.platform.credential() + Keys.ENTER)
        wait_until(lambda: "adhoc-backtest" in _body(driver), "the deployments, listed once signed in")
        assert urlsplit(driver.current_url).path == "/deployments"  # type: ignore[attr-defined]


def test_only_the_uis_own_origin_may_call_the_api_from_a_browser(up: Up) -> None:
    own = f"http://127.0.0.1:{up.platform.prefect}"
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,prefect-csrf-token"}
    url = f"{up.platform.prefect_api}/deployments/filter"
    foreign = httpx.options(url, headers={"Origin": FOREIGN, **preflight}, timeout=10)
    assert "access-control-allow-origin" not in foreign.headers, foreign.headers
    allowed = httpx.options(url, headers={"Origin": own, **preflight}, timeout=10)
    assert allowed.headers.get("access-control-allow-origin") == own, allowed.headers
    local = f"http://localhost:{up.platform.prefect}"  # the same UI opened as localhost
    by_name = httpx.options(url, headers={"Origin": local, **preflight}, timeout=10)
    assert by_name.headers.get("access-control-allow-origin") == local, by_name.headers
    simple = httpx.get(f"{up.platform.prefect_api}/health", headers={"Origin": FOREIGN}, timeout=10)
    assert "access-control-allow-origin" not in simple.headers, simple.headers


def test_the_prefect_command_line_works_with_the_readmes_export_line(up: Up) -> None:
    platform = up.platform
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "TRADEFORGE_"))}
    env.update(PREFECT_HOME=str(platform.home / ".prefect"), PREFECT_API_URL=platform.prefect_api)
    prefect = str(Path(sys.executable).parent / "prefect")
    command = [prefect, "deployment", "ls", "--output", "json"]
    refused = subprocess.run(command, env=env, cwd=platform.home, capture_output=True, text=True, check=False)
    assert refused.returncode != 0, refused.stdout
    # the README's line, run where the data folder is `data/`
    script = 'export PREFECT_API_AUTH_STRING="$(cat data/run/operator-credential)" && exec "$@"'
    listed = subprocess.run(["bash", "-c", script, "bash", *command], env=env, cwd=platform.home,
                            capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "adhoc-backtest" in {d["name"] for d in json.loads(listed.stdout)}


def test_tradeforge_launches_a_deployment_with_the_stored_credential(up: Up, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = up.platform
    monkeypatch.delenv(credential.CLIENT_VARIABLE, raising=False)
    refused = prefect_api.launch_backtest(platform.prefect_api, _request())
    assert not refused.ok and "401" in refused.message
    launch = prefect_api.launch_backtest(platform.prefect_api, _request(),
                                         auth=credential.client_auth_string(platform.settings))
    assert launch.ok, launch.message
    with platform.prefect_client() as client:
        run = client.get(f"/flow_runs/{launch.flow_run_id}").json()
    assert run["deployment_id"] == launch.deployment_id
    assert run["parameters"]["strategy"] == "sma_cross"


# ------------------------------------------------------------------------------------------------ least secrets


def _environment(pid: int) -> dict[str, str]:
    raw = (PROC / str(pid) / "environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {name.decode(errors="replace"): value.decode(errors="replace") for name, value in pairs}


def _environments(up: Up, service: str) -> list[dict[str, str]]:
    """The environments of a service's process and of every process under it."""
    root = up.services[service]
    found = []
    for pid in sorted({root} | descendants(root)):
        try:
            found.append(_environment(pid))
        except OSError:  # ended meanwhile
            continue
    assert found, f"no process of {service}"
    return found


def _secrets_in(environment: dict[str, str], secrets: dict[str, str]) -> list[str]:
    text = "\0".join(f"{name}={value}" for name, value in environment.items())
    return [name for name, value in secrets.items() if value in text]


def test_the_servers_and_the_dashboard_hold_no_venue_key_no_telegram_token(up: Up) -> None:
    secrets = {**VENUE_SECRETS, "TRADEFORGE_TELEGRAM_TOKEN": TELEGRAM_TOKEN, "TRADEFORGE_API_TOKEN": BOT_API_TOKEN}
    operator = up.platform.credential()
    for service in ("prefect", "mlflow", "dashboard"):
        for environment in _environments(up, service):
            assert not _secrets_in(environment, secrets), (service, _secrets_in(environment, secrets))
            if service == "prefect":  # the server checks the credential; it reads no tradeforge setting
                assert environment["PREFECT_SERVER_API_AUTH_STRING"] == operator
                assert not [name for name in environment
                            if name.upper().startswith("TRADEFORGE_") and name != up_guard.INSTANCE_VARIABLE]
            else:  # the dashboard reads the credential from its file
                assert operator not in "\0".join(environment.values()), service
    # the children that use them have them: the test's secrets did reach `up`
    for service, expected in (("runtime", {**VENUE_SECRETS, "TRADEFORGE_TELEGRAM_TOKEN": TELEGRAM_TOKEN}),
                              ("deployments", {**VENUE_SECRETS, "TRADEFORGE_TELEGRAM_TOKEN": TELEGRAM_TOKEN}),
                              ("api", {"TRADEFORGE_API_TOKEN": BOT_API_TOKEN})):
        environment = _environments(up, service)[0]
        assert sorted(_secrets_in(environment, secrets)) == sorted(expected), service


# ------------------------------------------------------------------------------------------------ MLflow


def test_the_mlflow_ui_refuses_foreign_hosts_and_origins(up: Up) -> None:
    base = f"http://127.0.0.1:{up.platform.mlflow}"
    assert httpx.get(base, timeout=10).status_code == 200
    foreign_host = httpx.get(base, headers={"Host": f"evil.example:{up.platform.mlflow}"}, timeout=10)
    assert foreign_host.status_code == 403
    create = f"{base}/api/2.0/mlflow/experiments/create"
    refused = httpx.post(create, json={"name": "from-a-foreign-page"}, headers={"Origin": FOREIGN}, timeout=10)
    assert refused.status_code == 403
    lookup = httpx.get(f"{base}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "from-a-foreign-page"}, timeout=10)
    assert lookup.status_code == 404, lookup.text  # nothing was created
    preflight = httpx.options(create, headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"},
                              timeout=10)
    assert preflight.headers.get("access-control-allow-origin") in (None, ""), preflight.headers
