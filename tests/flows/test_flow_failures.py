"""A flow whose job did not happen ends Failed, says why, and the failure shows: recorded in the state store for
the dashboard's Overview, and announced on Telegram where Telegram works.

Under Prefect's test harness, on the flows tests' shared workspace (real 1h bars, a paper runtime's state): the
daily summary with Telegram unreachable, or refusing the chart; the ingest of a stale series the venue (a fake
Binance driven by the real ccxt client) sends nothing new for, next to an up-to-date one that is fine; a backup
the restore drill does not verify.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.data.catalog import read_bars
from pipeline.reports.flow_runs import flow_failures
from pipeline.settings import Settings
from pipeline.state import StateStore
from pipeline.state.backup import list_backups
from tests.conftest import REPO, shared_file
from tests.fakes.binance_server import FakeBinance
from tests.fakes.telegram_server import FakeTelegram
from tests.flows import flow_helpers
from tests.pipeline.reports.test_summary import TOKEN, PhotoTelegram

pytestmark = [
    pytest.mark.slow,  # every flow runs under Prefect's test harness (a temporary server)
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

harness = flow_helpers.harness
workspace = flow_helpers.workspace
ingested = flow_helpers.ingested
with_state = flow_helpers.with_state
env_own_state = flow_helpers.env_own_state

APP = str(REPO / "dashboards" / "app.py")
CHATS = (11, 22)


def _busiest_day(settings: Settings) -> date:
    with StateStore.read_only(settings.state_url) as store:
        days = [t.exit_time.date() for t in store.trades()]
    return max(set(days), key=days.count)


def _telegram_at(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Telegram on, at ``url``: one retry, no back-off (a delivery failure is known at once)."""
    monkeypatch.setenv("TRADEFORGE_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("TRADEFORGE_TELEGRAM_CHAT_IDS", ",".join(map(str, CHATS)))
    monkeypatch.setenv("TRADEFORGE_TELEGRAM_API_URL", url)
    monkeypatch.setenv("TRADEFORGE_MAX_RETRIES", "1")
    monkeypatch.setenv("TRADEFORGE_RETRY_BACKOFF_S", "0")


def _recorded(settings: Settings) -> dict[str, Any]:
    """The flow failures the state store holds for the last day, by flow."""
    with StateStore.read_only(settings.state_url) as store:
        frame = flow_failures(store, datetime.now(UTC))
    return {row.flow: row for row in frame.itertuples(index=False)}


def test_a_summary_telegram_cannot_take_fails_the_run_and_the_overview_shows_why(
        env_own_state: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.summary import daily_summary_flow

    gone = FakeTelegram(TOKEN).start()
    unreachable = gone.url
    gone.stop()  # nothing listens there any more: every request is refused
    _telegram_at(unreachable, monkeypatch)
    day = _busiest_day(env_own_state).isoformat()
    state = daily_summary_flow(day=day, return_state=True)
    assert state.is_failed()
    folder = env_own_state.data_dir / "reports" / day
    assert (folder / "summary.json").is_file() and (folder / "equity.png").is_file()  # stored all the same
    message = str(state.message)
    assert f"the summary of {day} is stored in {folder} but Telegram did not take it" in message
    for chat in CHATS:
        assert f"message to chat {chat}: not delivered after 2 attempts" in message
        assert f"chart to chat {chat}: not delivered after 2 attempts" in message
    assert TOKEN not in message
    recorded = _recorded(env_own_state)["daily-summary"]
    assert recorded.failures == 1 and recorded.reason.startswith(f"the summary of {day} is stored in")

    app = AppTest.from_file(APP, default_timeout=90)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    [shown] = [e.value for e in app.error if "daily-summary" in e.value]
    assert shown.startswith("Flow daily-summary failed once in the last 24 h, last ")
    assert f"the summary of {day} is stored in {folder} but Telegram did not take it" in shown
    assert f"message to chat {CHATS[0]}: not delivered after 2 attempts" in shown


def test_a_chart_telegram_refuses_fails_the_run_and_the_alert_names_the_flow_and_the_reason(
        env_own_state: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.summary import daily_summary_flow

    day = _busiest_day(env_own_state).isoformat()
    with PhotoTelegram() as server:
        server.fail_next(status=403, method="sendPhoto", times=len(CHATS))
        _telegram_at(server.url, monkeypatch)
        state = daily_summary_flow(day=day, return_state=True)
        assert state.is_failed()
        texts = {chat: server.texts_to(chat) for chat in CHATS}
    reason = str(state.message).split("Telegram did not take it: ", 1)[1]
    assert reason == "; ".join(f"chart to chat {chat}: Forbidden: bot was blocked by the user" for chat in CHATS)
    for chat in CHATS:
        summary, alert = texts[chat]  # the summary's text went through; then the alert
        assert summary.startswith(f"tradeforge daily summary {day} (UTC)")
        first = alert.splitlines()[0]
        assert first.startswith("Flow daily-summary failed (run ") and first.endswith(reason)
        assert f"the summary of {day} is stored in" in first
    assert _recorded(env_own_state)["daily-summary"].reason.endswith(reason)


def _fresh_eth_hours(now: pd.Timestamp) -> pd.DataFrame:
    """Real ETH/USDT 1h bars, moved in time so that the last one is the hour still open at ``now``."""
    bars = pd.read_parquet(shared_file("binance_ETH-USDT_1h.parquet")).iloc[-300:].reset_index(drop=True)
    shift = now.floor("h") - bars["timestamp"].iloc[-1]
    return bars.assign(timestamp=bars["timestamp"] + shift)


def test_ingest_fails_when_a_stale_series_gets_no_new_bar_and_not_for_an_up_to_date_one(
        harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.ingest import ingest_flow

    old_btc = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-300:].reset_index(drop=True)
    with FakeBinance() as venue:
        venue.serve_bars("BTC/USDT", "1h", old_btc)  # the venue's BTC/USDT bars stopped months ago
        venue.serve_bars("ETH/USDT", "1h", _fresh_eth_hours(pd.Timestamp.now(tz="UTC")))
        root = flow_helpers._new_workspace(tmp_path / "workspace")
        settings = flow_helpers._point_at(monkeypatch, root, ccxt_rest_url=venue.url,
                                          universe="binance:BTC/USDT:1h,binance:ETH/USDT:1h")
        first = ingest_flow()
        assert first[0]["rows_written"] == 300 and first[1]["rows_written"] >= 299  # the open hour is not stored
        assert [r["missing"] for r in first] == [None, None]
        state = ingest_flow(return_state=True)
    assert state.is_failed()
    message = str(state.message)
    last = old_btc["timestamp"].iloc[-1].isoformat()
    assert ("1 of 2 series got no new bar though they should have: binance:BTC/USDT:1h: the venue sent no new bar "
            f"(0 fetched, 0 quarantined) and the last stored bar opened at {last}") in message
    assert "more than 3 1h bars behind (TRADEFORGE_STALE_AFTER_BARS)" in message
    assert "ETH/USDT" not in message  # up to date: no new bar had closed since the first run
    assert len(read_bars(settings, "ETH/USDT", "1h", venue="binance")) >= 299  # ingested all the same
    assert not (settings.data_dir / "state").exists()  # no state store yet: the failure is not recorded, nothing made


def test_a_backup_the_drill_does_not_verify_fails_the_run(env_own_state: Settings) -> None:
    from flows.backup import backup_flow

    database = env_own_state.state_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(database)) as conn, conn:  # an order lost: its fills no longer have it
        fill_id, order = conn.execute("SELECT fill_id, client_order_id FROM fills ORDER BY id LIMIT 1").fetchone()
        conn.execute("DELETE FROM orders WHERE client_order_id = ?", (order,))
    state = backup_flow(drill=True, return_state=True)
    assert state.is_failed()
    [backup] = list_backups(env_own_state.backup_dir)
    assert backup.checksum_path.is_file()  # written, with its checksum; not verified
    message = str(state.message)
    assert f"backup {backup.path} is written but not verified by the restore drill: " in message
    assert " fill(s) without their order: " in message and fill_id in message
    recorded = _recorded(env_own_state)["backup-state"]
    assert recorded.failures == 1 and "is written but not verified" in recorded.reason
    unchecked = backup_flow(drill=False)  # the drill turned off: the backup is made, and not verified
    assert Path(unchecked["path"]).is_file() and "drill" not in unchecked
