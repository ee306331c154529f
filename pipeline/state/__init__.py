"""The runtime's persistent state: SQLModel tables, the records a runtime step writes, and the store that
reads and writes them.

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
* **Only its own database is opened.** A database is the state's when it is empty or carries tradeforge's schema
  (its ``schema_version`` table or an Alembic revision of ours); another application's database (its own tables,
  on SQLite or in the PostgreSQL schema of the URL) and a file that is not a SQLite database are refused with
  :class:`ForeignStoreError`, naming the URL and the reason, before anything is written: no table, no version
  row, no switch to WAL, no side file (:mod:`pipeline.state.schema`).
* **The schema is versioned by Alembic** (:mod:`pipeline.state.schema`, :data:`SCHEMA_VERSION`): a database
  written by a newer tradeforge raises :class:`SchemaVersionError` instead of being touched, and an older one
  is upgraded in place when opened for writing (one transaction; nothing stored is lost).
  :meth:`StateStore.read_only` opens an existing state for the dashboard: every write is refused (by the
  store, by the session, and by the database connection itself).

Where things live: ``types`` (the enumerated values), ``records`` (what a step writes: the trading entities of
:mod:`pipeline.domain.trading` and the state's own), ``tables`` (the SQLModel tables, which extend them),
``connection`` (URLs and the connection rules), ``schema`` and ``migrations/`` (Alembic), ``writes`` (the step
writer, SQLAlchemy Core), ``store`` (:class:`StateStore`), and ``backup`` and ``backup_checks`` (backups of the
state, their rotation, and the restore drill that proves they can be used).
"""

from pipeline.state.errors import ForeignStoreError, ReadOnlyStateError, SchemaVersionError, StateError
from pipeline.state.records import (
    BreakerRecord,
    CursorRecord,
    EquityRecord,
    LedgerRecord,
    StepRecord,
    StepResult,
)
from pipeline.state.schema import SCHEMA_VERSION
from pipeline.state.store import StateStore
from pipeline.state.tables import (
    TABLES,
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
    SchemaVersion,
    TradeRow,
)
from pipeline.state.types import BOT_STATUSES, BREAKER_ACTIONS, COMMAND_SOURCES, COMMANDS, PORTFOLIO

__all__ = [
    "BOT_STATUSES", "BREAKER_ACTIONS", "COMMANDS", "COMMAND_SOURCES", "PORTFOLIO", "SCHEMA_VERSION", "TABLES",
    "BotState", "BreakerEventRow", "BreakerRecord", "ControlCommand", "CursorRecord", "EquityRecord", "EquityRow",
    "FeedCursor", "FillRow", "ForeignStoreError", "LedgerRecord", "LedgerRow", "ModelDeployment", "OrderRow",
    "PositionRow", "ReadOnlyStateError", "RuntimeEvent", "SchemaVersion", "SchemaVersionError", "StateError",
    "StateStore", "StepRecord", "StepResult", "TradeRow",
]
