"""The errors of the state store: the database cannot be used as asked, is of another schema version, or was
opened read-only."""

from __future__ import annotations


class StateError(RuntimeError):
    """The state database cannot be used as asked; the message says why."""


class SchemaVersionError(StateError):
    """The database was written by a newer (or unknown) schema version."""


class ReadOnlyStateError(StateError):
    """A write was attempted through a store opened read-only."""
