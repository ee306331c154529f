"""Alembic migrations of the state's tables, run by :mod:`pipeline.state.schema` on the store's own write
connection; ``versions/`` holds one revision per schema version (``0001`` is version 1, and so on)."""
