"""The dashboard in a real browser: ``streamlit run`` as a subprocess on a populated installation (with the
options ``tradeforge up`` gives it), every page loaded in headless Chromium (Debian's ``chromium`` +
``chromium-driver``, driven by selenium), checked for errors and for a key number, and photographed. The
toolbar is the viewer's (no developer menu, no Deploy button), and the password gate holds: a page address
opened while locked is where the operator lands after signing in.

Screenshots go to the test's tmp dir; set ``DASHBOARD_SCREENSHOTS_DIR`` to also copy them there (the README's
set lives in ``docs/screenshots/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from dashboards import common
from pipeline import reports
from pipeline.state import StateStore
from tests.conftest import REPO
from tests.fakes.populated_state import Populated, build
from tests.system.chromium import chromium
from tests.waiting import wait_until
from tradeforge_cli.up import dashboard_command

SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS_DIR")
CHARTED = ("overview", "chart", "backtests", "data_health")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return build(tmp_path_factory.mktemp("installation"))


@contextlib.contextmanager
def _dashboard(populated: Populated, folder: Path, toolbar: str = "viewer", **settings: str) -> Iterator[str]:
    """The dashboard as `tradeforge up` starts it (``toolbar`` may replace its toolbar mode), on the populated
    installation with ``settings`` (TRADEFORGE_* variables) on top; yields its address."""
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRADEFORGE_")}
    env.update(populated.env, DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO), **settings)
    command = dashboard_command(REPO, "127.0.0.1", port, Path(sys.executable).parent)
    command[command.index("--client.toolbarMode") + 1] = toolbar
    log = (folder / "streamlit.log").open("wb")
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), "streamlit's health check", process=process, log=folder / "streamlit.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(populated: Populated, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _dashboard(populated, tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def _expected(populated: Populated) -> dict[str, tuple[str, Callable[[], list[str]]]]:
    """Per page: its address and the texts (key numbers) it must show."""
    def overview() -> list[str]:
        with StateStore.read_only(populated.settings.state_url) as store:
            view = reports.overview(store, datetime.now(UTC))
        return ["Overview", common.money(view.equity), common.money(view.day_pnl, signed=True)]

    def trades() -> list[str]:
        with StateStore.read_only(populated.settings.state_url) as store:
            chosen = reports.trades(store)
        return ["Trades", common.money(chosen.pnl, signed=True), common.money(chosen.fees)]

    return {
        "overview": ("", overview),
        "chart": ("chart", lambda: ["Down-sampled:", "Probability of an up-move from hybrid-BTC-USDT-1m v2"]),
        "trades": ("trades", trades),
        "backtests": ("backtests", lambda: list(populated.backtest_ids)),
        "optimisation": ("optimisation", lambda: ["No parameter study", "tradeforge optimize"]),
        "models": ("models", lambda: ["Production: v2", "hybrid-BTC-USDT-1m"]),
        "data_health": ("data_health", lambda: ["Quarantined rows", "The 2 most recently quarantined rows"]),
    }


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stcore/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _settled(driver: object, texts: list[str], chart: bool = False) -> str:
    """Wait until the page shows every text (and a drawn Plotly chart when ``chart``) and Streamlit has stopped
    running the script; returns the page's text."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def shown() -> str:
        try:
            body = str(driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]
            running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')  # type: ignore[attr-defined]
            drawn = not chart or driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")  # type: ignore[attr-defined]
            busy = any("Running" in r.text for r in running)
        except StaleElementReferenceException:  # the page redrew while it was read: look again
            return ""
        return body if all(t in body for t in texts) and drawn and not busy else ""

    return wait_until(shown, f"the page to show {texts}" + (" and a Plotly chart" if chart else ""))


def _still(driver: object) -> bytes:
    """A screenshot once the page has stopped moving (two screenshots in a row are the same picture)."""
    previous: list[bytes] = [driver.get_screenshot_as_png()]  # type: ignore[attr-defined]

    def same() -> bytes | None:
        shot: bytes = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
        still = shot == previous[0]
        previous[0] = shot
        return shot if still else None

    return wait_until(same, "the page to stop moving (charts finish their transitions)")


def test_every_page_renders_in_a_real_browser_without_errors(
    server: str, browser: object, populated: Populated, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    shots.mkdir()
    for name, (path, texts) in _expected(populated).items():
        browser.get(f"{server}/{path}")  # type: ignore[attr-defined]
        body = _settled(browser, texts(), chart=name in CHARTED)
        exceptions = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')  # type: ignore[attr-defined]
        assert not exceptions, f"{name}: {exceptions[0].text}"
        assert "Traceback" not in body and "Error" not in body, f"{name} shows an error:\n{body[:3000]}"
        (shots / f"{name}.png").write_bytes(_still(browser))
        assert (shots / f"{name}.png").stat().st_size > 10_000
    if SCREENSHOTS:
        target = Path(SCREENSHOTS)
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy2(shot, target / shot.name)


def _toolbar(driver: object, url: str) -> tuple[bool, set[str]]:
    """Open ``url``; whether the toolbar has a Deploy button, and the items of its main menu."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(url)  # type: ignore[attr-defined]
    _settled(driver, ["Overview", "Equity"])
    menu = wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMainMenu"]'),  # type: ignore[attr-defined]
                      "the main menu's button")
    menu[0].click()
    items = wait_until(lambda: {str(e.get_attribute("data-testid")).removeprefix("stMainMenuItem-")
                                for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid^="stMainMenuItem-"]')},  # type: ignore[attr-defined]
                       "the main menu's items")
    deploy = bool(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAppDeployButton"]'))  # type: ignore[attr-defined]
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # type: ignore[attr-defined]
    return deploy, items


def test_the_toolbar_has_no_developer_menu_and_no_deploy_button(
    server: str, browser: object, populated: Populated, tmp_path_factory: pytest.TempPathFactory
) -> None:
    deploy, items = _toolbar(browser, server)
    assert not deploy
    assert "print" in items and not {"rerun", "clearCache"} & items, items
    # what Streamlit shows a developer on 127.0.0.1 (the control: the same checks see the developer's toolbar)
    with _dashboard(populated, tmp_path_factory.mktemp("developer"), toolbar="developer") as developer:
        deploy, items = _toolbar(browser, developer)
    assert deploy
    assert {"rerun", "clearCache"} <= items, items


def test_the_password_gate_holds_and_signing_in_lands_on_the_page_opened(
    populated: Populated, browser: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    secret = "tradeforge-browser-secret"
    with _dashboard(populated, tmp_path_factory.mktemp("locked"), TRADEFORGE_DASHBOARD_PASSWORD=secret) as url:
        browser.get(f"{url}/trades?note=kept")  # type: ignore[attr-defined]
        body = _settled(browser, ["Password"])  # while locked, every page's address shows the sign-in form only
        assert "PnL (net of fees)" not in body and "Winners / losers" not in body
        assert "Page not found" not in body
        field = browser.find_element(By.CSS_SELECTOR, 'input[type="password"]')  # type: ignore[attr-defined]
        field.send_keys(secret + Keys.ENTER)
        body = _settled(browser, ["Trades", "PnL (net of fees)"])
        assert secret not in body
        assert browser.current_url == f"{url}/trades?note=kept"  # type: ignore[attr-defined]
