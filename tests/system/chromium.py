"""Headless Chromium for the real-browser tests: Debian's ``chromium`` + ``chromium-driver``, driven by selenium
(a downloaded browser does not run here), with a fresh profile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A selenium driver of headless Chromium with its profile in ``profile``; fails the test (saying how to
    install them) when the browser or its driver is missing."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install them with "
                    "`apt-get install -y chromium chromium-driver` (or `make browser`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
