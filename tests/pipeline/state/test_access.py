"""Readers and writers: read-only stores refuse writes, readers see whole commits, writers wait their turn."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from pipeline.state import CursorRecord, EquityRecord, FillRow, PositionRow, ReadOnlyStateError, StateStore, StepRecord
from tests.pipeline.state.records import MINUTE, T0, D, fill, full_step, snapshot


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
