"""``backup-state`` and ``restore-drill``.

``backup-state`` takes an online backup of the trading state while the runtime keeps writing (SQLite backup
API, or ``pg_dump`` for PostgreSQL), gzipped with a SHA-256 checksum file, then rotates the backups (the newest
``backup_keep``, none older than ``backup_max_age_days``), and verifies the new backup: its checksum and that it
reads to its end, and with the parameter ``drill`` the restore drill too (off on the 5-minute schedule: the drill
restores the whole state into a scratch database; the weekly ``restore-drill`` does that). A backup that is not
verified fails the run, naming every problem found.
``restore-drill`` restores the newest backup into a scratch database and checks it (checksum, integrity, state
invariants); it fails loudly when anything is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.common import IO_RETRIES, NO_CACHING, JobNotDone, clock, report_failure, say, settings
from pipeline.state.backup import BackupError, DrillFailed, backup_state, restore_drill, verify_checksum
from pipeline.state.backup_checks import unreadable


@task(name="backup-state", retries=IO_RETRIES, retry_delay_seconds=5, timeout_seconds=1800, cache_policy=NO_CACHING)
def backup_task() -> dict[str, Any]:
    return backup_state(settings(), clock()).to_json()


@task(name="verify-backup", timeout_seconds=1800, cache_policy=NO_CACHING)
def verify_task(backup: str) -> None:
    """Raise ``BackupError`` unless the backup matches its checksum and reads to its end."""
    path = Path(backup)
    verify_checksum(path)
    problem = unreadable(path)
    if problem:
        raise BackupError(problem)


@task(name="restore-drill", timeout_seconds=3600, cache_policy=NO_CACHING)
def drill_task(backup: str | None) -> dict[str, Any]:
    return restore_drill(settings(), Path(backup) if backup else None).to_json()


@flow(name="backup-state", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def backup_flow(drill: bool = False) -> dict[str, Any]:
    """Back up the state, rotate, and verify the new backup (checksum, readable to its end; with ``drill``, the
    restore drill too)."""
    report = backup_task()
    say(f"backup {report['path']} ({report['bytes']} bytes); removed {len(report['removed'])} old backup(s)")
    try:
        verify_task(report["path"])
        if not drill:
            say(f"backup {Path(report['path']).name} verified: checksum and gzip stream (the drill is off)")
            return report
        report["drill"] = drill_task(report["path"])
    except BackupError as exc:
        if isinstance(exc, DrillFailed):
            raise JobNotDone(f"backup {report['path']} is written but not verified by the restore drill: "
                             f"{'; '.join(exc.problems)}") from exc
        raise JobNotDone(f"backup {report['path']} is written but not verified: {exc}") from exc
    say(f"backup {Path(report['path']).name} verified: {report['drill']['rows']}")
    return report


@flow(name="restore-drill", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def restore_drill_flow(backup: str | None = None) -> dict[str, Any]:
    """Restore the newest backup (or ``backup``) into a scratch database and verify it."""
    report = drill_task(backup)
    say(f"restore drill passed for {report['backup']}: {report['rows']}")
    return report
