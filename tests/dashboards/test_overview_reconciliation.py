"""The Overview page shows the runtime's last reconciliation with its venue: when, the verdict, what it compared
and the latest findings, from the state of a runtime that traded on a fake Binance through the real ccxt client
while an order was placed there by hand."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import common
from pipeline.reports.trading import reconciliation
from pipeline.state import StateStore
from tests.conftest import REPO
from tests.fakes.binance_server import FakeBinance
from tests.runtime.reconcile_cases import EVERY_S, FIRST, hand_limit_buy, start
from tests.runtime.venue_cases import Binance

APP = str(REPO / "dashboards" / "app.py")
TIMEOUT = 90


@pytest.fixture(scope="module")
def traded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A runtime's state after a reconciliation found an order placed by hand (its venue id)."""
    folder = tmp_path_factory.mktemp("reconciled")
    with FakeBinance(balances={"USDT": Decimal(Binance.cash)}) as server:
        case = Binance(folder, server)
        case.set_price(case.base)
        run = start(case, folder)
        run.replay(upto=FIRST)
        venue_id, _ = hand_limit_buy(case, float(run.feed.frames[run.key]["close"].iloc[FIRST - 1]) * 0.9, "0.01")
        run.later(EVERY_S)
        run.idle()
        run.store.close()
    return folder, venue_id


def _app(folder: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder))
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"sqlite:///{(folder / 'state.db').as_posix()}")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_overview_shows_the_last_reconciliation_its_verdict_and_findings(
        traded: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, venue_id = traded
    with StateStore.read_only(f"sqlite:///{folder / 'state.db'}") as store:
        last = reconciliation(store)
    assert last is not None and last.verdict == "mismatch" and venue_id in last.detail
    app = _app(folder, monkeypatch)
    [headline] = [e.value for e in app.error if "Last reconciliation" in e.value]
    assert headline.startswith(f"Last reconciliation {common.when(last.at)}: mismatch")
    assert any(venue_id in c.value and "BTC/USDT: venue holds" in c.value for c in app.caption)
    [findings] = [d.value for d in app.dataframe if "finding" in d.value.columns]
    assert findings["finding"].str.contains(f"venue id {venue_id}").tolist() == [True]
    assert "open order not placed by the runtime" in findings["finding"].iloc[0]


def test_a_runtime_that_never_reconciled_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.set_status("stopped", "never traded at a venue", mode="paper")
        assert reconciliation(store) is None
    app = _app(tmp_path, monkeypatch)
    assert not [e for e in app.error if "Last reconciliation" in e.value]
    assert any("No reconciliation yet" in m.value for m in app.markdown)
