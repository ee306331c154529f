"""State backups on real runtime state: online backup while the runtime writes, the restore drill (which must
fail on a damaged backup and on broken invariants), rotation, and PostgreSQL through pg_dump."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from pipeline.backtest.parity import single_strategy_portfolio
from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.domain import Timeframe
from pipeline.settings import Settings
from pipeline.state import SCHEMA_VERSION, StateStore
from pipeline.state.backup import (
    CHECKSUM_SUFFIX,
    BackupError,
    DrillFailed,
    backup_state,
    check_state,
    list_backups,
    restore_drill,
    rotate,
)
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node, RunSummary
from tests.conftest import NOW, shared_file
from tests.pipeline.state.stores import PG_URL, postgres_error

H1 = Timeframe.parse("1h")
FEED = "binance:BTC/USDT:1h"


def btc_hours(rows: int = 2000) -> pd.DataFrame:
    """The last ``rows`` real BTC/USDT 1h bars."""
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-rows:].reset_index(drop=True)


def sma_portfolio(fast: int = 10, slow: int = 30) -> PortfolioConfig:
    return single_strategy_portfolio("sma_cross", "BTC/USDT", "1h", {"fast": str(fast), "slow": str(slow)},
                                     {"max_position": 1.0, "max_consecutive_losses": None, "daily_loss": None,
                                      "max_drawdown": None})


def paper_run(url: str, bars: pd.DataFrame, config: PortfolioConfig | None = None, batch: int = 8192,
              stop_after: threading.Event | None = None) -> RunSummary:
    """Replay ``bars`` through the paper runtime into the state at ``url`` (fresh)."""
    store = StateStore(url)
    try:
        node = Node(store, config or sma_portfolio(), ReplayFeed({FEED: bars}, H1, batch_size=batch),
                    {"main:BTC/USDT": FEED}, PaperBroker())
        node.start(fresh=True)
        return node.run()
    finally:
        store.close()


def settings_at(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", _env_file=None, **extra)  # type: ignore[call-arg]


@pytest.fixture
def traded(tmp_path: Path) -> Settings:
    settings = settings_at(tmp_path)
    summary = paper_run(settings.state_url, btc_hours())
    assert summary.fills > 10
    return settings


def test_online_backup_while_the_runtime_writes_restores_and_passes_the_drill(tmp_path: Path) -> None:
    settings = settings_at(tmp_path, backup_keep=10_000)
    bars = btc_hours(3000)
    paper_run(settings.state_url, bars.iloc[:300])  # the runtime has state; now it keeps writing, 24 bars a commit
    store = StateStore(settings.state_url)
    node = Node(store, sma_portfolio(), ReplayFeed({FEED: bars}, H1, batch_size=24), {"main:BTC/USDT": FEED},
                PaperBroker())
    node.start(fresh=False)
    writer = threading.Thread(target=node.run)
    writer.start()
    clock = FixedClock(NOW)
    reports = []
    try:
        while writer.is_alive() or len(reports) < 2:
            clock.set(clock.now() + pd.Timedelta(seconds=1))
            reports.append(backup_state(settings, clock))
    finally:
        writer.join()
        store.close()
    assert len(reports) >= 2
    fills_seen = []
    for report in reports:
        drill = restore_drill(settings, report.backup.path)
        assert drill.ok and drill.integrity == "ok" and drill.schema_version == SCHEMA_VERSION
        fills_seen.append(drill.rows["fills"])
    assert fills_seen == sorted(fills_seen)  # each snapshot is consistent and the state only grew
    final = backup_state(settings, clock)
    with StateStore.read_only(settings.state_url) as live:
        assert restore_drill(settings).rows["fills"] == len(live.fills()) > fills_seen[0]
    assert final.backup.checksum_path.read_text().split()[0] == final.sha256


def test_a_damaged_backup_fails_the_drill_loudly(traded: Settings) -> None:
    report = backup_state(traded, FixedClock(NOW))
    payload = bytearray(report.backup.path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    report.backup.path.write_bytes(bytes(payload))
    with pytest.raises(DrillFailed, match="does not match its checksum"):
        restore_drill(traded)
    report.backup.checksum_path.unlink()
    with pytest.raises(DrillFailed, match="no checksum file"):
        restore_drill(traded)


def test_broken_invariants_fail_the_drill(traded: Settings, tmp_path: Path) -> None:
    database = Path(traded.state_url.removeprefix("sqlite:///"))
    with sqlite3.connect(database) as conn:
        orphan = conn.execute("SELECT client_order_id FROM orders ORDER BY created_at LIMIT 1").fetchone()[0]
        conn.execute("DELETE FROM orders WHERE client_order_id = ?", (orphan,))
        conn.execute("UPDATE positions SET qty = '123.5'")
    backup_state(traded, FixedClock(NOW))
    with pytest.raises(DrillFailed) as failure:
        restore_drill(traded)
    problems = " | ".join(failure.value.problems)
    assert "without their order" in problems and f"paper:{orphan}" in problems
    assert "position 123.5 differs from the sum of its fills" in problems


def test_the_store_of_a_clean_run_satisfies_every_invariant(traded: Settings) -> None:
    with StateStore.read_only(traded.state_url) as store:
        assert check_state(store) == []
        assert len(store.fills()) == len(store.orders()) > 10


def test_rotation_keeps_exactly_the_newest_n_and_nothing_too_old(traded: Settings) -> None:
    clock = FixedClock(NOW)
    made = []
    for hour in range(6):
        clock.set(NOW + pd.Timedelta(hours=hour))
        made.append(backup_state(traded, clock).backup.path)
    assert [b.path for b in list_backups(traded.backup_dir)] == made[::-1]  # keep=100: nothing removed yet
    removed = rotate(traded.backup_dir, 4, 30, clock.now())
    assert sorted(removed) == sorted(made[:2])
    kept = list_backups(traded.backup_dir)
    assert [b.path for b in kept] == made[:1:-1]
    assert all(b.checksum_path.exists() for b in kept)
    assert not any(p.with_name(p.name + CHECKSUM_SUFFIX).exists() for p in made[:2])
    removed = rotate(traded.backup_dir, 4, 2.5 / 24, clock.now())  # only backups of the last 2.5 hours stay
    assert [b.path for b in list_backups(traded.backup_dir)] == [made[5], made[4], made[3]]
    with pytest.raises(ValueError, match="at least 1"):
        rotate(traded.backup_dir, 0, 30, clock.now())


def test_backup_settings_drive_rotation(tmp_path: Path) -> None:
    settings = settings_at(tmp_path, backup_keep=2)
    paper_run(settings.state_url, btc_hours(400))
    clock = FixedClock(NOW)
    for minute in range(4):
        clock.set(NOW + pd.Timedelta(minutes=5 * minute))
        backup_state(settings, clock)
    assert len(list_backups(settings.backup_dir)) == 2
    assert len(list(settings.backup_dir.glob("*" + CHECKSUM_SUFFIX))) == 2


def test_no_state_is_a_clear_error(tmp_path: Path) -> None:
    settings = settings_at(tmp_path)
    with pytest.raises(BackupError, match=r"no state database at .*nothing to back up"):
        backup_state(settings, FixedClock(NOW))
    with pytest.raises(DrillFailed, match="no backups"):
        restore_drill(settings)


@pytest.fixture
def pg_settings(tmp_path: Path) -> Iterator[Settings]:
    error = postgres_error()
    if error is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    if shutil.which("pg_dump") is None or shutil.which("psql") is None:
        pytest.skip("pg_dump/psql are not installed: PostgreSQL backups cannot be tested here")
    schema = f"tf_backup_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    options = f"-c search_path={schema}".replace(" ", "%20").replace("=", "%3D")
    try:
        yield settings_at(tmp_path, database_url=f"{PG_URL}?options={options}")
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_postgres_state_is_dumped_and_the_drill_restores_it_into_a_scratch_database(pg_settings: Settings) -> None:
    summary = paper_run(pg_settings.state_url, btc_hours(800))
    report = backup_state(pg_settings, FixedClock(NOW))
    assert report.backup.kind == "pgsql" and report.backup.path.name.endswith(".pgsql.gz")
    with gzip.open(report.backup.path, "rt") as dump:
        text = dump.read()
    assert "CREATE TABLE" in text and "fills" in text
    drill = restore_drill(pg_settings)
    assert drill.ok and drill.rows["fills"] == summary.fills > 0
    with psycopg.connect(PG_URL) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'tradeforge_drill_%'").fetchone()
    assert left is not None and left[0] == 0  # the scratch database is dropped


def test_a_backup_cut_short_is_found_unreadable_and_a_whole_one_is_not(tmp_path: Path) -> None:
    from pipeline.state.backup_checks import unreadable

    whole = tmp_path / "state-whole.sqlite.gz"
    with gzip.open(whole, "wb") as stream:
        stream.write(uuid.uuid4().bytes * 100_000)
    assert unreadable(whole) is None
    cut = tmp_path / "state-cut.sqlite.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a checksum written after would match it
    problem = unreadable(cut)
    assert problem is not None and "state-cut.sqlite.gz does not read to its end" in problem
