"""Backups of the trading state, their rotation, and the restore drill that proves they can be used.

**Backup** (``backup_state``), into ``settings.backup_dir`` (``<data_dir>/backups``); a SQLite state URL naming a
file that is not tradeforge's state is refused first (``ForeignStoreError``), nothing written or rotated:

* SQLite: an online copy through SQLite's backup API (``sqlite3.Connection.backup``) in one step, which reads
  one consistent snapshot while the runtime keeps writing (WAL readers never block the writer), gzipped to
  ``state-<UTC time>.sqlite.gz``;
* PostgreSQL: ``pg_dump`` (plain SQL, no owners or privileges; only the schema of the URL's ``search_path``
  when it names one), gzipped to ``state-<UTC time>.pgsql.gz``. The password, if any, goes to ``pg_dump``
  through the environment, never on its command line.

Every backup file is written under a temporary name and renamed once complete, followed by its checksum file
``<backup>.sha256`` (``sha256sum`` format, so ``sha256sum -c`` verifies it too). Backups are written only into a
folder of their own: absent, empty, or holding nothing but backups and their checksum files (hidden leftovers of
interrupted backups aside); a folder holding anything else is refused with :class:`BackupError`, untouched.

**Rotation** (``rotate``): the newest ``backup_keep`` backups are kept; any older than
``backup_max_age_days`` are removed as well, with their checksum files.

**Restore drill** (``restore_drill``): the newest backup is verified against its checksum, restored into a
scratch database (a temporary SQLite file, or a temporary PostgreSQL database that is dropped afterwards),
``PRAGMA integrity_check`` must answer ``ok`` (SQLite), and the state invariants must hold
(``check_state``): the schema version is the one this tradeforge reads, every fill has its order, every
position equals the signed sum of its sleeve's fills in that symbol, and every sleeve with fills, positions or
trades has a ledger (the invariants live in ``pipeline.state.backup_checks``). Any failure raises
:class:`DrillFailed` listing every problem found.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from sqlalchemy.engine import URL, make_url

from pipeline.clock import Clock
from pipeline.settings import Settings
from pipeline.state.backup_checks import DrillReport, check_state, inspect_restored
from pipeline.state.schema import inspect_state

log = logging.getLogger(__name__)
__all__ = ["CHECKSUM_SUFFIX", "Backup", "BackupError", "BackupReport", "DrillFailed", "DrillReport", "backup_state",
           "check_state", "list_backups", "restore_drill", "rotate", "verify_checksum"]

PREFIX = "state-"
SQLITE_SUFFIX = ".sqlite.gz"
POSTGRES_SUFFIX = ".pgsql.gz"
CHECKSUM_SUFFIX = ".sha256"
_NAME = re.compile(r"^state-(\d{8}T\d{12})Z\.(sqlite|pgsql)\.gz$")
_CHUNK = 1 << 20


class BackupError(RuntimeError):
    """A backup could not be made or read; the message says why."""


class DrillFailed(BackupError):
    """The restore drill found problems; ``problems`` lists every one."""

    def __init__(self, backup: Path, problems: list[str]) -> None:
        self.backup = backup
        self.problems = problems
        super().__init__(f"restore drill of {backup.name} FAILED: " + "; ".join(problems))


@dataclass(frozen=True)
class Backup:
    path: Path
    kind: str
    """``sqlite`` or ``pgsql``."""
    created: pd.Timestamp

    @property
    def checksum_path(self) -> Path:
        return self.path.with_name(self.path.name + CHECKSUM_SUFFIX)


@dataclass(frozen=True)
class BackupReport:
    backup: Backup
    sha256: str
    bytes: int
    seconds: float
    removed: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.backup.path), "kind": self.backup.kind, "created": self.backup.created.isoformat(),
                "sha256": self.sha256, "bytes": self.bytes, "seconds": self.seconds,
                "removed": [p.name for p in self.removed]}


# ------------------------------------------------------------------------------------------------- backup


def backup_state(settings: Settings, clock: Clock) -> BackupReport:
    """Back up the configured state database, then rotate the backups (module documentation)."""
    started = time.perf_counter()
    now = clock.now()
    url = make_url(settings.state_url)
    folder = settings.backup_dir
    _claim_folder(folder)
    backend = url.get_backend_name()
    if backend == "sqlite" and (url.database or "") not in ("", ":memory:"):
        inspect_state(settings.state_url)  # another application's database is refused, not backed up
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "sqlite":
        backup = _backup_sqlite(_sqlite_path(url), folder, now)
    elif backend == "postgresql":
        backup = _backup_postgres(url, folder, now)
    else:
        raise BackupError(f"state database {url.render_as_string(hide_password=True)}: backups support SQLite "
                          "and PostgreSQL only")
    digest = _write_checksum(backup.path)
    removed = rotate(folder, settings.backup_keep, settings.backup_max_age_days, now)
    report = BackupReport(backup, digest, backup.path.stat().st_size, time.perf_counter() - started, removed)
    log.info("state backup %s written (%d bytes, sha256 %s…); %d old backup(s) removed",
             backup.path.name, report.bytes, digest[:12], len(removed))
    return report


def _claim_folder(folder: Path) -> None:
    """Refuse a backup folder that is not the backups' own (module documentation)."""
    if folder.exists() and not folder.is_dir():
        raise BackupError(f"the backup folder {folder} is a file, not a folder: no backup was written")
    foreign = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")
                     and not _NAME.match(p.name.removesuffix(CHECKSUM_SUFFIX))) if folder.is_dir() else []
    if foreign:
        raise BackupError(f"the backup folder {folder} holds files that are not tradeforge backups "
                          f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}): no backup was written "
                          "and nothing was rotated; move them out, or set TRADEFORGE_DATA_DIR to a folder of its own")


def _name(now: pd.Timestamp, kind: str) -> str:
    return f"{PREFIX}{now.tz_convert('UTC').strftime('%Y%m%dT%H%M%S%f')}Z.{kind}.gz"


def _sqlite_path(url: URL) -> Path:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise BackupError(f"state database {url}: only a SQLite database file can be backed up")
    return Path(database)


def _backup_sqlite(database: Path, folder: Path, now: pd.Timestamp) -> Backup:
    if not database.is_file():
        raise BackupError(f"no state database at {database}: nothing to back up (has the runtime run?)")
    target = folder / _name(now, "sqlite")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".backup-") as scratch:
        copy = Path(scratch) / "state.db"
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        destination = sqlite3.connect(copy)
        try:
            source.backup(destination, pages=-1)  # one step: one consistent snapshot, the writer keeps going
        finally:
            destination.close()
            source.close()
        _gzip_file(copy, target)
    return Backup(target, "sqlite", now)


def _gzip_file(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with source.open("rb") as raw, gzip.open(partial, "wb", compresslevel=6) as packed:
            shutil.copyfileobj(raw, packed, _CHUNK)
        _fsync(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password (query values percent-encoded, as libpq reads them), and the
    environment that carries the password."""
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    user = quote(url.username, safe="") + "@" if url.username else ""
    host = url.host or ""
    port = f":{url.port}" if url.port else ""
    query = []
    for key, value in url.query.items():
        for item in (value,) if isinstance(value, str) else value:
            query.append(f"{quote(key, safe='')}={quote(item, safe='')}")
    suffix = "?" + "&".join(query) if query else ""
    return f"postgresql://{user}{host}{port}/{quote(url.database or '', safe='')}{suffix}", env


def _search_path_schema(url: URL) -> str | None:
    options = url.query.get("options")
    text = options if isinstance(options, str) else " ".join(options or ())
    found = re.search(r"search_path\s*=\s*([A-Za-z0-9_\"]+)", text)
    return found.group(1).strip('"') if found else None


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} was not found on PATH: install the PostgreSQL client tools "
                          "(e.g. apt install postgresql-client) to back up or restore PostgreSQL state")
    return found


def _backup_postgres(url: URL, folder: Path, now: pd.Timestamp) -> Backup:
    pg_dump = _tool("pg_dump")
    uri, env = _libpq(url)
    schema = _search_path_schema(url)
    args = [pg_dump, "--format=plain", "--no-owner", "--no-privileges", f"--dbname={uri}"]
    if schema:
        args.append(f"--schema={schema}")
    target = folder / _name(now, "pgsql")
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with gzip.open(partial, "wb", compresslevel=6) as packed:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            assert process.stdout is not None
            shutil.copyfileobj(process.stdout, packed, _CHUNK)
            _, error = process.communicate()
        if process.returncode != 0:
            raise BackupError(f"pg_dump of {url.render_as_string(hide_password=True)} failed "
                              f"(exit {process.returncode}): {error.decode(errors='replace').strip()[:500]}")
        _fsync(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return Backup(target, "pgsql", now)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_checksum(path: Path) -> str:
    digest = _sha256(path)
    target = path.with_name(path.name + CHECKSUM_SUFFIX)
    partial = target.with_name(f".{target.name}.part")
    partial.write_text(f"{digest}  {path.name}\n")
    partial.replace(target)
    return digest


# ----------------------------------------------------------------------------------------------- rotation


def _created(stamp: str) -> pd.Timestamp:
    """The creation time a backup's name carries (``state-<UTC time>...``)."""
    return pd.Timestamp(pd.to_datetime(stamp, format="%Y%m%dT%H%M%S%f"), tz="UTC")


def list_backups(folder: Path) -> list[Backup]:
    """The backups in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append(Backup(path, match.group(2), _created(match.group(1))))
    return sorted(found, key=lambda b: (b.created, b.path.name), reverse=True)


def rotate(folder: Path, keep: int, max_age_days: float, now: pd.Timestamp) -> list[Path]:
    """Remove every backup beyond the newest ``keep`` and every one older than ``max_age_days``; returns the
    removed backup files (their checksum files go with them)."""
    if keep < 1:
        raise ValueError(f"backup_keep must be at least 1, got {keep}")
    oldest = now - pd.Timedelta(days=max_age_days)
    removed = []
    for index, backup in enumerate(list_backups(folder)):
        if index >= keep or backup.created < oldest:
            backup.path.unlink(missing_ok=True)
            backup.checksum_path.unlink(missing_ok=True)
            removed.append(backup.path)
    return removed


# ------------------------------------------------------------------------------------------------- drill


def verify_checksum(path: Path) -> None:
    """Raise ``BackupError`` unless ``path`` matches its ``.sha256`` file."""
    checksum = path.with_name(path.name + CHECKSUM_SUFFIX)
    if not checksum.is_file():
        raise BackupError(f"backup {path.name} has no checksum file {checksum.name}")
    expected = checksum.read_text().split()[0] if checksum.read_text().strip() else ""
    actual = _sha256(path)
    if actual != expected:
        raise BackupError(f"backup {path.name} does not match its checksum (sha256 {actual[:16]}…, "
                          f"expected {expected[:16]}…): the file is damaged")


def restore_drill(settings: Settings, backup: Path | None = None) -> DrillReport:
    """Restore the newest backup (or ``backup``) into a scratch database and check it (module documentation).

    Raises :class:`DrillFailed` with every problem found; returns the report when the backup is sound.
    """
    if backup is None:
        backups = list_backups(settings.backup_dir)
        if not backups:
            raise DrillFailed(settings.backup_dir, [f"no backups in {settings.backup_dir}"])
        chosen = backups[0]
    else:
        match = _NAME.match(backup.name)
        if match is None:
            raise BackupError(f"{backup} is not a tradeforge state backup (state-<time>.sqlite.gz / .pgsql.gz)")
        chosen = Backup(backup, match.group(2), _created(match.group(1)))
    try:
        verify_checksum(chosen.path)
    except BackupError as exc:
        raise DrillFailed(chosen.path, [str(exc)]) from exc
    if chosen.kind == "sqlite":
        report = _drill_sqlite(chosen.path)
    else:
        report = _drill_postgres(chosen.path, make_url(settings.state_url))
    if not report.ok:
        raise DrillFailed(chosen.path, report.problems)
    log.info("restore drill of %s passed: %s", chosen.path.name,
             ", ".join(f"{table} {rows}" for table, rows in report.rows.items()))
    return report


def _drill_sqlite(path: Path) -> DrillReport:
    with tempfile.TemporaryDirectory(prefix="tradeforge-drill-") as scratch:
        database = Path(scratch) / "restored.db"
        try:
            with gzip.open(path, "rb") as packed, database.open("wb") as raw:
                shutil.copyfileobj(packed, raw, _CHUNK)
        except (OSError, EOFError) as exc:
            return DrillReport(path, True, "unreadable", None, {}, [f"cannot decompress {path.name}: {exc}"])
        try:
            with sqlite3.connect(database) as conn:
                integrity = "; ".join(str(row[0]) for row in conn.execute("PRAGMA integrity_check"))
        except sqlite3.DatabaseError as exc:
            return DrillReport(path, True, f"not a database: {exc}", None, {},
                               [f"{path.name} does not hold a SQLite database: {exc}"])
        problems = [] if integrity == "ok" else [f"PRAGMA integrity_check: {integrity}"]
        version, rows, found = inspect_restored(f"sqlite:///{database.as_posix()}")
        return DrillReport(path, True, integrity, version, rows, problems + found)


def _drill_postgres(path: Path, url: URL) -> DrillReport:
    psql = _tool("psql")
    import psycopg
    from psycopg.conninfo import make_conninfo

    scratch = f"tradeforge_drill_{uuid.uuid4().hex[:12]}"
    admin_uri, env = _libpq(url.set(query={}))
    secret = {"password": str(url.password)} if url.password is not None else {}
    admin = make_conninfo(admin_uri, **secret)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
    try:
        target = url.set(database=scratch)
        uri, env = _libpq(target.set(query={}))
        process = subprocess.Popen([psql, "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", f"--dbname={uri}"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert process.stdin is not None and process.stderr is not None
        with gzip.open(path, "rb") as packed:
            try:
                shutil.copyfileobj(packed, process.stdin, _CHUNK)
            except BrokenPipeError:
                pass  # psql stopped at the first error: its message follows
            finally:
                process.stdin.close()
        error = process.stderr.read()
        if process.wait() != 0:
            problem = error.decode(errors="replace").strip()[:500]
            return DrillReport(path, True, "restore failed", None, {},
                               [f"psql could not restore {path.name}: {problem}"])
        version, rows, found = inspect_restored(target.render_as_string(hide_password=False))
        return DrillReport(path, True, "ok", version, rows, found)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
