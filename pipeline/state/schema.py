"""The schema's version, kept by Alembic: the migrations in ``migrations/versions`` bring any database to the
current revision, run programmatically on the store's own write connection (no ``alembic.ini``).

Revision ``000N`` is schema version N (:data:`SCHEMA_VERSION` is the current one). Opening a database:

* one that is not tradeforge's is refused with :class:`ForeignStoreError` before anything is written to it: a
  database is tradeforge's when it is empty (no tables at all) or carries the ``schema_version`` table or an
  Alembic revision of ours (``000N``); another application's tables, or a file that is not a SQLite database,
  make it someone else's. A SQLite file is first looked at through a connection that changes nothing
  (:func:`pipeline.sqlite_files.connect_untouched`), before the store's own connections switch it to WAL; the
  check is made again inside the write transaction that creates or upgrades the schema, on both backends;
* an empty one gets the current schema (every revision, in one write transaction) when ``create`` is true, and
  raises :class:`StateError` otherwise;
* one at an older revision, or written by a tradeforge older than these migrations (a ``schema_version`` row
  and no ``alembic_version`` table; it is stamped with the revision of its version first), is upgraded in
  place when opened for writing (``create`` true, not read-only): one transaction, nothing stored lost;
  opened otherwise it raises :class:`SchemaVersionError`. One of the current version without an
  ``alembic_version`` table is only stamped (by any store that may write) and read as it is by a read-only one;
* one at a revision this tradeforge does not know, or with a newer version number, raises
  :class:`SchemaVersionError` without being touched.

Every migration also writes its version number to the ``schema_version`` row, in the same transaction as
its tables, so that a tradeforge older than these migrations still refuses a newer database. The row travels
with the tables (a dump from before the migrations restored over a newer schema leaves that schema's
``alembic_version`` behind), so where the two disagree the row decides: a database with a lower row is stamped
with the row's revision and upgraded; one with a higher row is refused.

A new schema version is a new revision ``000N`` in ``migrations/versions`` (``alembic.command.revision`` with
:func:`alembic_config` on a connection to a database at the current revision, ``autogenerate=True``, drafts it
from the tables' metadata) and :data:`SCHEMA_VERSION` set to N; the store's tests check that the migrated
tables match the metadata on both backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from pipeline.sqlite_files import NotSqliteFile, connect_untouched, is_empty
from pipeline.state.connection import engine_url, sqlite_file
from pipeline.state.errors import ForeignStoreError, SchemaVersionError, StateError
from pipeline.state.tables import SchemaVersion, table_of

SCHEMA_VERSION: Final = 4
"""The version of the tables in :mod:`pipeline.state.tables` (its Alembic revision is ``0004``). Version 1 had
no runtime events; version 2 added them; version 3 gave breaker events their ``action`` (a trip or a release;
stored events are trips) and made it part of their natural key (sleeve, time, rule, action); version 4 gave
orders their ``kind`` (market, limit or stop; stored orders are market orders), ``stop_price`` and
``expires_at``."""

HEAD: Final = f"{SCHEMA_VERSION:04d}"
"""The current revision."""
MIGRATIONS: Final = Path(__file__).with_name("migrations")
_OUR_REVISION: Final = re.compile(r"\d{4}")
"""The form of our Alembic revisions (``000N``); another application's Alembic revisions look otherwise."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the state's migrations, running on ``connection`` (inside its transaction)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache
def _revisions() -> dict[str, int]:
    """Every known revision, with its schema version."""
    script = ScriptDirectory.from_config(alembic_config())
    revisions = {r.revision: int(r.revision) for r in script.walk_revisions()}
    if script.get_current_head() != HEAD:
        raise StateError(f"the newest state migration is {script.get_current_head()}, not revision {HEAD} of "
                         f"SCHEMA_VERSION {SCHEMA_VERSION}")
    return revisions


@dataclass(frozen=True)
class _Stored:
    tables: frozenset[str]  # every table of the database (of the connection's schema on PostgreSQL)
    revision: str | None  # the Alembic revision, when the database has an alembic_version table
    number: int | None  # the schema_version row's version, when there is one


_EMPTY: Final = _Stored(frozenset(), None, None)


def _stored(conn: Connection) -> _Stored:
    tables = frozenset(sa.inspect(conn).get_table_names())
    revision = MigrationContext.configure(conn).get_current_revision() if "alembic_version" in tables else None
    number = None
    if SchemaVersion.__tablename__ in tables:
        version = table_of(SchemaVersion).c.version
        number = conn.execute(sa.select(version).where(table_of(SchemaVersion).c.id == 1)).scalar_one_or_none()
    return _Stored(tables, revision, number)


def _claim(stored: _Stored, url: str) -> None:
    """Refuse a database that holds tables but neither our version table nor an Alembic revision of ours."""
    if not stored.tables or SchemaVersion.__tablename__ in stored.tables:
        return
    if stored.revision is not None and _OUR_REVISION.fullmatch(stored.revision):
        return
    names = sorted(stored.tables)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise ForeignStoreError(f"cannot use {url} as the state database: it holds {len(names)} table(s) of another "
                            f"application ({shown}) and not tradeforge's schema; it was left untouched (use an "
                            "empty database, or tradeforge's own)")


def _look(path: Path, url: str) -> _Stored:
    """What the SQLite file at ``path`` holds, read through a connection that changes nothing."""
    if is_empty(path):
        return _EMPTY
    try:
        raw = connect_untouched(path)
    except NotSqliteFile as exc:
        raise ForeignStoreError(f"cannot use {url} as the state database: {exc.reason}; it was left untouched "
                                "(use an empty database, or tradeforge's own)") from exc
    peek = sa.create_engine("sqlite://", creator=lambda: raw, poolclass=NullPool)
    try:
        with peek.connect() as conn:
            return _stored(conn)
    except sa.exc.DBAPIError as exc:
        raise ForeignStoreError(f"cannot use {url} as the state database: it cannot be read as a SQLite database "
                                f"({exc.orig}); it was left untouched") from exc
    finally:
        peek.dispose()
        raw.close()


def _first_look(engine: Engine, url: str) -> _Stored:
    path = sqlite_file(engine.url)
    if path is not None:
        return _look(path, url)
    with engine.connect() as conn:  # PostgreSQL, or an in-memory SQLite database: reading changes nothing
        return _stored(conn)


def _start(stored: _Stored, url: str) -> str | None:
    """The revision whose tables the database holds (None: an empty database); raises for another application's
    database and for a newer or unknown one. The version row travels with the tables, so where it disagrees with
    the Alembic revision it decides."""
    _claim(stored, url)
    known = _revisions()
    if stored.revision is not None and stored.revision not in known:
        also = "" if stored.number is None else f" (schema version {stored.number})"
        raise SchemaVersionError(f"the state database at {url} has schema revision {stored.revision!r}{also}, "
                                 f"unknown to this tradeforge (it reads version {SCHEMA_VERSION}); "
                                 "upgrade tradeforge to open it")
    number = stored.number if stored.number is not None or stored.revision is None else known[stored.revision]
    if number is None:
        return None
    revision = f"{number:04d}"
    if revision not in known:
        newer = number > SCHEMA_VERSION
        raise SchemaVersionError(f"the state database at {url} has schema version {number}, this tradeforge reads "
                                 f"version {SCHEMA_VERSION}"
                                 + ("; upgrade tradeforge to open it" if newer else "; it cannot be migrated"))
    return revision


def open_schema(engine: Engine, writer: Engine, url: str, *, create: bool, read_only: bool) -> None:
    """Check the schema of the database behind ``engine`` and bring it to the current revision as the module
    documentation says; ``writer`` is the engine whose transactions are writes."""
    stored = _first_look(engine, url)
    start = _start(stored, url)
    if start == HEAD and (stored.revision == HEAD or read_only):
        return
    if start is None and not create:
        raise StateError(f"no tradeforge state at {url} (an empty database); open it with create=True")
    if start not in (None, HEAD) and (read_only or not create):
        raise SchemaVersionError(
            f"the state database at {url} has schema version {_revisions()[start]}, this tradeforge reads version "
            f"{SCHEMA_VERSION}; open it for writing (create=True) to upgrade it in place")
    with writer.begin() as conn:  # the writers' lock: a concurrent opener upgrades first, or waits and sees it done
        stored = _stored(conn)
        start = _start(stored, url)
        config = alembic_config(conn)
        if start is not None and stored.revision != start:
            command.stamp(config, start, purge=True)
        if start != HEAD:
            command.upgrade(config, "head")


def inspect_state(url: str, shown: str | None = None, *, connect_timeout_s: int = 10) -> int | None:
    """The schema version of the state at ``url``, read without changing anything; None when there is no database
    yet or an empty one. Raises :class:`ForeignStoreError` for a database that is not tradeforge's and
    :class:`SchemaVersionError` for one this tradeforge cannot read; messages name the URL as ``shown`` (by
    default with its password masked)."""
    shown = make_url(url).render_as_string(hide_password=True) if shown is None else shown
    path = sqlite_file(url)
    if path is not None:
        stored = _look(path, shown)
    elif make_url(url).get_backend_name() == "sqlite":
        return None  # an in-memory database holds nothing yet
    else:
        engine = sa.create_engine(engine_url(url, read_only=True), poolclass=NullPool,
                                  connect_args={"connect_timeout": connect_timeout_s})
        try:
            with engine.connect() as conn:
                stored = _stored(conn)
        finally:
            engine.dispose()
    start = _start(stored, shown)
    return None if start is None else _revisions()[start]


def stored_version(conn: Connection) -> int | None:
    """The schema version of the database ``conn`` is on (its ``schema_version`` row, which the migrations keep
    equal to the number of the Alembic revision); None for an empty database."""
    stored = _stored(conn)
    if stored.number is not None or stored.revision is None:
        return stored.number
    return _revisions().get(stored.revision)
