"""The state store on both backends: SQLite (WAL) in a temporary folder and PostgreSQL in a fresh schema.

PostgreSQL sessions run with a non-UTC session time zone, so stored times prove to be zone-independent.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import ValidationError
from sqlmodel import select

from pipeline.clock import FixedClock
from pipeline.domain.trading import Fill, Order, Position, Trade
from pipeline.domain.values import DecimalText, Entity, UTCDateTime
from pipeline.settings import Settings
from pipeline.state import (
    SCHEMA_VERSION,
    TABLES,
    BreakerEventRow,
    BreakerRecord,
    ControlCommand,
    CursorRecord,
    EquityRecord,
    EquityRow,
    FeedCursor,
    FillRow,
    LedgerRecord,
    LedgerRow,
    OrderRow,
    PositionRow,
    ReadOnlyStateError,
    SchemaVersion,
    SchemaVersionError,
    StateError,
    StateStore,
    StepRecord,
    TradeRow,
)
from pipeline.state.connection import open_engine, writer
from pipeline.state.tables import METADATA, table_of

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
D = Decimal


@cache
def _postgres_error() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        return str(error).strip() or type(error).__name__
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The state URL as the product builds it (``Settings.state_url``), on a fresh database or schema."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path / "data", _env_file=None).state_url
        return
    error = _postgres_error()
    if error is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    schema = f"tf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    options = f"-c search_path={schema} -c timezone=America/New_York".replace(" ", "%20").replace("=", "%3D")
    try:
        yield Settings(database_url=f"{PG_URL}?options={options}", _env_file=None).state_url
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[..., StateStore]]:
    """Open stores on the test database; all are closed at the end of the test."""
    opened: list[StateStore] = []

    def _open(read_only: bool = False, **kwargs: object) -> StateStore:
        store = StateStore.read_only(db_url) if read_only else StateStore(db_url, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    return open_store()


E = TypeVar("E", bound=Entity)


def renew(entity: E, **changes: Any) -> E:
    """``entity`` with ``changes``, built (and so validated) afresh."""
    return type(entity).model_validate({**entity.model_dump(), **changes})


def order(n: int = 1, status: str = "new", at: datetime = T0, **changes: Any) -> Order:
    record = Order(
        client_order_id=f"btc-{int(T0.timestamp() * 1000)}-{n}", sleeve="btc", symbol="BTC/USDT", side="buy",
        qty=D("0.5"), price=None, status=status, reason="golden cross", bar=T0, created_at=T0, updated_at=at,
    )
    return renew(record, **changes)


def fill(fill_id: str, at: datetime = T0 + MINUTE, qty: str = "0.25") -> Fill:
    return Fill(fill_id=fill_id, client_order_id=order().client_order_id, sleeve="btc", symbol="BTC/USDT",
                      side="buy", qty=D(qty), price=D("91234.56"), fee=D("0.0912"), at=at, reason="golden cross")


def ledger(at: datetime = T0 + MINUTE, cash: str = "54321.0987") -> LedgerRecord:
    state = json.dumps({"f": [0.1 + 0.2, 1 / 3, 91234.56], "i": [3, 0]})
    return LedgerRecord(sleeve="btc", cash=D(cash), units=D("0.5"), equity=D("100000.01"), tripped="",
                        kernel_state=state, bars_seen=42, updated_at=at)


def full_step(at: datetime = T0 + MINUTE) -> StepRecord:
    return StepRecord(
        orders=[order(1, "filled", at), order(2, "new", at)],
        fills=[fill("v-1", at), fill("v-2", at), fill("v-1", at)],
        positions=[Position(sleeve="btc", symbol="BTC/USDT", qty=D("0.5"), avg_price=D("91234.56"), updated_at=at)],
        trades=[Trade(sleeve="btc", symbol="BTC/USDT", side="long", qty=D("0.5"), entry_price=D("90000"),
                      exit_price=D("91234.56"), pnl=D("617.28"), fees=D("0.18"), entry_time=T0 - 60 * MINUTE,
                      exit_time=at, entry_reason="golden cross", exit_reason="death cross", model_version="lstm:3")],
        ledgers=[ledger(at)],
        breakers=[BreakerRecord(sleeve="portfolio", at=at, rule="max_drawdown", value=0.26, threshold=0.25)],
        equity=[EquityRecord(at=at, sleeve=name, equity=D("100000.01"), cash=D("54321.0987"),
                             position_value=D("45678.9113")) for name in ("btc", "portfolio")],
        cursors=[CursorRecord(feed="binance:BTC/USDT:1m", last_bar=at - MINUTE)],
        heartbeat_at=at,
    )


def snapshot(store: StateStore) -> dict[str, object]:
    """Everything the step writers touch, as comparable values."""
    bot = store.bot_state()
    return {
        "orders": [o.model_dump() for o in store.orders()],
        "fills": [f.model_dump() for f in store.fills()],
        "positions": [p.model_dump() for p in store.positions()],
        "trades": [t.model_dump() for t in store.trades()],
        "ledgers": {k: v.model_dump() for k, v in store.ledgers().items()},
        "breakers": [b.model_dump() for b in store.breaker_events()],
        "equity": [e.model_dump() for e in store.equity()],
        "cursor": store.cursor("binance:BTC/USDT:1m"),
        "bot": None if bot is None else bot.model_dump(),
    }


# ------------------------------------------------------------------------------------------------- schema


def test_fresh_database_gets_the_current_schema_version(store: StateStore,
                                                       open_store: Callable[..., StateStore]) -> None:
    assert SCHEMA_VERSION == 3
    assert store.schema_version() == 3
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"schema_version", "bot_state", "feed_cursors", "orders", "fills", "positions", "trades", "ledgers",
            "breaker_events", "equity", "control_commands", "model_deployments", "runtime_events"} <= tables
    assert open_store(create=False).schema_version() == 3
    assert open_store(read_only=True).schema_version() == 3


def legacy_database(url: str, version: int) -> None:
    """Write, on an empty database, the state as a tradeforge from before the Alembic migrations stored schema
    ``version`` (1 or 2), with a few rows: today's tables except that breaker events have no ``action`` (one
    event per sleeve, time and rule) and version 1 has no runtime events; a ``schema_version`` row and no
    ``alembic_version`` table."""
    metadata = sa.MetaData()
    absent = {"breaker_events"} | ({"runtime_events"} if version == 1 else set())
    tables = {t.name: t.to_metadata(metadata) for t in (table_of(m) for m in TABLES) if t.name not in absent}
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
            conn.execute(tables["orders"].insert().values(**order(1, "filled").model_dump()))
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

    assert [(o.client_order_id, o.status, o.qty) for o in upgraded.orders()] == [
        (order().client_order_id, "filled", D("0.5"))]
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


def test_runtime_events_are_recorded_in_order_and_filtered(store: StateStore) -> None:
    first = datetime(2024, 1, 1, tzinfo=UTC)
    store.record_event("stale", "binance:BTC/USDT:1m has no bar for 3 bars", sleeve="main:BTC/USDT", at=first)
    store.record_event("fresh", "bars again", at=first.replace(hour=1))
    store.record_event("stale", "again", at=first.replace(hour=2))
    assert [e.kind for e in store.events()] == ["stale", "fresh", "stale"]
    assert [e.detail for e in store.events("stale", since=first.replace(hour=1))] == ["again"]
    assert store.events("stale")[0].sleeve == "main:BTC/USDT"
    with pytest.raises(ValueError, match="at"):
        store.record_event("stale", "naive", at=datetime(2024, 1, 1))


def test_newer_schema_version_is_refused(store: StateStore, open_store: Callable[..., StateStore]) -> None:
    with store.transaction() as session:  # a newer version row, its tables restored over this revision
        row = session.get(SchemaVersion, 1)
        assert row is not None
        row.version = 4
    store.close()
    with pytest.raises(SchemaVersionError, match=r"schema version 4.*reads version 3"):
        open_store()
    with pytest.raises(SchemaVersionError, match="schema version 4"):
        open_store(read_only=True)


@pytest.mark.parametrize("mark", ["revision", "version row"])
def test_a_database_of_a_newer_tradeforge_is_refused_untouched(
        store: StateStore, open_store: Callable[..., StateStore], mark: str) -> None:
    store.apply_step(full_step())
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 4")
        if mark == "revision":  # a revision this tradeforge does not know
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0004'")
        else:  # written by a tradeforge from before the migrations, of a newer version
            conn.exec_driver_sql("DROP TABLE alembic_version")
    store.close()
    marks = stored_marks(store)
    for kwargs in ({}, {"create": False}, {"read_only": True}):
        with pytest.raises(SchemaVersionError, match=r"schema version 4\b.*reads version 3.*upgrade tradeforge"):
            open_store(**kwargs)
    assert stored_marks(store) == marks
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM fills").scalar_one() == 2


def test_missing_state_is_not_created_without_create(open_store: Callable[..., StateStore]) -> None:
    with pytest.raises(StateError, match=r"no (tradeforge )?state"):
        open_store(create=False)
    with pytest.raises(StateError, match=r"no (tradeforge )?state"):
        open_store(read_only=True)
    assert open_store().schema_version() == 3


def test_connection_settings(store: StateStore, open_store: Callable[..., StateStore]) -> None:
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
            assert pragma == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}
        else:
            assert store.engine.dialect.driver == "psycopg"
            assert conn.exec_driver_sql("SHOW search_path").scalar() == conn.exec_driver_sql(
                "SELECT current_schema()").scalar()
    reader = open_store(read_only=True)
    with reader.engine.connect() as conn:
        if reader.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        else:
            assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"


# ----------------------------------------------------------------------------------------- exact values


def test_decimals_round_trip_exactly(store: StateStore) -> None:
    sum_ = D("0.1") + D("0.2")
    digits28 = D("1234567890.123456789012345678")
    tiny, huge, zeros = D("-0.0000000000000000000000000001"), D("1E+30"), D("2.50")
    at = T0
    store.apply_step(StepRecord(
        positions=[Position(sleeve="btc", symbol="BTC/USDT", qty=sum_, avg_price=digits28, updated_at=at)],
        ledgers=[renew(ledger(at), cash=tiny, units=huge, equity=zeros)],
        fills=[fill("v-9", at, qty="0.3000000000000000000000000001")],
    ))
    (position,) = store.positions()
    assert position.qty == D("0.3") and str(position.qty) == "0.3"
    assert str(position.avg_price) == "1234567890.123456789012345678"
    row = store.ledgers()["btc"]
    assert (str(row.cash), str(row.units), str(row.equity)) == (str(tiny), "1E+30", "2.50")
    assert all(isinstance(v, Decimal) for v in (row.cash, row.units, row.equity, position.qty))
    assert store.fills()[0].qty == D("0.3000000000000000000000000001")
    assert json.loads(row.kernel_state)["f"][0] == 0.1 + 0.2  # the engine's floats, bit for bit


def test_aware_datetimes_round_trip_in_utc(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/Los_Angeles")  # the process's local zone plays no part
    time.tzset()
    try:
        india = timezone(timedelta(hours=5, minutes=30))
        local = datetime(2026, 3, 8, 12, 34, 56, 789012, tzinfo=india)
        stamp = pd.Timestamp("2026-03-08 07:04:57.5", tz="UTC")
        store.apply_step(StepRecord(
            fills=[fill("v-a", local), fill("v-b", stamp)],
            cursors=[CursorRecord(feed="binance:BTC/USDT:1m", last_bar=local)],
        ))
        fills = store.fills()
        assert [f.fill_id for f in fills] == ["v-a", "v-b"]  # ordered by instant, not by wall-clock text
        assert fills[0].at == local and fills[0].at.tzinfo == UTC
        assert fills[0].at == datetime(2026, 3, 8, 7, 4, 56, 789012, tzinfo=UTC)
        assert fills[1].at == stamp.to_pydatetime() and type(fills[1].at) is datetime
        assert [f.fill_id for f in store.fills(since=stamp.to_pydatetime())] == ["v-b"]
        cursor = store.cursor("binance:BTC/USDT:1m")
        assert cursor == local and cursor is not None and cursor.tzinfo == UTC
    finally:
        monkeypatch.undo()
        time.tzset()


# ------------------------------------------------------------------------------------------- the step


def test_apply_step_is_idempotent(store: StateStore) -> None:
    step = full_step()
    first = store.apply_step(step)
    assert (first.new_fills, first.duplicate_fills) == (2, 1)  # the repeated fill id inside the step
    assert (first.new_orders, first.new_trades, first.new_equity, first.new_breaker_events) == (2, 1, 2, 1)
    before = snapshot(store)

    second = store.apply_step(step)
    assert (second.new_fills, second.duplicate_fills) == (0, 3)
    assert (second.new_orders, second.updated_orders, second.new_trades, second.new_equity,
            second.new_breaker_events) == (0, 0, 0, 0, 0)
    assert snapshot(store) == before
    assert store.known_fill_ids() == {"v-1", "v-2"}
    assert sum(f.qty for f in store.fills()) == D("0.50")
    bot = store.bot_state()
    assert bot is not None and bot.heartbeat_at == T0 + MINUTE

    # positions and ledgers are the latest snapshot the runtime wrote
    store.apply_step(StepRecord(positions=[Position(sleeve="btc", symbol="BTC/USDT", qty=D(0), avg_price=D(0),
                                                    updated_at=T0 + 2 * MINUTE)],
                                ledgers=[ledger(T0 + 2 * MINUTE, "100000.01")]))
    (position,) = store.positions()
    assert (position.qty, position.updated_at, store.ledgers()["btc"].cash) == (D(0), T0 + 2 * MINUTE, D("100000.01"))


def test_order_status_never_moves_backward(store: StateStore) -> None:
    def status(n: int) -> str:
        return {o.client_order_id: o.status for o in store.orders()}[order(n).client_order_id]

    store.apply_step(StepRecord(orders=[order(1, "new"), order(2, "new"), order(3, "partially_filled")]))
    result = store.apply_step(StepRecord(orders=[order(1, "filled", T0 + MINUTE, price=D("91234.56"),
                                                       venue_order_id="V1")]))
    assert result.updated_orders == 1 and status(1) == "filled"
    for later in ("partially_filled", "new", "canceled", "rejected"):
        assert store.apply_step(StepRecord(orders=[order(1, later, T0 + 2 * MINUTE)])).updated_orders == 0
        assert status(1) == "filled"
    (row,) = store.orders({"filled"})
    assert (row.price, row.venue_order_id, row.updated_at) == (D("91234.56"), "V1", T0 + MINUTE)

    store.apply_step(StepRecord(orders=[order(2, "rejected", T0 + MINUTE)]))
    store.apply_step(StepRecord(orders=[order(2, "filled", T0 + 2 * MINUTE)]))
    assert status(2) == "rejected"
    store.apply_step(StepRecord(orders=[order(3, "new", T0 + MINUTE)]))
    assert status(3) == "partially_filled"
    store.apply_step(StepRecord(orders=[order(3, "canceled", T0 + 2 * MINUTE)]))
    assert status(3) == "canceled"
    assert [o.status for o in store.orders({"new", "partially_filled"})] == []
    with pytest.raises(ValueError, match="unknown order status"):
        store.orders({"done"})


def test_failed_step_stores_nothing(store: StateStore) -> None:
    store.apply_step(full_step())
    before = snapshot(store)
    later = T0 + 2 * MINUTE
    valid = dataclasses.replace(
        full_step(later), fills=[fill("v-3", later)], cursors=[CursorRecord(feed="binance:BTC/USDT:1m",
                                                                            last_bar=later)],
        trades=[], orders=[order(3, "new", later)],
    )
    broken = ledger(later)
    object.__setattr__(broken, "kernel_state", None)  # violates NOT NULL, after every valid record of the step
    with pytest.raises(sa.exc.IntegrityError):
        store.apply_step(dataclasses.replace(valid, ledgers=[broken]))
    assert snapshot(store) == before

    conflicting = order(1, "filled", later, side="sell")  # a client order id names one order
    with pytest.raises(ValueError, match="stored with other side"):
        store.apply_step(dataclasses.replace(valid, orders=[order(3, "new", later), conflicting]))
    assert snapshot(store) == before

    result = store.apply_step(valid)
    assert result.new_fills == 1 and store.cursor("binance:BTC/USDT:1m") == later


def test_cursor_never_moves_backward(store: StateStore) -> None:
    feed = "binance:BTC/USDT:1m"
    assert store.cursor(feed) is None
    store.apply_step(StepRecord(cursors=[CursorRecord(feed=feed, last_bar=T0 + 5 * MINUTE)]))
    store.apply_step(StepRecord(cursors=[CursorRecord(feed=feed, last_bar=T0 + 2 * MINUTE)]))
    assert store.cursor(feed) == T0 + 5 * MINUTE
    store.apply_step(StepRecord(cursors=[CursorRecord(feed=feed, last_bar=T0 + 6 * MINUTE), CursorRecord(feed=feed,
                                                                                                         last_bar=T0)]))
    assert store.cursor(feed) == T0 + 6 * MINUTE
    assert store.cursor("binance:ETH/USDT:1m") is None


# ------------------------------------------------------------------------------------- process & commands


def test_status_heartbeat_and_deployments(store: StateStore) -> None:
    assert store.bot_state() is None
    store.set_status("running", "started by the operator", mode="paper", at=T0)
    store.set_status("paused", "daily loss limit", at=T0 + MINUTE)
    store.heartbeat(T0 + 3 * MINUTE)
    store.heartbeat(T0 + 2 * MINUTE)
    bot = store.bot_state()
    assert bot is not None
    assert (bot.mode, bot.status, bot.status_reason) == ("paper", "paused", "daily loss limit")
    assert (bot.started_at, bot.heartbeat_at) == (T0, T0 + 3 * MINUTE)
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status("sleeping", "")

    first = store.record_deployment("btc", "lstm", "3", "run-a", "promoted", activated_at=T0)
    store.record_deployment("eth", "gru", "1", "run-b", "promoted", activated_at=T0 + MINUTE)
    second = store.record_deployment("btc", "lstm", "4", "run-c", "retrained", activated_at=T0 + 2 * MINUTE)
    assert [d.id for d in store.deployments("btc")] == [first, second]
    assert [d.version for d in store.deployments()] == ["3", "1", "4"]


def test_commands_add_pending_acknowledge(open_store: Callable[..., StateStore]) -> None:
    clock = FixedClock(pd.Timestamp(T0))
    store = open_store(clock=clock)
    pause = store.add_command("pause", "dashboard")
    clock.set(pd.Timestamp(T0 + MINUTE))
    flatten = store.add_command("flatten", "telegram", sleeve="btc")
    pending = store.pending_commands()
    assert [(c.id, c.command, c.source, c.sleeve) for c in pending] == [
        (pause, "pause", "dashboard", None), (flatten, "flatten", "telegram", "btc")]
    assert pending[0].created_at == T0

    assert store.acknowledge(pause, "paused 2 sleeves", T0 + 2 * MINUTE) is True
    assert store.acknowledge(pause, "again", T0 + 3 * MINUTE) is False
    assert [c.id for c in store.pending_commands()] == [flatten]
    with store.transaction() as session:
        done = session.get(ControlCommand, pause)
        assert done is not None and (done.result, done.acknowledged_at) == ("paused 2 sleeves", T0 + 2 * MINUTE)
    with pytest.raises(ValueError, match="no control command with id 999"):
        store.acknowledge(999, "", T0)
    with pytest.raises(ValueError, match=r"command 'liquidate' is not known.*'flatten'"):
        store.add_command("liquidate", "cli")
    with pytest.raises(ValueError, match=r"command source 'email' is not known.*'telegram'"):
        store.add_command("stop", "email")
    assert len(store.pending_commands()) == 1


# --------------------------------------------------------------------------------------------- read-only


def test_read_only_store_refuses_writes(store: StateStore, open_store: Callable[..., StateStore]) -> None:
    store.apply_step(full_step())
    store.add_command("pause", "cli")
    before = snapshot(store)
    reader = open_store(read_only=True)
    assert reader.is_read_only
    assert snapshot(reader) == before
    assert len(reader.pending_commands()) == 1

    writes: list[Callable[[], object]] = [
        lambda: reader.apply_step(full_step(T0 + 5 * MINUTE)),
        lambda: reader.add_command("stop", "dashboard"),
        lambda: reader.acknowledge(1, "done", T0),
        lambda: reader.set_status("stopped", "operator"),
        lambda: reader.heartbeat(T0 + 9 * MINUTE),
        lambda: reader.record_deployment("btc", "lstm", "9", "run", "manual", T0),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyStateError, match="read-only"):
            write()
    with pytest.raises(ReadOnlyStateError, match="refuses writes"), reader.transaction() as session:
        session.add(PositionRow(sleeve="eth", symbol="ETH/USDT", qty=D(1), avg_price=D(2), updated_at=T0))
    with pytest.raises(sa.exc.DBAPIError), reader.transaction() as session:  # the connection itself is read-only
        session.execute(sa.text("DELETE FROM fills"))
    assert snapshot(reader) == before == snapshot(store)
    assert len(store.pending_commands()) == 1


def test_reader_sees_commits_while_a_writer_works(store: StateStore, open_store: Callable[..., StateStore]) -> None:
    reader = open_store(read_only=True)
    with store.transaction() as session:
        session.add(FillRow(**fill("v-open").model_dump()))
        session.flush()
        assert reader.fills() == []  # uncommitted work is invisible, and the reader is not blocked
    assert [f.fill_id for f in reader.fills()] == ["v-open"]

    steps = 25
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(steps):
                at = T0 + (i + 1) * MINUTE
                store.apply_step(StepRecord(fills=[fill(f"v-{i}", at)], equity=[
                    EquityRecord(at=at, sleeve="btc", equity=D(i), cash=D(i),
                                 position_value=D(0))], cursors=[CursorRecord(feed="feed", last_bar=at)]))
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    while writer.is_alive():
        equity_rows = len(reader.equity())
        seen.append(len(reader.known_fill_ids()))
        assert equity_rows < seen[-1]  # a step is visible whole: its equity row never before its fill
    writer.join()
    assert errors == []
    assert seen == sorted(seen)
    assert len(reader.fills()) == steps + 1 and len(reader.equity("btc")) == steps
    assert reader.cursor("feed") == T0 + steps * MINUTE


def test_writers_wait_for_each_other(store: StateStore, open_store: Callable[..., StateStore]) -> None:
    other = open_store(create=False)
    store.apply_step(StepRecord(cursors=[CursorRecord(feed="feed", last_bar=T0)]))
    finished = threading.Event()

    def second_writer() -> None:
        other.apply_step(StepRecord(cursors=[CursorRecord(feed="feed", last_bar=T0 + 2 * MINUTE)], fills=[fill("v-2")]))
        finished.set()

    with store.transaction() as session:
        session.add(FillRow(**fill("v-1").model_dump()))
        session.flush()
        thread = threading.Thread(target=second_writer)
        thread.start()
        assert not finished.wait(0.5)  # the second writer waits for the first to commit
    thread.join(timeout=10)
    assert finished.is_set()
    assert store.known_fill_ids() == {"v-1", "v-2"} and store.cursor("feed") == T0 + 2 * MINUTE


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("record", "row"), [
    (Order, OrderRow), (Fill, FillRow), (Position, PositionRow), (Trade, TradeRow),
    (LedgerRecord, LedgerRow), (BreakerRecord, BreakerEventRow), (EquityRecord, EquityRow),
    (CursorRecord, FeedCursor)])
def test_each_record_carries_its_tables_columns(record: type[Any], row: type[Any]) -> None:
    """The step writer stores an entity's fields as they are: they must be its table's columns (its surrogate id
    aside), money exactly where the table stores exact money and times where it stores UTC times; the table
    extends the entity, so its fields are declared once."""
    assert issubclass(row, record)
    columns = {c.name: c.type for c in table_of(row).columns if c.name != "id"}
    fields = {name: str(f.annotation) for name, f in record.model_fields.items()}
    assert set(fields) == set(columns)
    for name, annotation in fields.items():
        assert ("Decimal" in annotation) == isinstance(columns[name], DecimalText), name
        assert ("datetime" in annotation) == isinstance(columns[name], UTCDateTime), name


def test_bad_input_is_refused_with_clear_errors(store: StateStore) -> None:
    naive = datetime(2026, 11, 20, 9, 0)
    with pytest.raises(ValueError, match=r"Fill\.at must be a tz-aware datetime.*naive"):
        renew(fill("x"), at=naive)
    with pytest.raises(TypeError, match=r"Fill\.qty must be an exact Decimal, got the float 0\.1"):
        renew(fill("x"), qty=0.1)
    with pytest.raises(ValidationError, match=r"frozen"):
        fill("x").qty = D(1)  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"Order\.price must be an exact Decimal, got the float"):
        order(price=91234.5)
    with pytest.raises(ValueError, match=r"EquityRecord\.cash must be a finite Decimal"):
        EquityRecord(at=T0, sleeve="btc", equity=D(1), cash=D("NaN"), position_value=D(0))
    with pytest.raises(ValueError, match=r"(?s)for Order\nside\n.*'buy' or 'sell'.*input_value='hold'"):
        order(side="hold")
    with pytest.raises(ValueError, match=r"(?s)for Order\nstatus\n.*'new', 'partially_filled'.*input_value='done'"):
        order(status="done")
    with pytest.raises(TypeError, match=r"StepRecord\.fills\[0\] must be a Fill"):
        StepRecord(fills=[order()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"StepRecord\.heartbeat_at must be a tz-aware"):
        StepRecord(heartbeat_at=naive)
    with pytest.raises(ValueError, match="at must be a tz-aware"):
        store.heartbeat(naive)
    with pytest.raises(ValueError, match="since must be a tz-aware"):
        store.fills(since=naive)

    store.apply_step(full_step())
    before = snapshot(store)
    with pytest.raises(TypeError, match=r"PositionRow\.qty must be an exact Decimal, got the float"), \
            store.transaction() as session:
        session.add(PositionRow(sleeve="eth", symbol="ETH/USDT", qty=0.1, avg_price=D(2),
                                updated_at=T0))  # type: ignore[arg-type]

    def make_a_stored_time_naive() -> None:
        with store.transaction() as session:
            row = session.exec(select(FillRow)).first()
            assert row is not None
            row.at = naive

    with pytest.raises(ValueError, match=r"FillRow\.at must be a tz-aware datetime"):
        make_a_stored_time_naive()
    assert snapshot(store) == before
