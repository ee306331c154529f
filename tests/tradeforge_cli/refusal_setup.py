"""The working folder of the refusal tables: an installation holding stored content worth protecting.

``tests.fakes.populated_state`` builds it once per test module, by really running things: a lake of real Binance
BTC/USDT 1m and 1h bars (with a quarantine), a state database a paper runtime traded into (three sleeves,
``trend:BTC/USDT``, ``reversion:BTC/USDT`` and ``ml:BTC/USDT``), an MLflow store with two versions of
``hybrid-BTC-USDT-1m`` and two stored backtests. Each case gets its own copy (``work``), with the settings pointing
at it, so that a refusal can be checked byte for byte against a folder nothing else touches.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.fakes.populated_state import MODEL, build

SLEEVES = ("ml:BTC/USDT", "reversion:BTC/USDT", "trend:BTC/USDT")
__all__ = ["MODEL", "SLEEVES", "installation", "work"]


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The populated installation, built once for the module (no developer setting leaks into it)."""
    root = tmp_path_factory.mktemp("installation")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("TRADEFORGE_") and name != "TRADEFORGE_SHARED_DATA":
                patch.delenv(name)
        patch.chdir(root)
        build(root)
    return root


@pytest.fixture
def work(installation: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the installation for one case, with the settings pointing at it."""
    folder = tmp_path / "work"
    shutil.copytree(installation, folder)
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder / "data"))
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    monkeypatch.setenv("TRADEFORGE_PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing answers there
    return folder
