"""Looking inside a SQLite file without changing it, to learn whose database it is before anyone writes to it.

:func:`connect_untouched` opens an existing file read-only in the way that leaves it exactly as it was: no
journal-mode switch, no lock that outlasts the read, and no ``-wal``/``-shm``/``-journal`` file created beside
it. A file in rollback-journal mode is read with ``mode=ro`` (a shared lock while reading, nothing created); a
WAL file whose ``-wal`` is absent holds all its content in the main file and is read with ``immutable=1`` (a
``mode=ro`` reader would create the WAL's side files and leave them behind); a WAL file with a ``-wal`` beside
it is in use and is read with ``mode=ro``, which sees the WAL's content through the side files already there. A
rollback-journal file with a ``-journal`` beside it holds a write its program did not finish (a ``mode=ro``
reader cannot roll it back): both are copied into a scratch folder and the copy is read, rolled back as its
program would on its next open, so the original stays as it is.

A file that does not start with SQLite's header, a folder, or a file SQLite cannot read raises
:class:`NotSqliteFile`, whose ``reason`` says which.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Final

from pipeline.domain import DataError

HEADER: Final = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""
_WAL_FORMAT: Final = 2
"""The file format version (header bytes 18 and 19) of a database in WAL mode."""


class NotSqliteFile(DataError):
    """The file is not a SQLite database that can be read; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_empty(path: Path) -> bool:
    """Whether there is no database at ``path`` yet: no file, or a file of 0 bytes (SQLite reads it as empty)."""
    return not path.exists() or (path.is_file() and path.stat().st_size == 0)


def connect_untouched(path: Path) -> sqlite3.Connection:
    """A read-only connection to the SQLite file at ``path`` that changes nothing (module documentation)."""
    if path.is_dir():
        raise NotSqliteFile(path, "it is a folder, not a database file")
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise NotSqliteFile(path, f"it cannot be read ({exc.strerror or exc})") from exc
    if not header.startswith(HEADER) or len(header) < 100:
        raise NotSqliteFile(path, "it is not a SQLite database (it does not start with SQLite's header)")
    in_use = path.with_name(path.name + "-wal").exists()
    wal = header[18] == _WAL_FORMAT
    journal = path.with_name(path.name + "-journal")
    if not wal and _has_content(journal):
        return _rolled_back_copy(path, journal)
    how = "immutable=1" if wal and not in_use else "mode=ro"
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?{how}", uri=True, timeout=5)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise NotSqliteFile(path, f"it cannot be read as a SQLite database ({exc})") from exc
    return connection


def _rolled_back_copy(path: Path, journal: Path) -> sqlite3.Connection:
    """A connection to a copy of ``path`` with its unfinished write rolled back (the copy's folder is removed
    once the connection holds the file open)."""
    scratch = Path(tempfile.mkdtemp(prefix="tradeforge-look-"))
    try:
        copy = scratch / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(journal, scratch / journal.name)
        connection = sqlite3.connect(copy, timeout=5)
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls the copy back
    except (OSError, sqlite3.Error) as exc:
        raise NotSqliteFile(path, f"it holds an unfinished write (a -journal file beside it) and cannot be read "
                                  f"as a SQLite database ({exc})") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return connection


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def table_names(path: Path) -> frozenset[str]:
    """The tables of the SQLite file at ``path`` (none for a missing or empty file), read without changing it;
    SQLite's own ``sqlite_*`` tables are left out."""
    if is_empty(path):
        return frozenset()
    connection = connect_untouched(path)
    try:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        return frozenset(str(name) for (name,) in rows)
    except sqlite3.Error as exc:
        raise NotSqliteFile(path, f"it cannot be read as a SQLite database ({exc})") from exc
    finally:
        connection.close()
