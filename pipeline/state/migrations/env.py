"""Alembic's environment for the state's tables: migrations run on the connection that
:mod:`pipeline.state.schema` passes in ``config.attributes["connection"]``, inside the store's write
transaction (``BEGIN IMMEDIATE`` on SQLite, the schema's advisory lock on PostgreSQL), so an upgrade is one
transaction that other writers wait for."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pipeline.state.tables import METADATA

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or not isinstance(connection, Connection):
    raise RuntimeError("the state migrations run through pipeline.state.StateStore, on the store's connection")
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
