"""The runtime's persistent state: SQLModel tables and the store that reads and writes them.

The state lives in SQLite (WAL mode, the default: ``<data_dir>/state/tradeforge.db``) or in PostgreSQL (a
``postgresql://`` URL). Both backends behave the same:

* **Money and quantities are exact.** They are stored as text and come back as the same ``Decimal`` (digits,
  exponent and trailing zeros included); a float is refused with a ``TypeError`` naming the field.
* **Time is UTC.** Every datetime must be tz-aware; it is stored in UTC and read back as an aware UTC datetime.
  A naive one is refused with a ``ValueError`` naming the field.
* **Every state change is one transaction.** :meth:`StateStore.apply_step` writes a whole step (orders, fills,
  positions, trades, ledgers, breaker events, equity, feed cursors, heartbeat) or nothing of it. Writers are
  serialised: on SQLite by ``BEGIN IMMEDIATE``, on PostgreSQL by a transaction-level advisory lock per schema,
  so a read-then-write inside a transaction never races another writer. Readers never wait for writers.
* **Restarts are boring.** Re-applying a step changes nothing: a fill whose venue ``fill_id`` is stored is
  counted as a duplicate and skipped, trades, breaker events and equity rows are inserted only if absent, an
  order's status only moves forward (``new`` → ``partially_filled`` → ``filled``; ``rejected`` and
  ``canceled`` are final), positions and ledgers are replaced by the step's snapshot, and a feed cursor never
  moves backwards.
* **Fills do not reference orders by foreign key.** A fill is a fact reported by the venue; it is kept even
  when its order is unknown to the store (an order placed before a crash, or placed at the venue by hand), so
  ``FillRow.client_order_id`` is indexed but not constrained.

The database carries a ``schema_version`` row (:data:`SCHEMA_VERSION`); opening a database written by a
newer tradeforge raises :class:`SchemaVersionError` instead of touching it, and an older one is upgraded in
place when opened for writing (one transaction; nothing stored is lost). :meth:`StateStore.read_only` opens
an existing state for the dashboard: every write is refused (by the store, by the session, and by the database
connection itself).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import class_mapper
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, Session, SQLModel, col, select

from pipeline.clock import Clock, SystemClock

SCHEMA_VERSION: Final = 3
"""The version of the tables below; a database with a newer version is not opened. Older databases are
upgraded in place: version 1 gets the tables version 2 introduced (``runtime_events``); versions 1 and 2 get
the ``action`` of breaker events (version 3: a breaker event is a trip or a release; stored events are
trips) and their natural key becomes (sleeve, time, rule, action). Nothing stored changes otherwise."""

BOT_STATUSES: Final = frozenset({"running", "paused", "stopped"})
ORDER_SIDES: Final = frozenset({"buy", "sell"})
TRADE_SIDES: Final = frozenset({"long", "short"})
ORDER_STATUSES: Final = frozenset({"new", "partially_filled", "filled", "rejected", "canceled"})
FINAL_ORDER_STATUSES: Final = frozenset({"filled", "rejected", "canceled"})
COMMANDS: Final = frozenset({"pause", "resume", "flatten", "reset_breaker", "stop"})
BREAKER_ACTIONS: Final = frozenset({"trip", "release"})
COMMAND_SOURCES: Final = frozenset({"cli", "dashboard", "telegram"})
PORTFOLIO: Final = "portfolio"
"""The sleeve name of portfolio-level breaker events and equity rows."""

_ORDER_RANK: Final = {"new": 0, "partially_filled": 1, "filled": 2, "rejected": 2, "canceled": 2}
_ADVISORY_LOCK_CLASS: Final = 0x7466  # "tf": the first key of the per-schema writer lock on PostgreSQL
_WRITE_OPTION: Final = "tradeforge_write"


class StateError(RuntimeError):
    """The state database cannot be used as asked; the message says why."""


class SchemaVersionError(StateError):
    """The database was written by a newer (or unknown) schema version."""


class ReadOnlyStateError(StateError):
    """A write was attempted through a store opened read-only."""


# --------------------------------------------------------------------------------------------------- types


class DecimalText(sa.types.TypeDecorator[Decimal]):
    """An exact ``Decimal`` stored as its text (never through a float)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"an exact money column got {type(value).__name__} {value!r}; pass a Decimal")
        return str(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A tz-aware datetime stored in UTC and read back as an aware UTC datetime on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = _as_utc("datetime column", value)
        # SQLite has no time zone type: it stores the UTC wall time, which sorts chronologically.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -------------------------------------------------------------------------------------------------- tables


class SchemaVersion(SQLModel, table=True):
    """The single row saying which version of these tables the database holds."""

    __tablename__ = "schema_version"
    id: int = Field(default=1, primary_key=True)
    version: int


class BotState(SQLModel, table=True):
    """The trading process: its mode, status (running, paused, stopped) and last heartbeat."""

    __tablename__ = "bot_state"
    id: str = Field(default="main", primary_key=True)
    mode: str = ""
    status: str = "stopped"
    status_reason: str = ""
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    portfolio_hash: str = ""


class FeedCursor(SQLModel, table=True):
    """The open time of the last closed bar processed from one feed (e.g. ``binance:BTC/USDT:1m``)."""

    __tablename__ = "feed_cursors"
    feed: str = Field(primary_key=True)
    last_bar: datetime = Field(sa_type=UTCDateTime)


class OrderRow(SQLModel, table=True):
    """An order, keyed by its deterministic client order id."""

    __tablename__ = "orders"
    client_order_id: str = Field(primary_key=True)
    sleeve: str = Field(index=True)
    symbol: str
    side: str
    qty: Decimal = Field(sa_type=DecimalText)
    price: Decimal | None = Field(default=None, sa_type=DecimalText)
    status: str = Field(index=True)
    reason: str = ""
    venue_order_id: str | None = None
    bar: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class FillRow(SQLModel, table=True):
    """A fill reported by the venue; ``fill_id`` (the venue's id) is unique: a fill is never applied twice."""

    __tablename__ = "fills"
    id: int | None = Field(default=None, primary_key=True)
    fill_id: str = Field(unique=True)
    client_order_id: str = Field(index=True)
    sleeve: str
    symbol: str
    side: str
    qty: Decimal = Field(sa_type=DecimalText)
    price: Decimal = Field(sa_type=DecimalText)
    fee: Decimal = Field(sa_type=DecimalText)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    reason: str = ""


class PositionRow(SQLModel, table=True):
    """A sleeve's position in one symbol."""

    __tablename__ = "positions"
    sleeve: str = Field(primary_key=True)
    symbol: str = Field(primary_key=True)
    qty: Decimal = Field(sa_type=DecimalText)
    avg_price: Decimal = Field(sa_type=DecimalText)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class TradeRow(SQLModel, table=True):
    """A closed round trip; one per (sleeve, entry time, exit time)."""

    __tablename__ = "trades"
    __table_args__ = (sa.UniqueConstraint("sleeve", "entry_time", "exit_time", name="uq_trades_sleeve_times"),)
    id: int | None = Field(default=None, primary_key=True)
    sleeve: str
    symbol: str
    side: str
    qty: Decimal = Field(sa_type=DecimalText)
    entry_price: Decimal = Field(sa_type=DecimalText)
    exit_price: Decimal = Field(sa_type=DecimalText)
    pnl: Decimal = Field(sa_type=DecimalText)
    fees: Decimal = Field(sa_type=DecimalText)
    entry_time: datetime = Field(sa_type=UTCDateTime)
    exit_time: datetime = Field(sa_type=UTCDateTime)
    entry_reason: str = ""
    exit_reason: str = ""
    model_version: str | None = None


class LedgerRow(SQLModel, table=True):
    """A sleeve's ledger: cash, units, equity, tripped breakers and the engine's opaque state (JSON text)."""

    __tablename__ = "ledgers"
    sleeve: str = Field(primary_key=True)
    cash: Decimal = Field(sa_type=DecimalText)
    units: Decimal = Field(sa_type=DecimalText)
    equity: Decimal = Field(sa_type=DecimalText)
    tripped: str = ""
    kernel_state: str = Field(sa_type=sa.Text)
    bars_seen: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)


class BreakerEventRow(SQLModel, table=True):
    """A circuit breaker that tripped or was released (``action``); ``sleeve`` is ``"portfolio"`` for
    portfolio-level breakers."""

    __tablename__ = "breaker_events"
    __table_args__ = (
        sa.UniqueConstraint("sleeve", "at", "rule", "action", name="uq_breaker_events_sleeve_at_rule_action"),
    )
    id: int | None = Field(default=None, primary_key=True)
    sleeve: str
    at: datetime = Field(sa_type=UTCDateTime)
    rule: str
    value: float
    threshold: float
    action: str = Field(default="trip", sa_column_kwargs={"server_default": "trip"})


class EquityRow(SQLModel, table=True):
    """Equity, cash and position value of a sleeve (or ``"portfolio"``) at one time."""

    __tablename__ = "equity"
    __table_args__ = (
        sa.UniqueConstraint("at", "sleeve", name="uq_equity_at_sleeve"),
        sa.Index("ix_equity_sleeve_at", "sleeve", "at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    sleeve: str
    equity: Decimal = Field(sa_type=DecimalText)
    cash: Decimal = Field(sa_type=DecimalText)
    position_value: Decimal = Field(sa_type=DecimalText)


class ControlCommand(SQLModel, table=True):
    """An operator's command to the trading process, acknowledged once carried out."""

    __tablename__ = "control_commands"
    id: int | None = Field(default=None, primary_key=True)
    command: str
    sleeve: str | None = None
    source: str
    created_at: datetime = Field(sa_type=UTCDateTime)
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    result: str | None = None


class ModelDeployment(SQLModel, table=True):
    """A model version put to work for a sleeve."""

    __tablename__ = "model_deployments"
    id: int | None = Field(default=None, primary_key=True)
    sleeve: str = Field(index=True)
    model_name: str
    version: str
    run_id: str
    activated_at: datetime = Field(sa_type=UTCDateTime)
    reason: str = ""


class RuntimeEvent(SQLModel, table=True):
    """Something the runtime found or did outside the bar loop: what startup recovered and reconciled with the
    venue (``recovery``), stale data (``stale``) and its end (``fresh``); ``detail`` says what, in words."""

    __tablename__ = "runtime_events"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    kind: str
    sleeve: str | None = None
    detail: str


TABLES: Final[tuple[type[SQLModel], ...]] = (
    SchemaVersion, BotState, FeedCursor, OrderRow, FillRow, PositionRow, TradeRow, LedgerRow, BreakerEventRow,
    EquityRow, ControlCommand, ModelDeployment, RuntimeEvent,
)
_UPGRADES: Final = {1, 2}
"""Stored versions that this version upgrades in place (see :data:`SCHEMA_VERSION`)."""


# ------------------------------------------------------------------------------------------------- records


def _as_utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a tz-aware datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a tz-aware datetime (UTC), got the naive datetime {value.isoformat()}")
    utc = value.astimezone(UTC)
    # A plain datetime (not a pandas Timestamp or other subclass) so that every driver adapts it the same way.
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)


def _as_money(name: str, value: object) -> Decimal:
    if isinstance(value, float):
        raise TypeError(f"{name} must be an exact Decimal, got the float {value!r} (floats are not exact money)")
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"{name} must be an exact Decimal, got {type(value).__name__} {value!r}")
    money = Decimal(value)
    if not money.is_finite():
        raise ValueError(f"{name} must be a finite Decimal, got {money}")
    return money


def _check_record(record: object, money: Iterable[str] = (), times: Iterable[str] = (),
                  choices: dict[str, frozenset[str]] | None = None) -> None:
    """Validate a record's money (Decimal, nullable when typed so), times (aware, normalised to UTC) and
    enumerated strings; names in errors read ``Record.field``."""
    owner = type(record).__name__
    optional = {f.name for f in dataclasses.fields(record)  # type: ignore[arg-type]
                if isinstance(f.type, str) and f.type.endswith("| None")}
    for name in money:
        value = getattr(record, name)
        if not (value is None and name in optional):
            object.__setattr__(record, name, _as_money(f"{owner}.{name}", value))
    for name in times:
        value = getattr(record, name)
        if not (value is None and name in optional):
            object.__setattr__(record, name, _as_utc(f"{owner}.{name}", value))
    for name, allowed in (choices or {}).items():
        if getattr(record, name) not in allowed:
            raise ValueError(f"{owner}.{name} must be one of {sorted(allowed)}, got {getattr(record, name)!r}")


@dataclass(frozen=True)
class OrderRecord:
    """An order as the runtime knows it now; ``updated_at`` defaults to ``created_at``."""

    client_order_id: str
    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal | None
    status: str
    reason: str
    bar: datetime
    created_at: datetime
    updated_at: datetime | None = None
    venue_order_id: str | None = None

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "price"), ("bar", "created_at", "updated_at"),
                      {"side": ORDER_SIDES, "status": ORDER_STATUSES})
        if self.updated_at is None:
            object.__setattr__(self, "updated_at", self.created_at)


@dataclass(frozen=True)
class FillRecord:
    """A fill as reported by the venue; ``fill_id`` is the venue's id."""

    fill_id: str
    client_order_id: str
    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    at: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "price", "fee"), ("at",), {"side": ORDER_SIDES})


@dataclass(frozen=True)
class PositionRecord:
    """A sleeve's position in a symbol as of ``updated_at``."""

    sleeve: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    updated_at: datetime

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "avg_price"), ("updated_at",))


@dataclass(frozen=True)
class TradeRecord:
    """A closed round trip."""

    sleeve: str
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
    fees: Decimal
    entry_time: datetime
    exit_time: datetime
    entry_reason: str = ""
    exit_reason: str = ""
    model_version: str | None = None

    def __post_init__(self) -> None:
        _check_record(self, ("qty", "entry_price", "exit_price", "pnl", "fees"), ("entry_time", "exit_time"),
                      {"side": TRADE_SIDES})


@dataclass(frozen=True)
class LedgerRecord:
    """A sleeve's ledger as of ``updated_at``; ``tripped`` is a comma list of breaker rules, ``kernel_state``
    the engine's state as JSON text (stored and returned unchanged)."""

    sleeve: str
    cash: Decimal
    units: Decimal
    equity: Decimal
    tripped: str
    kernel_state: str
    bars_seen: int
    updated_at: datetime

    def __post_init__(self) -> None:
        _check_record(self, ("cash", "units", "equity"), ("updated_at",))


@dataclass(frozen=True)
class BreakerRecord:
    """A circuit breaker that tripped (``action="trip"``) or was released (``"release"``) at ``at``
    (``sleeve`` = ``"portfolio"`` for the portfolio's)."""

    sleeve: str
    at: datetime
    rule: str
    value: float
    threshold: float
    action: str = "trip"

    def __post_init__(self) -> None:
        _check_record(self, (), ("at",))
        if self.action not in BREAKER_ACTIONS:
            raise ValueError(f"BreakerRecord.action must be one of {', '.join(sorted(BREAKER_ACTIONS))}, "
                             f"got {self.action!r}")
        for name in ("value", "threshold"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, float | int) or math.isnan(number):
                raise ValueError(f"BreakerRecord.{name} must be a number, got {number!r}")


@dataclass(frozen=True)
class EquityRecord:
    """Equity, cash and position value of a sleeve (or ``"portfolio"``) at ``at``."""

    at: datetime
    sleeve: str
    equity: Decimal
    cash: Decimal
    position_value: Decimal

    def __post_init__(self) -> None:
        _check_record(self, ("equity", "cash", "position_value"), ("at",))


@dataclass(frozen=True)
class CursorRecord:
    """The open time of the last closed bar processed from ``feed``."""

    feed: str
    last_bar: datetime

    def __post_init__(self) -> None:
        _check_record(self, (), ("last_bar",))


_STEP_ITEMS: Final = {
    "orders": OrderRecord, "fills": FillRecord, "positions": PositionRecord, "trades": TradeRecord,
    "ledgers": LedgerRecord, "breakers": BreakerRecord, "equity": EquityRecord, "cursors": CursorRecord,
}


@dataclass(frozen=True)
class StepRecord:
    """Everything one runtime step changed, written by :meth:`StateStore.apply_step` in one transaction."""

    orders: list[OrderRecord] = field(default_factory=list)
    fills: list[FillRecord] = field(default_factory=list)
    positions: list[PositionRecord] = field(default_factory=list)
    trades: list[TradeRecord] = field(default_factory=list)
    ledgers: list[LedgerRecord] = field(default_factory=list)
    breakers: list[BreakerRecord] = field(default_factory=list)
    equity: list[EquityRecord] = field(default_factory=list)
    cursors: list[CursorRecord] = field(default_factory=list)
    heartbeat_at: datetime | None = None

    def __post_init__(self) -> None:
        for name, kind in _STEP_ITEMS.items():
            for i, item in enumerate(getattr(self, name)):
                if not isinstance(item, kind):
                    raise TypeError(f"StepRecord.{name}[{i}] must be a {kind.__name__}, got {type(item).__name__}")
        _check_record(self, (), ("heartbeat_at",))


@dataclass(frozen=True)
class StepResult:
    """What :meth:`StateStore.apply_step` wrote; a step applied twice reports only duplicates the second time."""

    new_fills: int = 0
    duplicate_fills: int = 0
    new_orders: int = 0
    updated_orders: int = 0
    new_trades: int = 0
    new_equity: int = 0
    new_breaker_events: int = 0


# --------------------------------------------------------------------------------------------------- store


def _engine_url(url: str, read_only: bool) -> URL:
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


def _install_connection_rules(engine: Engine, read_only: bool) -> None:
    """SQLite: WAL, NORMAL sync, 5 s busy timeout, foreign keys; write transactions ``BEGIN IMMEDIATE``.
    PostgreSQL: write transactions take the schema's advisory lock."""
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # the store issues BEGIN itself (below)
            cursor = dbapi_connection.cursor()
            try:
                if not read_only:
                    cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=5000")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    elif engine.dialect.name == "postgresql":

        @event.listens_for(engine, "begin")
        def _postgres_begin(conn: Connection) -> None:
            if conn.get_execution_options().get(_WRITE_OPTION, False):
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(current_schema()))"),
                             {"k": _ADVISORY_LOCK_CLASS})


def _check_rows(session: OrmSession, read_only: bool, url: str) -> None:
    """Refuse any write through a read-only session; refuse float money and naive datetimes in rows."""
    if read_only and (session.new or session.dirty or session.deleted):
        raise ReadOnlyStateError(f"the state store at {url} was opened read-only; it refuses writes")
    for row in (*session.new, *session.dirty):
        if not isinstance(row, SQLModel):
            continue
        for column in class_mapper(type(row)).columns:
            value = getattr(row, column.key, None)
            if value is None:
                continue
            name = f"{type(row).__name__}.{column.key}"
            if isinstance(column.type, DecimalText):
                _as_money(name, value)
            elif isinstance(column.type, UTCDateTime):
                _as_utc(name, value)


class StateStore:
    """The runtime's state in SQLite (WAL) or PostgreSQL; see the module documentation for its guarantees.

    ``StateStore(url)`` opens the database at ``url`` (a SQLAlchemy URL; ``postgresql://`` uses psycopg 3),
    creating the tables and the schema version row when ``create`` is true. Times the store stamps itself
    (command creation, status changes) come from ``clock``.
    """

    def __init__(self, url: str, create: bool = True, *, read_only: bool = False, clock: Clock | None = None):
        if read_only and create:
            raise ValueError("a read-only state store cannot create the schema: pass create=False")
        self.url = make_url(url).render_as_string(hide_password=True)
        """The database URL, with any password masked."""
        self._read_only = read_only
        self._clock: Clock = clock or SystemClock()
        self.engine: Engine = sa.create_engine(
            _engine_url(url, read_only),
            execution_options={"postgresql_readonly": True} if read_only else {},
        )
        _install_connection_rules(self.engine, read_only)
        self._writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        try:
            self._open_schema(create)
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def read_only(cls, url: str, *, clock: Clock | None = None) -> StateStore:
        """Open existing state without creating anything; every write is refused (:class:`ReadOnlyStateError`)."""
        return cls(url, create=False, read_only=True, clock=clock)

    @property
    def is_read_only(self) -> bool:
        return self._read_only

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- schema

    def _stored_version(self) -> int | None:
        if not sa.inspect(self.engine).has_table(SchemaVersion.__tablename__):
            return None
        with self._session() as session:
            row = session.get(SchemaVersion, 1)
            return None if row is None else row.version

    def _open_schema(self, create: bool) -> None:
        version = self._stored_version()
        if version in _UPGRADES and create and not self._read_only:
            with self._writer.begin() as conn:
                SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in TABLES])  # type: ignore[attr-defined]
                _add_breaker_actions(conn)
                conn.execute(sa.update(SchemaVersion.__table__).values(version=SCHEMA_VERSION))  # type: ignore[attr-defined]
            version = SCHEMA_VERSION
        if version is not None and version != SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise SchemaVersionError(
                f"the state database at {self.url} has schema version {version}, this tradeforge reads version "
                f"{SCHEMA_VERSION}" + ("; upgrade tradeforge to open it" if newer else "; it cannot be migrated")
            )
        if version is not None:
            return
        if not create:
            raise StateError(f"no tradeforge state (schema_version table) at {self.url}; open it with create=True")
        with self._writer.begin() as conn:
            SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in TABLES])  # type: ignore[attr-defined]
            if conn.execute(sa.select(sa.func.count()).select_from(SchemaVersion.__table__)).scalar_one() == 0:  # type: ignore[attr-defined]
                conn.execute(sa.insert(SchemaVersion.__table__).values(id=1, version=SCHEMA_VERSION))  # type: ignore[attr-defined]

    def schema_version(self) -> int:
        """The schema version stored in the database."""
        with self._session() as session:
            row = session.get(SchemaVersion, 1)
            if row is None:
                raise StateError(f"the state database at {self.url} has no schema version row")
            return row.version

    # ---- sessions

    def _session(self, write: bool = False) -> Session:
        session = Session(self._writer if write else self.engine, expire_on_commit=False)
        read_only, url = self._read_only, self.url
        event.listen(session, "before_flush", lambda s, _ctx, _objs: _check_rows(s, read_only, url))
        return session

    def _refuse_if_read_only(self, what: str) -> None:
        if self._read_only:
            raise ReadOnlyStateError(f"the state store at {self.url} was opened read-only; {what} is a write")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose changes commit together when the block ends, or roll back entirely on an error.

        On a read-only store the session reads, and any write in it raises :class:`ReadOnlyStateError`.
        """
        with self._session(write=not self._read_only) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with self._session() as session:
            yield session

    # ---- the step

    def apply_step(self, step: StepRecord) -> StepResult:
        """Write everything one runtime step changed, in one transaction, idempotently (module documentation).

        Raises ``ValueError`` when an order record contradicts the stored order of the same client order id
        (another sleeve, symbol, side, quantity or bar); nothing of the step is then stored.
        """
        self._refuse_if_read_only("apply_step")
        with self._writer.begin() as conn:
            new_orders, updated_orders = _write_orders(conn, step.orders)
            new_fills, duplicate_fills = _write_fills(conn, step.fills)
            _upsert(conn, _table(PositionRow), ("sleeve", "symbol"), [_fields(r) for r in step.positions])
            new_trades = _absent(conn, _table(TradeRow), ("sleeve", "entry_time", "exit_time"), step.trades)
            _upsert(conn, _table(LedgerRow), ("sleeve",), [_fields(r) for r in step.ledgers])
            new_breakers = _absent(conn, _table(BreakerEventRow), ("sleeve", "at", "rule", "action"),
                                   step.breakers)
            new_equity = _absent(conn, _table(EquityRow), ("at", "sleeve"), step.equity)
            _move_cursors(conn, step.cursors)
            if step.heartbeat_at is not None:
                _beat(conn, step.heartbeat_at)
        return StepResult(new_fills=new_fills, duplicate_fills=duplicate_fills, new_orders=new_orders,
                          updated_orders=updated_orders, new_trades=new_trades, new_equity=new_equity,
                          new_breaker_events=new_breakers)

    # ---- bot

    def bot_state(self) -> BotState | None:
        """The trading process's row, or None before it first ran."""
        with self._reading() as session:
            return session.get(BotState, "main")

    def set_status(self, status: str, reason: str, mode: str | None = None, *, at: datetime | None = None,
                   portfolio_hash: str | None = None) -> BotState:
        """Record the process's status (``running``, ``paused`` or ``stopped``) and why; a change to
        ``running`` stamps ``started_at``. ``mode`` and ``portfolio_hash`` are kept when not given."""
        self._refuse_if_read_only("set_status")
        if status not in BOT_STATUSES:
            raise ValueError(f"status must be one of {sorted(BOT_STATUSES)}, got {status!r}")
        when = self._now() if at is None else _as_utc("at", at)
        with self.transaction() as session:
            row = session.get(BotState, "main")
            if row is None:
                row = BotState()
                session.add(row)
            if status == "running" and (row.status != "running" or row.started_at is None):
                row.started_at = when
            row.status, row.status_reason, row.updated_at = status, reason, when
            if mode is not None:
                row.mode = mode
            if portfolio_hash is not None:
                row.portfolio_hash = portfolio_hash
            session.flush()
            return row

    def heartbeat(self, at: datetime) -> None:
        """Record that the process is alive at ``at`` (a heartbeat never moves back in time); the first
        heartbeat of a new database records the process as running."""
        self._refuse_if_read_only("heartbeat")
        when = _as_utc("at", at)
        with self._writer.begin() as conn:
            _beat(conn, when)

    # ---- reads

    def cursor(self, feed: str) -> datetime | None:
        """Open time of the last closed bar processed from ``feed``, or None if none was."""
        with self._reading() as session:
            row = session.get(FeedCursor, feed)
            return None if row is None else row.last_bar

    def ledgers(self) -> dict[str, LedgerRow]:
        """Every sleeve's ledger, by sleeve."""
        with self._reading() as session:
            return {row.sleeve: row for row in session.exec(select(LedgerRow).order_by(col(LedgerRow.sleeve)))}

    def positions(self) -> list[PositionRow]:
        """Every position, by sleeve then symbol."""
        with self._reading() as session:
            query = select(PositionRow).order_by(col(PositionRow.sleeve), col(PositionRow.symbol))
            return list(session.exec(query))

    def orders(self, status: set[str] | None = None) -> list[OrderRow]:
        """Orders (only those with a status in ``status`` when given), oldest first."""
        if status is not None and not status <= ORDER_STATUSES:
            raise ValueError(f"unknown order status {sorted(status - ORDER_STATUSES)}: use {sorted(ORDER_STATUSES)}")
        with self._reading() as session:
            query = select(OrderRow).order_by(col(OrderRow.created_at), col(OrderRow.client_order_id))
            if status is not None:
                query = query.where(col(OrderRow.status).in_(sorted(status)))
            return list(session.exec(query))

    def fills(self, since: datetime | None = None) -> list[FillRow]:
        """Fills (those at or after ``since`` when given), in time order."""
        with self._reading() as session:
            query = select(FillRow).order_by(col(FillRow.at), col(FillRow.id))
            if since is not None:
                query = query.where(col(FillRow.at) >= _as_utc("since", since))
            return list(session.exec(query))

    def known_fill_ids(self) -> set[str]:
        """The venue fill ids already stored (a fill with one of these ids is never applied again)."""
        with self._reading() as session:
            return set(session.exec(select(FillRow.fill_id)))

    def trades(self) -> list[TradeRow]:
        """Closed trades in exit-time order."""
        with self._reading() as session:
            return list(session.exec(select(TradeRow).order_by(col(TradeRow.exit_time), col(TradeRow.id))))

    def equity(self, sleeve: str | None = None) -> list[EquityRow]:
        """Equity rows (of one sleeve, or ``"portfolio"``, when given) in time order."""
        with self._reading() as session:
            query = select(EquityRow).order_by(col(EquityRow.at), col(EquityRow.sleeve))
            if sleeve is not None:
                query = query.where(col(EquityRow.sleeve) == sleeve)
            return list(session.exec(query))

    def breaker_events(self) -> list[BreakerEventRow]:
        """Breaker events in time order."""
        with self._reading() as session:
            query = select(BreakerEventRow).order_by(col(BreakerEventRow.at), col(BreakerEventRow.id))
            return list(session.exec(query))

    # ---- commands

    def add_command(self, command: str, source: str, sleeve: str | None = None) -> int:
        """Queue an operator command for the trading process; returns its id."""
        self._refuse_if_read_only("add_command")
        if command not in COMMANDS:
            raise ValueError(f"command {command!r} is not known: use one of {sorted(COMMANDS)}")
        if source not in COMMAND_SOURCES:
            raise ValueError(f"command source {source!r} is not known: use one of {sorted(COMMAND_SOURCES)}")
        with self.transaction() as session:
            row = ControlCommand(command=command, source=source, sleeve=sleeve, created_at=self._now())
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    def pending_commands(self) -> list[ControlCommand]:
        """Commands not yet acknowledged, oldest first."""
        with self._reading() as session:
            query = (select(ControlCommand).where(col(ControlCommand.acknowledged_at).is_(None))
                     .order_by(col(ControlCommand.created_at), col(ControlCommand.id)))
            return list(session.exec(query))

    def acknowledge(self, command_id: int, result: str, at: datetime) -> bool:
        """Mark a command carried out with its result; False (and nothing changed) if it already was.

        An unknown id raises ``ValueError``.
        """
        self._refuse_if_read_only("acknowledge")
        when = _as_utc("at", at)
        with self.transaction() as session:
            row = session.get(ControlCommand, command_id)
            if row is None:
                raise ValueError(f"no control command with id {command_id}")
            if row.acknowledged_at is not None:
                return False
            row.acknowledged_at, row.result = when, result
            return True

    # ---- model deployments

    def record_deployment(self, sleeve: str, model_name: str, version: str, run_id: str, reason: str,
                          activated_at: datetime | None = None) -> int:
        """Record that a model version went to work for a sleeve (now, unless ``activated_at``); returns its id."""
        self._refuse_if_read_only("record_deployment")
        when = self._now() if activated_at is None else _as_utc("activated_at", activated_at)
        with self.transaction() as session:
            row = ModelDeployment(sleeve=sleeve, model_name=model_name, version=version, run_id=run_id,
                                  activated_at=when, reason=reason)
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    def deployments(self, sleeve: str | None = None) -> list[ModelDeployment]:
        """Model deployments (of one sleeve when given), oldest first; the last one of a sleeve is active."""
        with self._reading() as session:
            query = select(ModelDeployment).order_by(col(ModelDeployment.activated_at), col(ModelDeployment.id))
            if sleeve is not None:
                query = query.where(col(ModelDeployment.sleeve) == sleeve)
            return list(session.exec(query))

    # ---- runtime events

    def record_event(self, kind: str, detail: str, sleeve: str | None = None, at: datetime | None = None) -> int:
        """Record a runtime event (see :class:`RuntimeEvent`); returns its id."""
        self._refuse_if_read_only("record_event")
        when = self._now() if at is None else _as_utc("at", at)
        with self.transaction() as session:
            row = RuntimeEvent(at=when, kind=kind, sleeve=sleeve, detail=detail)
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    def events(self, kind: str | None = None, since: datetime | None = None) -> list[RuntimeEvent]:
        """Runtime events (of one kind, and from ``since`` on, when given), oldest first."""
        with self._reading() as session:
            query = select(RuntimeEvent).order_by(col(RuntimeEvent.at), col(RuntimeEvent.id))
            if kind is not None:
                query = query.where(col(RuntimeEvent.kind) == kind)
            if since is not None:
                query = query.where(col(RuntimeEvent.at) >= _as_utc("since", since))
            return list(session.exec(query))

    def _now(self) -> datetime:
        return _as_utc("clock", self._clock.now().to_pydatetime())


# ------------------------------------------------------------------------------------------- step writers


def _fields(record: object) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}  # type: ignore[arg-type]


_IDENTITY: Final = ("sleeve", "symbol", "side", "qty", "bar")
_CHUNK: Final = 500  # keys per IN (...) lookup: well inside every backend's bound-parameter limit
Key = tuple[Any, ...]


def _table(model: type[SQLModel]) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


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


def _write_orders(conn: Connection, records: Sequence[OrderRecord]) -> tuple[int, int]:
    table = _table(OrderRow)
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
        if _ORDER_RANK[record.status] > _ORDER_RANK[row["status"]]:
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


def _write_fills(conn: Connection, records: Sequence[FillRecord]) -> tuple[int, int]:
    fresh = _absent(conn, _table(FillRow), ("fill_id",), records)
    return fresh, len(records) - fresh


def _absent(conn: Connection, table: sa.Table, names: tuple[str, ...], records: Sequence[Any]) -> int:
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
    table = _table(FeedCursor)
    latest: dict[str, datetime] = {}
    for record in records:
        latest[record.feed] = max(latest.get(record.feed, record.last_bar), record.last_bar)
    _upsert(conn, table, ("feed",), [{"feed": f, "last_bar": at} for f, at in latest.items()],
            only_if=lambda excluded: table.c.last_bar < excluded.last_bar)


def _beat(conn: Connection, at: datetime) -> None:
    table = _table(BotState)
    row = conn.execute(sa.select(table.c.heartbeat_at, table.c.updated_at).where(table.c.id == "main")).first()
    if row is None:
        conn.execute(sa.insert(table).values(id="main", status="running", heartbeat_at=at, updated_at=at))
        return
    heartbeat, updated = row
    conn.execute(sa.update(table).where(table.c.id == "main").values(
        heartbeat_at=at if heartbeat is None else max(heartbeat, at),
        updated_at=at if updated is None else max(updated, at)))


def _add_breaker_actions(conn: Connection) -> None:
    """Version 3's breaker events: an ``action`` column (stored events are trips) in the natural key."""
    table = BreakerEventRow.__tablename__
    if "action" in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
        return
    if conn.dialect.name == "sqlite":  # SQLite cannot drop a constraint: the table is rebuilt
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {table}_v2")
        BreakerEventRow.__table__.create(conn)  # type: ignore[attr-defined]
        conn.exec_driver_sql(f"INSERT INTO {table} (id, sleeve, at, rule, value, threshold, action) "
                             f"SELECT id, sleeve, at, rule, value, threshold, 'trip' FROM {table}_v2")
        conn.exec_driver_sql(f"DROP TABLE {table}_v2")
        return
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN action VARCHAR NOT NULL DEFAULT 'trip'")
    conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT uq_breaker_events_sleeve_at_rule")
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT uq_breaker_events_sleeve_at_rule_action "
                         "UNIQUE (sleeve, at, rule, action)")
