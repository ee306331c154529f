"""The Overview shows the flows whose runs failed in the last 24 hours (as the flows' failure hook records them in
the state store): per flow, how often, when last and why; older failures are not shown. The flows tests show the
same for a real failed run (tests/flows/test_flow_failures.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import common
from pipeline.reports.flow_runs import FLOW_FAILED, failure_detail, flow_failures
from pipeline.state import StateStore
from tests.conftest import REPO

APP = str(REPO / "dashboards" / "app.py")
TIMEOUT = 90


def _overview(folder: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(folder))
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"sqlite:///{(folder / 'state.db').as_posix()}")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_overview_lists_the_flows_that_failed_in_the_last_day_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.set_status("running", "started", mode="paper")
        store.record_event(FLOW_FAILED, failure_detail("backup-state", "an old failure"), at=now - timedelta(hours=30))
        store.record_event(FLOW_FAILED, failure_detail("ingest", "binance:BTC/USDT:1h: the venue sent no new bar"),
                           at=now - timedelta(hours=3))
        store.record_event(FLOW_FAILED, failure_detail("daily-summary", "Telegram did not take it: chat 11"),
                           at=now - timedelta(hours=2))
        last = store.record_event(FLOW_FAILED, failure_detail("ingest", "2 of 2 series failed: timeout"),
                                  at=now - timedelta(hours=1))
        at = next(e.at for e in store.events(FLOW_FAILED) if e.id == last)
        frame = flow_failures(store, now)
    assert frame["flow"].tolist() == ["ingest", "daily-summary"]  # the latest first; the old failure is gone
    app = _overview(tmp_path, monkeypatch)
    shown = [e.value for e in app.error if e.value.startswith("Flow ")]
    assert shown == [
        f"Flow ingest failed 2 times in the last 24 h, last {common.when(at)}: 2 of 2 series failed: timeout",
        f"Flow daily-summary failed once in the last 24 h, last {common.when(now - timedelta(hours=2))}: "
        "Telegram did not take it: chat 11",
    ]
    assert not any("backup-state" in e.value for e in app.error)


def test_without_failed_flows_the_overview_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with StateStore(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.set_status("stopped", "never started", mode="paper")
        store.record_event("stale", "binance:BTC/USDT:1m has no bar for 3 bars")  # another kind of event
    app = _overview(tmp_path, monkeypatch)
    assert not [e for e in app.error if e.value.startswith("Flow ")]
    assert any(c.value == "No flow run failed in the last 24 h." for c in app.caption)
