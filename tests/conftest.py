"""Shared fixtures: isolated settings on a temporary data dir, and the real market data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
for _name, _value in (("DO_NOT_TRACK", "true"), ("MLFLOW_DISABLE_TELEMETRY", "true"), ("GIT_PYTHON_REFRESH", "quiet"),
                      ("PREFECT_SERVER_ANALYTICS_ENABLED", "false")):
    os.environ.setdefault(_name, _value)
NOW = pd.Timestamp("2026-11-21 12:00", tz="UTC")


def _shared_data_dir() -> Path:
    configured = os.environ.get("TRADEFORGE_SHARED_DATA")
    candidates = [Path(configured)] if configured else []
    candidates += [parent / "shared" / "data" for parent in REPO.parents]
    candidates.append(Path("/work/shared/data"))
    for candidate in candidates:
        if (candidate / "binance_BTC-USDT_1m.parquet").exists():
            return candidate
    raise RuntimeError(
        "the real market data (shared/data with binance_BTC-USDT_1m.parquet) was not found next to the "
        "repository; set TRADEFORGE_SHARED_DATA to its folder"
    )


SHARED_DATA = _shared_data_dir()
SYSTEM = REPO / "tests" / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every system test is slow (``make test-fast`` runs ``-m "not slow"``)."""
    for item in items:
        if SYSTEM in item.path.parents:
            item.add_marker(pytest.mark.slow)


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TRADEFORGE_* variable or .env of the developer leaks into a test, and requests to the local stand-in
    servers on 127.0.0.1 never go through a proxy set in the environment."""
    for name in list(os.environ):
        if (name.startswith("TRADEFORGE_") and name != "TRADEFORGE_SHARED_DATA") or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


def shared_file(name: str) -> Path:
    return SHARED_DATA / name


def lake_fingerprint(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: equal fingerprints mean a byte-for-byte identical tree."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
