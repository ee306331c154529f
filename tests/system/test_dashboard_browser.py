"""The dashboard in a real browser: ``streamlit run`` as a subprocess on a populated installation, every page
loaded in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium), checked for
errors and for a key number, and photographed.

Screenshots go to the test's tmp dir; set ``DASHBOARD_SCREENSHOTS_DIR`` to also copy them there (the README's
set lives in ``docs/screenshots/``).
"""

from __future__ import annotations

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
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS_DIR")
CHARTED = ("overview", "chart", "backtests", "data_health")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return build(tmp_path_factory.mktemp("installation"))


@pytest.fixture(scope="module")
def server(populated: Populated, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("streamlit")
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRADEFORGE_")}
    env.update(populated.env, DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO))
    log = (folder / "streamlit.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"), "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats",
         "false"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), "streamlit's health check", process=process, log=folder / "streamlit.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install them with "
                    "`apt-get install -y chromium chromium-driver` (the dashboard's browser test needs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


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


def test_the_password_gate_holds_in_the_browser(
    populated: Populated, browser: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    secret = "tradeforge-browser-secret"
    folder = tmp_path_factory.mktemp("locked")
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRADEFORGE_")}
    env.update(populated.env, TRADEFORGE_DASHBOARD_PASSWORD=secret, DO_NOT_TRACK="true", PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"), "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats",
         "false"], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), "streamlit's health check", process=process)
        browser.get(f"{url}/trades")  # type: ignore[attr-defined]
        body = _settled(browser, ["Password", "Page not found"])  # while locked, only the sign-in page exists
        assert "PnL (net of fees)" not in body and "Winners / losers" not in body

        def notice_closed() -> bool:
            # the notice may render after a first Escape: press it until the notice is gone
            if not browser.find_elements(By.CSS_SELECTOR, '[role="dialog"]'):  # type: ignore[attr-defined]
                return True
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # type: ignore[attr-defined]
            return False

        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, '[role="dialog"]'),  # type: ignore[attr-defined]
                   "the 'Page not found' notice")
        wait_until(notice_closed, "the 'Page not found' notice to close")
        field = browser.find_element(By.CSS_SELECTOR, 'input[type="password"]')  # type: ignore[attr-defined]
        field.send_keys(secret + Keys.ENTER)
        body = _settled(browser, ["Equity", "Heartbeat age"])
        assert secret not in body
    finally:
        process.terminate()
        process.wait(timeout=30)
