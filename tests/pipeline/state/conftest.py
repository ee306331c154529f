"""Every test in this folder runs on both backends: the state-store fixtures of ``stores``."""

from tests.pipeline.state import stores

db_url = stores.db_url  # a fresh database on SQLite and on PostgreSQL
open_store = stores.open_store
store = stores.store
