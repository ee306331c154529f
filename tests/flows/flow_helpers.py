"""The flows tests' workspace: real 1h import files, the environment a deployment sees, the shared prerequisites."""

# Every test stands alone, in any order. The prerequisites are fixtures that make them by running the flows
# themselves, once per session, into one shared workspace (like the jobs of one machine): ``ingested`` (the lake),
# ``trained`` (a production model in a model store of its own) and ``with_state`` (the state database of a paper
# runtime run). A test that changes a part of the workspace its assertions count (the lake of the ingest test, the
# model store of the train and nightly tests, the state database of the runtime test, the backups folder of the
# backup tests) gets that part of its own; so does a test whose flow run fails while the shared state exists (a
# failed run records its failure in the state database).

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from pipeline.settings import Settings, load_settings
from tests.conftest import PROXY_VARIABLES, shared_file

BTC_BARS = 3000
ETH_BARS = 1500


def _new_workspace(root: Path) -> Path:
    """A workspace at ``root``: the import files of the universe's two series, nothing else yet."""
    imports = root / "imports"
    imports.mkdir(parents=True)
    btc = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-BTC_BARS:]
    eth = pd.read_parquet(shared_file("binance_ETH-USDT_1h.parquet")).iloc[-ETH_BARS:]
    btc.to_parquet(imports / "btc.parquet", index=False)
    eth.to_parquet(imports / "eth.parquet", index=False)
    return root


def _point_at(monkeypatch: pytest.MonkeyPatch, workspace: Path, **overrides: str) -> Settings:
    """Point the environment (and the working directory) at ``workspace``, as a deployment would see it, with
    ``overrides`` (setting name → value) on top; returns the settings. No other TRADEFORGE_* variable stays."""
    for name in list(os.environ):
        if (name.startswith("TRADEFORGE_") and name != "TRADEFORGE_SHARED_DATA") or name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    last = min(pd.read_parquet(workspace / "imports" / name)["timestamp"].iloc[-1] for name in ("btc.parquet",
                                                                                                "eth.parquet"))
    days = (pd.Timestamp.now(tz="UTC") - last).days + 30  # the nightly window covers 30 days of both series
    values = {
        "TRADEFORGE_DATA_DIR": str(workspace / "data"),
        "TRADEFORGE_MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlruns' / 'mlflow.db'}",
        "TRADEFORGE_UNIVERSE": f"file:BTC/USDT:1h@{workspace / 'imports' / 'btc.parquet'},"
                               f"file:ETH/USDT:1h@{workspace / 'imports' / 'eth.parquet'}",
        "TRADEFORGE_NIGHTLY_BACKTEST_DAYS": str(days),
        "TRADEFORGE_BACKUP_KEEP": "3",
    } | {f"TRADEFORGE_{name.upper()}": value for name, value in overrides.items()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(workspace)
    return load_settings()


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared workspace; its parts exist only through the prerequisite fixtures below."""
    return _new_workspace(tmp_path_factory.mktemp("flows"))


@pytest.fixture(scope="session")
def ingested(harness: None, workspace: Path) -> list[dict[str, Any]]:
    """The shared lake holds both series: the ingest flow ran over the universe (idempotent: a second run adds
    nothing). Returns the flow's reports."""
    from flows.ingest import ingest_flow

    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, workspace)
        return ingest_flow()


@pytest.fixture(scope="session")
def trained(ingested: list[dict[str, Any]], workspace: Path) -> dict[str, Any]:
    """A production ``hybrid-BTC-USDT-1h`` (the train flow, promotion forced), trained on the shared lake into a
    model store that no test writes to: tests take a copy of it (``env_with_model``). Returns the flow's outcome
    with the store's ``tracking_uri``."""
    from flows.train import train_flow

    uri = f"sqlite:///{workspace / 'trained' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, workspace, mlflow_tracking_uri=uri)
        outcome = train_flow(epochs=2, hidden=8, seq_len=12, promote="force")
    assert outcome["promoted"] is True
    return outcome | {"tracking_uri": uri}


@pytest.fixture(scope="session")
def with_state(ingested: list[dict[str, Any]], workspace: Path) -> dict[str, Any]:
    """The shared state database holds a paper runtime's run over the shared lake's BTC/USDT bars (the runtime
    flow, run as the runtime test runs it; the parity test's backtest repeats it); nothing writes to it
    afterwards. Returns the runtime's summary."""
    from flows.runtime import runtime_flow

    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_at(monkeypatch, workspace)
        summary = runtime_flow(strategy="sma_cross", symbol="BTC/USDT", timeframe="1h", fresh=True,
                               params={"fast": "10", "slow": "30"},
                               options={"max_position": 1.0, "batch": 6})
    assert summary["fills"] > 0 and summary["stopped_by"] == "end of data"
    return summary


@pytest.fixture
def env(harness: None, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared workspace's settings, through the environment as a deployment would see them."""
    return _point_at(monkeypatch, workspace)


@pytest.fixture
def empty_env(harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A workspace of the test's own: an empty lake, no models, no state."""
    return _point_at(monkeypatch, _new_workspace(tmp_path / "workspace"))


@pytest.fixture
def env_without_models(harness: None, ingested: list[dict[str, Any]], workspace: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with an empty model store of the test's own."""
    return _point_at(monkeypatch, workspace, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


@pytest.fixture
def env_with_model(harness: None, trained: dict[str, Any], workspace: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with a model store of the test's own: a copy of ``trained``'s (its artifacts stay where
    they are), so the runs a test logs there are the only runs in it."""
    copy = tmp_path / "mlruns" / "mlflow.db"
    copy.parent.mkdir()
    original = sqlite3.connect(trained["tracking_uri"].removeprefix("sqlite:///"))
    target = sqlite3.connect(copy)
    try:
        original.backup(target)
    finally:
        original.close()
        target.close()
    return _point_at(monkeypatch, workspace, mlflow_tracking_uri=f"sqlite:///{copy}")


@pytest.fixture
def env_without_state(harness: None, ingested: list[dict[str, Any]], workspace: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with a state database of the test's own that does not exist yet."""
    return _point_at(monkeypatch, workspace, database_url=f"sqlite:///{tmp_path / 'state' / 'tradeforge.db'}")


def copy_state(url: str, target: Path) -> str:
    """A copy of the SQLite state database at ``url`` in ``target`` (SQLite's backup API); returns its URL."""
    target.parent.mkdir(parents=True, exist_ok=True)
    original = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        original.backup(copy)
    finally:
        original.close()
        copy.close()
    return f"sqlite:///{target.as_posix()}"


@pytest.fixture
def env_own_state(harness: None, with_state: dict[str, Any], workspace: Path, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A copy of the shared state database, with a data directory (reports, backups) of the test's own: for a test
    whose runs write to the state (a failed run records its failure there) or change it."""
    shared = _point_at(monkeypatch, workspace).state_url
    own = copy_state(shared, tmp_path / "state" / "tradeforge.db")
    return _point_at(monkeypatch, workspace, data_dir=str(tmp_path / "data"), database_url=own)


@pytest.fixture
def env_own_backups(env_own_state: Settings) -> Settings:
    """The shared runtime's state (a copy), backed up into a data directory (and so a backups folder) of the
    test's own."""
    return env_own_state


@pytest.fixture
def env_with_a_backup(env_own_backups: Settings) -> Settings:
    """``env_own_backups`` with one backup in its folder (the backup flow)."""
    from flows.backup import backup_flow

    backup_flow()
    return env_own_backups
