"""The step writer: everything one runtime step changed, written with SQLAlchemy Core on one connection inside
the caller's write transaction, with one lookup query per table and executemany inserts (the runtime's hot
path). Re-applying a step changes nothing: fills are de-duplicated by venue ``fill_id``; trades, breaker events
and equity rows are inserted only when their natural key is absent; an order's status only moves forward;
positions and ledgers are replaced by the step's snapshot (``ON CONFLICT`` upserts); feed cursors and the
heartbeat never move backwards."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from pipeline.domain.trading import Fill, Order, OrderStatus
from pipeline.domain.values import Entity
from pipeline.state.records import CursorRecord, StepRecord, StepResult
from pipeline.state.tables import (
    BotState,
    BreakerEventRow,
    EquityRow,
    FeedCursor,
    FillRow,
    LedgerRow,
    OrderRow,
    PositionRow,
    TradeRow,
    table_of,
)


def write_step(conn: Connection, step: StepRecord) -> StepResult:
    """Write ``step`` on ``conn`` (inside its write transaction); see the module documentation.

    Raises ``ValueError`` when an order record contradicts the stored order of the same client order id.
    """
    new_orders, updated_orders = _write_orders(conn, step.orders)
    new_fills, duplicate_fills = _write_fills(conn, step.fills)
    _upsert(conn, table_of(PositionRow), ("sleeve", "symbol"), [_fields(r) for r in step.positions])
    new_trades = _absent(conn, table_of(TradeRow), ("sleeve", "entry_time", "exit_time"), step.trades)
    _upsert(conn, table_of(LedgerRow), ("sleeve",), [_fields(r) for r in step.ledgers])
    new_breakers = _absent(conn, table_of(BreakerEventRow), ("sleeve", "at", "rule", "action"), step.breakers)
    new_equity = _absent(conn, table_of(EquityRow), ("at", "sleeve"), step.equity)
    _move_cursors(conn, step.cursors)
    if step.heartbeat_at is not None:
        beat(conn, step.heartbeat_at)
    return StepResult(new_fills=new_fills, duplicate_fills=duplicate_fills, new_orders=new_orders,
                      updated_orders=updated_orders, new_trades=new_trades, new_equity=new_equity,
                      new_breaker_events=new_breakers)


def _fields(entity: Entity) -> dict[str, Any]:
    """An entity's column values; enumerations as their plain text (every driver stores that the same way)."""
    values = {name: getattr(entity, name) for name in type(entity).model_fields}
    return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}


_IDENTITY: Final = ("sleeve", "symbol", "side", "qty", "bar")
_CHUNK: Final = 500  # keys per IN (...) lookup: well inside every backend's bound-parameter limit
Key = tuple[Any, ...]


def _stored(conn: Connection, table: sa.Table, names: tuple[str, ...],
            keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """The stored rows of ``table`` whose columns ``names`` hold one of ``keys``, by key (one query per
    :data:`_CHUNK` keys, whatever the number of records)."""
    wanted = list(dict.fromkeys(keys))
    columns = [table.c[name] for name in names]
    target = columns[0] if len(columns) == 1 else sa.tuple_(*columns)
    found: dict[Key, dict[str, Any]] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        values = [key[0] for key in chunk] if len(columns) == 1 else chunk
        for row in conn.execute(sa.select(table).where(target.in_(values))).mappings():
            found[tuple(row[name] for name in names)] = dict(row)
    return found


def _write_orders(conn: Connection, records: Sequence[Order]) -> tuple[int, int]:
    table = table_of(OrderRow)
    stored = _stored(conn, table, ("client_order_id",), ((r.client_order_id,) for r in records))
    inserts: dict[str, dict[str, Any]] = {}
    updates: dict[str, dict[str, Any]] = {}
    for record in records:
        row = stored.get((record.client_order_id,))
        if row is None:
            stored[(record.client_order_id,)] = inserts[record.client_order_id] = _fields(record)
            continue
        differs = [name for name in _IDENTITY if row[name] != getattr(record, name)]
        if differs:
            raise ValueError(
                f"order {record.client_order_id!r} is stored with other "
                + ", ".join(f"{n} ({row[n]} stored, {getattr(record, n)} given)" for n in differs)
                + ": a client order id names one order"
            )
        changes: dict[str, Any] = {}
        if record.status.rank > OrderStatus(row["status"]).rank:
            changes.update(status=record.status, reason=record.reason)
            if record.price is not None:
                changes["price"] = record.price
        if row["venue_order_id"] is None and record.venue_order_id is not None:
            changes["venue_order_id"] = record.venue_order_id
        if changes:
            assert record.updated_at is not None
            changes["updated_at"] = max(row["updated_at"], record.updated_at)
            row.update(changes)
            if record.client_order_id not in inserts:
                updates.setdefault(record.client_order_id, {}).update(changes)
    if inserts:
        conn.execute(sa.insert(table), list(inserts.values()))
    for client_order_id, changes in updates.items():
        conn.execute(sa.update(table).where(table.c.client_order_id == client_order_id).values(**changes))
    return len(inserts), len(updates)


def _write_fills(conn: Connection, records: Sequence[Fill]) -> tuple[int, int]:
    fresh = _absent(conn, table_of(FillRow), ("fill_id",), records)
    return fresh, len(records) - fresh


def _absent(conn: Connection, table: sa.Table, names: tuple[str, ...], records: Sequence[Entity]) -> int:
    """Insert each record whose natural key (the columns ``names``) is not stored yet; returns how many were."""
    keys = [tuple(getattr(r, n) for n in names) for r in records]
    seen = set(_stored(conn, table, names, keys))
    rows = []
    for key, record in zip(keys, records, strict=True):
        if key not in seen:
            seen.add(key)
            rows.append(_fields(record))
    if rows:
        conn.execute(sa.insert(table), rows)
    return len(rows)


def _upsert(conn: Connection, table: sa.Table, names: tuple[str, ...], rows: list[dict[str, Any]],
            only_if: Callable[[Any], ColumnElement[bool]] | None = None) -> None:
    """Insert each row, or overwrite the stored row of its key (``names``); with ``only_if``, only where that
    condition on the stored row and the new one (``excluded``) holds."""
    if not rows:
        return
    insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    statement = insert(table)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=list(names), set_={c: excluded[c] for c in rows[0] if c not in names},
        where=None if only_if is None else only_if(excluded))
    conn.execute(statement, rows)


def _move_cursors(conn: Connection, records: Sequence[CursorRecord]) -> None:
    """Feed cursors move forward only."""
    table = table_of(FeedCursor)
    latest: dict[str, datetime] = {}
    for record in records:
        latest[record.feed] = max(latest.get(record.feed, record.last_bar), record.last_bar)
    _upsert(conn, table, ("feed",), [{"feed": f, "last_bar": at} for f, at in latest.items()],
            only_if=lambda excluded: table.c.last_bar < excluded.last_bar)


def beat(conn: Connection, at: datetime) -> None:
    """Record that the process is alive at ``at`` (never moving the heartbeat back); the first heartbeat
    records the process as running."""
    table = table_of(BotState)
    row = conn.execute(sa.select(table.c.heartbeat_at, table.c.updated_at).where(table.c.id == "main")).first()
    if row is None:
        conn.execute(sa.insert(table).values(id="main", status="running", heartbeat_at=at, updated_at=at))
        return
    heartbeat, updated = row
    conn.execute(sa.update(table).where(table.c.id == "main").values(
        heartbeat_at=at if heartbeat is None else max(heartbeat, at),
        updated_at=at if updated is None else max(updated, at)))
