"""The :class:`StateStore`: opens the state (bringing its schema to the current revision), writes runtime steps
and the operator's commands, and reads everything back (see :mod:`pipeline.state`). What a step wrote comes
back as the frozen entities it was written as (``Order``, ``Fill``, ``Position``, ``Trade``, ledgers, equity,
breaker events): rows are converted here, at the store's edge."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import class_mapper
from sqlmodel import Session, SQLModel, col, select

from pipeline.clock import Clock, SystemClock
from pipeline.domain.trading import Fill, Order, OrderStatus, Position, Trade
from pipeline.domain.values import DecimalText, Entity, UTCDateTime, as_money, as_utc
from pipeline.state.connection import open_engine, writer
from pipeline.state.errors import ReadOnlyStateError, StateError
from pipeline.state.records import BreakerRecord, EquityRecord, LedgerRecord, StepRecord, StepResult
from pipeline.state.schema import open_schema, stored_version
from pipeline.state.tables import (
    BotState,
    BreakerEventRow,
    ControlCommand,
    EquityRow,
    FeedCursor,
    FillRow,
    LedgerRow,
    ModelDeployment,
    OrderRow,
    PositionRow,
    RuntimeEvent,
    TradeRow,
)
from pipeline.state.types import BOT_STATUSES, COMMAND_SOURCES, COMMANDS
from pipeline.state.writes import beat, write_step


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
                as_money(name, value)
            elif isinstance(column.type, UTCDateTime):
                as_utc(name, value)


_E = TypeVar("_E", bound=Entity)


def _as(kind: type[_E], rows: Iterable[Any]) -> list[_E]:
    """Stored rows as the frozen entities they were written as (validated again on the way out)."""
    return [kind.model_validate(row, from_attributes=True) for row in rows]


class StateStore:
    """The runtime's state in SQLite (WAL) or PostgreSQL; see the module documentation for its guarantees.

    ``StateStore(url)`` opens the database at ``url`` (a SQLAlchemy URL; ``postgresql://`` uses psycopg 3);
    when ``create`` is true it creates the tables of an empty database and upgrades an older one in place
    (:mod:`pipeline.state.schema`). Times the store stamps itself
    (command creation, status changes) come from ``clock``.
    """

    def __init__(self, url: str, create: bool = True, *, read_only: bool = False, clock: Clock | None = None):
        if read_only and create:
            raise ValueError("a read-only state store cannot create the schema: pass create=False")
        self.url = make_url(url).render_as_string(hide_password=True)
        """The database URL, with any password masked."""
        self._read_only = read_only
        self._clock: Clock = clock or SystemClock()
        self.engine: Engine = open_engine(url, read_only)
        self._writer = writer(self.engine)
        try:
            open_schema(self.engine, self._writer, self.url, create=create, read_only=read_only)
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

    def schema_version(self) -> int:
        """The schema version of the database (the number of its Alembic revision)."""
        with self.engine.connect() as conn:
            version = stored_version(conn)
        if version is None:
            raise StateError(f"the state database at {self.url} has no schema revision")
        return version

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
            return write_step(conn, step)

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
        when = self._now() if at is None else as_utc("at", at)
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
        when = as_utc("at", at)
        with self._writer.begin() as conn:
            beat(conn, when)

    # ---- reads

    def cursor(self, feed: str) -> datetime | None:
        """Open time of the last closed bar processed from ``feed``, or None if none was."""
        with self._reading() as session:
            row = session.get(FeedCursor, feed)
            return None if row is None else row.last_bar

    def ledgers(self) -> dict[str, LedgerRecord]:
        """Every sleeve's ledger, by sleeve."""
        with self._reading() as session:
            rows = session.exec(select(LedgerRow).order_by(col(LedgerRow.sleeve)))
            return {ledger.sleeve: ledger for ledger in _as(LedgerRecord, rows)}

    def positions(self) -> list[Position]:
        """Every position, by sleeve then symbol."""
        with self._reading() as session:
            query = select(PositionRow).order_by(col(PositionRow.sleeve), col(PositionRow.symbol))
            return _as(Position, session.exec(query))

    def orders(self, status: set[str] | None = None, *, ids: Collection[str] | None = None) -> list[Order]:
        """Orders (only those with a status in ``status``, and a client order id in ``ids``, when given), oldest
        first."""
        known = {s.value for s in OrderStatus}
        if status is not None and not status <= known:
            raise ValueError(f"unknown order status {sorted(status - known)}: use {sorted(known)}")
        with self._reading() as session:
            query = select(OrderRow).order_by(col(OrderRow.created_at), col(OrderRow.client_order_id))
            if status is not None:
                query = query.where(col(OrderRow.status).in_(sorted(OrderStatus(s).value for s in status)))
            if ids is not None:
                query = query.where(col(OrderRow.client_order_id).in_(sorted(ids)))
            return _as(Order, session.exec(query))

    def fills(self, since: datetime | None = None, *, ids: Collection[str] | None = None,
              orders: Collection[str] | None = None) -> list[Fill]:
        """Fills (those at or after ``since``, with a fill id in ``ids``, and of the orders with a client order id in
        ``orders``, when given), in time order."""
        with self._reading() as session:
            query = select(FillRow).order_by(col(FillRow.at), col(FillRow.id))
            if since is not None:
                query = query.where(col(FillRow.at) >= as_utc("since", since))
            if ids is not None:
                query = query.where(col(FillRow.fill_id).in_(sorted(ids)))
            if orders is not None:
                query = query.where(col(FillRow.client_order_id).in_(sorted(orders)))
            return _as(Fill, session.exec(query))

    def known_fill_ids(self) -> set[str]:
        """The venue fill ids already stored (a fill with one of these ids is never applied again)."""
        with self._reading() as session:
            return set(session.exec(select(FillRow.fill_id)))

    def trades(self) -> list[Trade]:
        """Closed trades in exit-time order."""
        with self._reading() as session:
            return _as(Trade, session.exec(select(TradeRow).order_by(col(TradeRow.exit_time), col(TradeRow.id))))

    def equity(self, sleeve: str | None = None) -> list[EquityRecord]:
        """Equity points (of one sleeve, or ``"portfolio"``, when given) in time order."""
        with self._reading() as session:
            query = select(EquityRow).order_by(col(EquityRow.at), col(EquityRow.sleeve))
            if sleeve is not None:
                query = query.where(col(EquityRow.sleeve) == sleeve)
            return _as(EquityRecord, session.exec(query))

    def breaker_events(self) -> list[BreakerRecord]:
        """Breaker events in time order."""
        with self._reading() as session:
            query = select(BreakerEventRow).order_by(col(BreakerEventRow.at), col(BreakerEventRow.id))
            return _as(BreakerRecord, session.exec(query))

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
        when = as_utc("at", at)
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
        when = self._now() if activated_at is None else as_utc("activated_at", activated_at)
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
        when = self._now() if at is None else as_utc("at", at)
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
                query = query.where(col(RuntimeEvent.at) >= as_utc("since", since))
            return list(session.exec(query))

    def _now(self) -> datetime:
        return as_utc("clock", self._clock.now().to_pydatetime())
