"""The Chart page opens on the series the runtime trades, not on whichever series sorts first.

A lake of real bars holds three series: BTC/USDT 1d (three bars: the name that sorts first), ETH/USDT 1h and
XRP/ETH 1m (the most bars). A paper runtime (``runtime.node.Node``) trades ETH/USDT 1h from the lake's bars:
the Chart page (Streamlit's AppTest) opens on it; without the runtime's state it opens on the series with the
most bars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.data.catalog import read_bars
from pipeline.data.ingest import ingest
from pipeline.data.sources.files import FileSource
from pipeline.domain import Timeframe
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node
from tests.conftest import REPO, shared_file

APP = str(REPO / "dashboards" / "app.py")
TIMEOUT = 90
INGEST_NOW = pd.Timestamp("2026-11-21 12:00", tz="UTC")
TRADED = "binance:ETH/USDT:1h"
SERIES = (("binance_BTC-USDT_1d.parquet", "BTC/USDT", "1d", 3), ("binance_ETH-USDT_1h.parquet", "ETH/USDT", "1h", 1500),
          ("binance_XRP-ETH_1m.parquet", "XRP/ETH", "1m", None))


@dataclass(frozen=True)
class Installation:
    root: Path
    settings: Settings


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    root = tmp_path_factory.mktemp("chart")
    settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
                        _env_file=None)  # type: ignore[call-arg]
    clock = FixedClock(INGEST_NOW)
    for name, symbol, timeframe, rows in SERIES:
        frame = pd.read_parquet(shared_file(name))
        path = root / "incoming" / name
        path.parent.mkdir(exist_ok=True)
        (frame if rows is None else frame.iloc[-rows:]).to_parquet(path)
        ingest(FileSource(path, clock, "binance"), symbol, Timeframe.parse(timeframe), settings, clock)
    hours = Timeframe.parse("1h")
    bars = read_bars(settings, "ETH/USDT", hours, venue="binance")
    config = PortfolioConfig.model_validate({"cash": 100_000, "strategies": [
        {"id": "trend", "strategy": "sma_cross", "symbols": ["ETH/USDT"], "timeframe": "1h", "allocation": 1.0,
         "params": {"fast": 10, "slow": 30}}]})
    store = StateStore(settings.state_url)
    node = Node(store, config, ReplayFeed({TRADED: bars}, hours, batch_size=500), {"trend:ETH/USDT": TRADED},
                PaperBroker())
    node.start(fresh=True)
    summary = node.run()
    store.close()
    assert summary.fills > 0
    return Installation(root, settings)


def _chart(settings: Settings, state_url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", state_url)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    app.switch_page("views/chart.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_chart_opens_on_the_series_the_runtime_trades(installation: Installation,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    app = _chart(installation.settings, installation.settings.state_url, monkeypatch)
    symbol = app.selectbox(key="chart_symbol")
    assert symbol.options == ["binance BTC/USDT", "binance ETH/USDT", "binance XRP/ETH"]
    assert symbol.value == "binance ETH/USDT"
    assert app.selectbox(key="chart_timeframe").value == "1h"
    assert f"the runtime trades {TRADED}" in str(symbol.help)
    captions = " ".join(c.value for c in app.caption)
    assert " entries · " in captions and not captions.startswith("0 bars")
    assert app.get("plotly_chart")


def test_without_the_runtime_the_chart_opens_on_the_series_with_the_most_bars(
        installation: Installation, monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"sqlite:///{(installation.root / 'no-state' / 'tradeforge.db').as_posix()}"
    app = _chart(installation.settings, nowhere, monkeypatch)
    assert app.selectbox(key="chart_symbol").value == "binance XRP/ETH"
    assert app.selectbox(key="chart_timeframe").value == "1m"
    assert "the series with the most bars (2,469)" in str(app.selectbox(key="chart_symbol").help)
    assert not (installation.root / "no-state").exists()
