"""The errors of the state store: the database cannot be used as asked, is not tradeforge's, is of another schema
version, or was opened read-only."""

from __future__ import annotations

from pipeline.domain import DataError


class StateError(RuntimeError):
    """The state database cannot be used as asked; the message says why."""


class ForeignStoreError(StateError, DataError):
    """The database URL names something that is not tradeforge's state (another application's tables, a file
    that is not a database); it was refused before anything was written. Bad input, so also a ``DataError``."""


class SchemaVersionError(StateError, DataError):
    """The database was written by a newer (or unknown) schema version; it was left untouched. A ``DataError`` too:
    every command reports it on one line."""


class ReadOnlyStateError(StateError):
    """A write was attempted through a store opened read-only."""
