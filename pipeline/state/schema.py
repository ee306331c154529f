"""The schema's version, kept by Alembic: the migrations in ``migrations/versions`` bring any database to the
current revision, run programmatically on the store's own write connection (no ``alembic.ini``).

Revision ``000N`` is schema version N (:data:`SCHEMA_VERSION` is the current one). Opening a database:

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

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from pipeline.state.errors import SchemaVersionError, StateError
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
    revision: str | None  # the Alembic revision, when the database has an alembic_version table
    number: int | None  # the schema_version row's version, when there is one


def _stored(conn: Connection) -> _Stored:
    tables = set(sa.inspect(conn).get_table_names())
    revision = MigrationContext.configure(conn).get_current_revision() if "alembic_version" in tables else None
    number = None
    if SchemaVersion.__tablename__ in tables:
        version = table_of(SchemaVersion).c.version
        number = conn.execute(sa.select(version).where(table_of(SchemaVersion).c.id == 1)).scalar_one_or_none()
    return _Stored(revision, number)


def _start(stored: _Stored, url: str) -> str | None:
    """The revision whose tables the database holds (None: an empty database); raises for a newer or unknown
    one. The version row travels with the tables, so where it disagrees with the Alembic revision it decides."""
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
    with engine.connect() as conn:
        stored = _stored(conn)
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


def stored_version(conn: Connection) -> int | None:
    """The schema version of the database ``conn`` is on (its ``schema_version`` row, which the migrations keep
    equal to the number of the Alembic revision); None for an empty database."""
    stored = _stored(conn)
    if stored.number is not None or stored.revision is None:
        return stored.number
    return _revisions().get(stored.revision)
