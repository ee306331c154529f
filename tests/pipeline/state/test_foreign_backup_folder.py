"""Backups are written only into a folder of their own (absent, empty, or holding tradeforge backups) and only of
tradeforge's state. A folder holding anything else, or a state URL naming another application's database, is
refused by name and everything is left as it was (nothing written, nothing rotated away)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

from pipeline.clock import FixedClock
from pipeline.settings import Settings
from pipeline.state import ForeignStoreError, StateStore
from pipeline.state.backup import BackupError, backup_state, list_backups
from tests.conftest import NOW, lake_fingerprint


@pytest.fixture
def with_state(settings: Settings) -> Settings:
    with StateStore(settings.state_url) as store:
        store.set_status("running", "for the backup", mode="paper")
    return settings


def _old_backup(folder: Path, days: int) -> Path:
    stamp = (NOW - pd.Timedelta(days=days)).strftime("%Y%m%dT%H%M%S%f")
    path = folder / f"state-{stamp}Z.sqlite.gz"
    path.write_bytes(b"an old backup")
    path.with_name(path.name + ".sha256").write_text(f"0  {path.name}\n")
    return path


def test_a_backup_folder_holding_other_files_is_refused_untouched(with_state: Settings) -> None:
    folder = with_state.backup_dir
    folder.mkdir(parents=True)
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    (folder / "taxes").mkdir()
    (folder / "taxes" / "2025.pdf").write_bytes(b"%PDF")
    _old_backup(folder, days=400)  # past any max age: a backup run would rotate it away
    before = lake_fingerprint(folder)

    with pytest.raises(BackupError) as refused:
        backup_state(with_state, FixedClock(NOW))

    message = str(refused.value)
    assert str(folder) in message
    assert "holiday.jpg, taxes" in message
    assert "no backup was written" in message
    assert lake_fingerprint(folder) == before  # the old backup kept, nothing added, no leftover
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_a_backup_folder_that_is_a_file_is_refused(with_state: Settings) -> None:
    with_state.backup_dir.parent.mkdir(parents=True, exist_ok=True)
    with_state.backup_dir.write_text("not a folder\n")

    with pytest.raises(BackupError, match="is a file, not a folder"):
        backup_state(with_state, FixedClock(NOW))

    assert with_state.backup_dir.read_text() == "not a folder\n"


def test_backups_go_into_a_folder_of_backups_and_hidden_leftovers(with_state: Settings) -> None:
    folder = with_state.backup_dir
    folder.mkdir(parents=True)
    old = _old_backup(folder, days=400)
    (folder / ".state-20260101T000000000000Z.sqlite.gz.0a1b.part").write_bytes(b"an interrupted backup")
    (folder / ".backup-leftover").mkdir()

    report = backup_state(with_state, FixedClock(NOW))

    assert [b.path for b in list_backups(folder)] == [report.backup.path]
    assert old in report.removed and not old.exists()


def test_a_state_url_naming_another_applications_database_is_not_backed_up(settings: Settings,
                                                                           tmp_path: Path) -> None:
    """A misconfigured state URL must not fill the backup folder with someone else's data and rotate the state's
    own backups away."""
    foreign = tmp_path / "other.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.executescript("CREATE TABLE invoices (id INTEGER PRIMARY KEY); INSERT INTO invoices VALUES (1);")
    misconfigured = Settings(data_dir=settings.data_dir, database_url=f"sqlite:///{foreign.as_posix()}",
                             _env_file=None)  # type: ignore[call-arg]
    misconfigured.backup_dir.mkdir(parents=True)
    old = _old_backup(misconfigured.backup_dir, days=400)
    before = lake_fingerprint(tmp_path)

    with pytest.raises(ForeignStoreError, match="invoices"):
        backup_state(misconfigured, FixedClock(NOW))

    assert old.exists()
    assert lake_fingerprint(tmp_path) == before
