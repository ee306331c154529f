"""Schema creation, versions and migrations: fresh, legacy, newer and missing databases, upgraded in one go."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pipeline.domain.values import UTCDateTime
from pipeline.state import (
    SCHEMA_VERSION,
    TABLES,
    BreakerRecord,
    SchemaVersion,
    SchemaVersionError,
    StateError,
    StateStore,
    StepRecord,
)
from pipeline.state.connection import open_engine, writer
from pipeline.state.tables import METADATA, OrderRow, table_of
from tests.pipeline.state.records import MINUTE, T0, D, fill, full_step, ledger, order, snapshot


def test_fresh_database_gets_the_current_schema_version(store: StateStore,
                                                       open_store: Callable[..., StateStore]) -> None:
    assert SCHEMA_VERSION == 4
    assert store.schema_version() == 4
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"schema_version", "bot_state", "feed_cursors", "orders", "fills", "positions", "trades", "ledgers",
            "breaker_events", "equity", "control_commands", "model_deployments", "runtime_events"} <= tables
    assert open_store(create=False).schema_version() == 4
    assert open_store(read_only=True).schema_version() == 4


def legacy_database(url: str, version: int) -> None:
    """Write, on an empty database, the state as a tradeforge from before the Alembic migrations stored schema
    ``version`` (1 or 2), with a few rows: today's tables except that breaker events have no ``action`` (one
    event per sleeve, time and rule), orders have no ``kind``, ``stop_price`` nor ``expires_at`` and version 1 has
    no runtime events; a ``schema_version`` row and no ``alembic_version`` table."""
    metadata = sa.MetaData()
    absent = {"breaker_events", "orders"} | ({"runtime_events"} if version == 1 else set())
    tables = {t.name: t.to_metadata(metadata) for t in (table_of(m) for m in TABLES) if t.name not in absent}
    later = {"kind", "stop_price", "expires_at"}  # the order columns of version 4
    tables["orders"] = sa.Table("orders", metadata, *(
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, index=c.index)
        for c in table_of(OrderRow).columns if c.name not in later))
    breakers = sa.Table(
        "breaker_events", metadata, sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sleeve", sa.String, nullable=False), sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("rule", sa.String, nullable=False), sa.Column("value", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.UniqueConstraint("sleeve", "at", "rule", name="uq_breaker_events_sleeve_at_rule"))
    engine = open_engine(url, read_only=False)
    try:
        with writer(engine).begin() as conn:
            metadata.create_all(conn)
            conn.execute(tables["schema_version"].insert().values(id=1, version=version))
            conn.execute(tables["orders"].insert().values(**order(1, "filled").model_dump(exclude=later)))
            conn.execute(tables["fills"].insert(), [fill(f"v-{n}").model_dump() for n in (1, 2)])
            conn.execute(tables["ledgers"].insert().values(**ledger().model_dump()))
            conn.execute(tables["equity"].insert().values(at=T0, sleeve="btc", equity=D("100000.01"),
                                                          cash=D("54321.0987"), position_value=D("45678.9113")))
            conn.execute(tables["control_commands"].insert().values(command="pause", source="cli", created_at=T0))
            conn.execute(breakers.insert(), [
                {"sleeve": "portfolio", "at": T0, "rule": "max_drawdown", "value": 0.26, "threshold": 0.25},
                {"sleeve": "btc", "at": T0, "rule": "daily_loss", "value": 0.06, "threshold": 0.05}])
            if version == 2:
                conn.execute(tables["runtime_events"].insert().values(at=T0, kind="recovery", detail="restored"))
    finally:
        engine.dispose()


def stored_marks(store: StateStore) -> tuple[set[str], int | None, str | None]:
    """The database's table names, its ``schema_version`` row and its Alembic revision (read without a store)."""
    with store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        number = conn.exec_driver_sql("SELECT version FROM schema_version").scalar_one_or_none()
        revision = (conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one_or_none()
                    if "alembic_version" in tables else None)
    return tables, number, revision


def schema_differences(store: StateStore) -> list[Any]:
    """What Alembic's autogenerate finds between the tables' metadata and the database (empty: they match)."""
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), METADATA))


def test_a_fresh_database_matches_the_tables_metadata(store: StateStore) -> None:
    assert schema_differences(store) == []
    assert stored_marks(store)[1:] == (SCHEMA_VERSION, f"{SCHEMA_VERSION:04d}")


@pytest.mark.parametrize(("version", "leftover"), [(1, False), (2, False), (2, True)])
def test_an_older_database_is_upgraded_in_place_and_keeps_its_rows(
        db_url: str, open_store: Callable[..., StateStore], version: int, leftover: bool) -> None:
    if leftover:  # the old state restored over a current one, whose alembic_version table stayed behind
        open_store().close()
        with open_store().engine.begin() as conn:
            for name in sorted(set(sa.inspect(conn).get_table_names()) - {"alembic_version"}):
                conn.exec_driver_sql(f"DROP TABLE {name}")
    legacy_database(db_url, version)
    with pytest.raises(SchemaVersionError, match=f"schema version {version}"):
        open_store(read_only=True)  # a reader never changes the database
    with pytest.raises(SchemaVersionError, match=f"schema version {version}.*open it for writing"):
        open_store(create=False)
    upgraded = open_store()
    assert upgraded.schema_version() == SCHEMA_VERSION
    tables, number, revision = stored_marks(upgraded)
    assert (number, revision) == (SCHEMA_VERSION, f"{SCHEMA_VERSION:04d}")
    assert "runtime_events" in tables and not any(name.startswith("_alembic") for name in tables)
    assert schema_differences(upgraded) == []

    assert [(o.client_order_id, o.status, o.qty, o.kind, o.stop_price) for o in upgraded.orders()] == [
        (order().client_order_id, "filled", D("0.5"), "market", None)]
    assert [(f.fill_id, f.price, f.at) for f in upgraded.fills()] == [
        ("v-1", D("91234.56"), T0 + MINUTE), ("v-2", D("91234.56"), T0 + MINUTE)]
    assert upgraded.ledgers()["btc"].kernel_state == ledger().kernel_state
    assert [(e.sleeve, e.equity) for e in upgraded.equity()] == [("btc", D("100000.01"))]
    assert [c.command for c in upgraded.pending_commands()] == ["pause"]
    assert sorted((e.sleeve, e.rule, e.value, e.action) for e in upgraded.breaker_events()) == [
        ("btc", "daily_loss", 0.06, "trip"), ("portfolio", "max_drawdown", 0.26, "trip")]
    release = BreakerRecord(sleeve="portfolio", at=T0, rule="max_drawdown", value=0.2, threshold=0.25, action="release")
    assert upgraded.apply_step(StepRecord(breakers=[release])).new_breaker_events == 1
    assert upgraded.apply_step(StepRecord(breakers=[release])).new_breaker_events == 0
    assert [e.detail for e in upgraded.events("recovery")] == ([] if version == 1 else ["restored"])
    upgraded.record_event("recovery", "restored again")
    assert open_store(read_only=True).schema_version() == SCHEMA_VERSION


def test_an_upgrade_is_one_transaction_under_the_writers_lock(
        db_url: str, open_store: Callable[..., StateStore]) -> None:
    legacy_database(db_url, 1)
    statements: list[tuple[int, str]] = []

    def record(conn: sa.Connection, _cursor: object, statement: str, *_args: object) -> None:
        statements.append((id(conn.connection.dbapi_connection), statement.strip().upper()))

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        upgraded = open_store()
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    create = next(i for i, (_, text) in enumerate(statements) if text.startswith("CREATE TABLE RUNTIME_EVENTS"))
    connection = statements[create][0]
    before = [text for conn, text in statements[:create] if conn == connection]
    begun = next(text for text in reversed(before) if text.startswith("BEGIN") or "PG_ADVISORY_XACT_LOCK" in text)
    assert begun == "BEGIN IMMEDIATE" if upgraded.engine.dialect.name == "sqlite" else "PG_ADVISORY_XACT_LOCK" in begun
    assert upgraded.schema_version() == SCHEMA_VERSION


def test_a_failed_upgrade_leaves_the_database_as_it_was(
        db_url: str, open_store: Callable[..., StateStore]) -> None:
    legacy_database(db_url, 1)
    engine = open_engine(db_url, read_only=False)
    try:  # a version-1 database in whose way the last migration finds a table or a column it would add
        with writer(engine).begin() as conn:
            if conn.dialect.name == "sqlite":  # SQLite rebuilds the table through a temporary one
                conn.exec_driver_sql("CREATE TABLE _alembic_tmp_breaker_events (id INTEGER)")
            else:
                conn.exec_driver_sql("ALTER TABLE breaker_events ADD COLUMN action VARCHAR NOT NULL DEFAULT 'trip'")
    finally:
        engine.dispose()
    with pytest.raises(sa.exc.DBAPIError):
        open_store()
    reader = sa.create_engine(engine.url)
    try:
        with reader.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar_one() == 1
            assert conn.exec_driver_sql("SELECT count(*) FROM breaker_events").scalar_one() == 2
    finally:
        reader.dispose()
    assert "runtime_events" not in tables and "alembic_version" not in tables  # the earlier migration rolled back


def test_a_current_database_from_before_the_migrations_is_stamped(
        store: StateStore, open_store: Callable[..., StateStore]) -> None:
    store.apply_step(full_step())
    before = snapshot(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    store.close()
    reader = open_store(read_only=True)
    assert reader.schema_version() == SCHEMA_VERSION and snapshot(reader) == before
    assert stored_marks(reader)[2] is None  # a reader never writes the stamp
    stamped = open_store(create=False)
    assert stored_marks(stamped)[1:] == (SCHEMA_VERSION, f"{SCHEMA_VERSION:04d}")
    assert snapshot(stamped) == before


def test_stores_opened_together_on_an_empty_database_create_it_once(
        db_url: str, open_store: Callable[..., StateStore]) -> None:
    start = threading.Barrier(3)
    opened: list[StateStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_store())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(opened) == 3
    assert {store.schema_version() for store in opened} == {SCHEMA_VERSION}
    assert stored_marks(opened[0])[1:] == (SCHEMA_VERSION, f"{SCHEMA_VERSION:04d}")
    assert schema_differences(opened[0]) == []


def test_newer_schema_version_is_refused(store: StateStore, open_store: Callable[..., StateStore]) -> None:
    with store.transaction() as session:  # a newer version row, its tables restored over this revision
        row = session.get(SchemaVersion, 1)
        assert row is not None
        row.version = 5
    store.close()
    with pytest.raises(SchemaVersionError, match=r"schema version 5.*reads version 4"):
        open_store()
    with pytest.raises(SchemaVersionError, match="schema version 5"):
        open_store(read_only=True)


@pytest.mark.parametrize("mark", ["revision", "version row"])
def test_a_database_of_a_newer_tradeforge_is_refused_untouched(
        store: StateStore, open_store: Callable[..., StateStore], mark: str) -> None:
    store.apply_step(full_step())
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 5")
        if mark == "revision":  # a revision this tradeforge does not know
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0005'")
        else:  # written by a tradeforge from before the migrations, of a newer version
            conn.exec_driver_sql("DROP TABLE alembic_version")
    store.close()
    marks = stored_marks(store)
    for kwargs in ({}, {"create": False}, {"read_only": True}):
        with pytest.raises(SchemaVersionError, match=r"schema version 5\b.*reads version 4.*upgrade tradeforge"):
            open_store(**kwargs)
    assert stored_marks(store) == marks
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM fills").scalar_one() == 2


def test_missing_state_is_not_created_without_create(open_store: Callable[..., StateStore]) -> None:
    with pytest.raises(StateError, match=r"no (tradeforge )?state"):
        open_store(create=False)
    with pytest.raises(StateError, match=r"no (tradeforge )?state"):
        open_store(read_only=True)
    assert open_store().schema_version() == 4
