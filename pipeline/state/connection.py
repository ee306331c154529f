"""How the store connects: the database URL (SQLite file, in-memory or read-only URI; ``postgresql://`` through
psycopg 3) and the rules every connection follows.

SQLite runs in WAL mode with NORMAL sync, a 5 s busy timeout and foreign keys on; a write transaction starts
with ``BEGIN IMMEDIATE``, so writers queue instead of failing half-way. PostgreSQL write transactions take a
transaction-level advisory lock per schema. Both rules hold for every transaction begun through the engine
that :func:`writer` returns: step writes, session commits and schema migrations alike.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from pipeline.retry import RetryPolicy
from pipeline.state.errors import StateError

ADVISORY_LOCK_CLASS: Final = 0x7466  # "tf": the first key of the per-schema writer lock on PostgreSQL
WRITE_OPTION: Final = "tradeforge_write"
"""The execution option that marks a connection's transactions as writes (see :func:`writer`)."""


def sqlite_file(url: str | URL) -> Path | None:
    """The file behind a SQLite URL (a path or a ``file:`` URI), as an absolute path; None for an in-memory
    database or another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None
        database = unquote(urlsplit(database).path)
    if database in ("", ":memory:"):
        return None
    return Path(database).resolve()


def engine_url(url: str, read_only: bool) -> URL:
    """The SQLAlchemy URL to connect to ``url``: psycopg 3 for PostgreSQL; for SQLite an absolute file path
    (its folder created), or a read-only ``file:`` URI of an existing file when ``read_only``."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the installed driver
    if parsed.get_backend_name() != "sqlite":
        return parsed
    database = parsed.database or ""
    if database in ("", ":memory:"):
        if read_only:
            raise StateError("a read-only state store needs a database file, not an in-memory SQLite database")
        return parsed
    if database.startswith("file:"):
        query = dict(parsed.query)
        if read_only:
            query.update(mode="ro", uri="true")
        return parsed.set(query=query)
    path = Path(database).resolve()
    if read_only:
        if not path.is_file():
            raise StateError(f"no state database at {path}: a read-only store opens existing state only")
        return parsed.set(database=path.as_uri(), query={**parsed.query, "mode": "ro", "uri": "true"})
    path.parent.mkdir(parents=True, exist_ok=True)
    return parsed.set(database=str(path))


def open_engine(url: str, read_only: bool) -> Engine:
    """An engine on ``url`` whose connections follow the rules above (read-only ones at the database too)."""
    engine = sa.create_engine(
        engine_url(url, read_only),
        execution_options={"postgresql_readonly": True} if read_only else {},
    )
    _install_connection_rules(engine, read_only)
    return engine


def writer(engine: Engine) -> Engine:
    """``engine`` with its transactions marked as writes: ``BEGIN IMMEDIATE`` on SQLite, the schema's advisory
    lock on PostgreSQL."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _install_connection_rules(engine: Engine, read_only: bool) -> None:
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # the store issues BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA busy_timeout=5000")
                if not read_only:
                    _use_wal(cursor)
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    elif engine.dialect.name == "postgresql":

        @event.listens_for(engine, "begin")
        def _postgres_begin(conn: Connection) -> None:
            if conn.get_execution_options().get(WRITE_OPTION, False):
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(current_schema()))"),
                             {"k": ADVISORY_LOCK_CLASS})


def _locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


_WAL_SWITCH: Final = RetryPolicy(attempts=None, base_s=0.005, cap_s=0.25, deadline_s=5.0)
"""WAL is a property of the file, set once by the first writer. Another connection's lock makes the switch fail
at once, whatever the busy timeout: it is retried, as the busy timeout would, for up to 5 s."""


def _use_wal(cursor: Any) -> None:
    def switch() -> None:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"database is locked: the journal mode stayed {mode}")

    _WAL_SWITCH.call(switch, what="switching the state database to WAL", transient=_locked,
                     give_up=lambda error, _attempts: error)

