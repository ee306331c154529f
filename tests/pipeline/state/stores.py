"""The state-store fixtures: a fresh SQLite (WAL) database and a fresh PostgreSQL schema in a non-UTC zone."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import psycopg
import pytest

from pipeline.settings import Settings
from pipeline.state import StateStore

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@cache
def postgres_error() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as error:
        return str(error).strip() or type(error).__name__
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The state URL as the product builds it (``Settings.state_url``), on a fresh database or schema."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path / "data", _env_file=None).state_url
        return
    error = postgres_error()
    if error is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    schema = f"tf_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    options = f"-c search_path={schema} -c timezone=America/New_York".replace(" ", "%20").replace("=", "%3D")
    try:
        yield Settings(database_url=f"{PG_URL}?options={options}", _env_file=None).state_url
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[..., StateStore]]:
    """Open stores on the test database; all are closed at the end of the test."""
    opened: list[StateStore] = []

    def _open(read_only: bool = False, **kwargs: object) -> StateStore:
        store = StateStore.read_only(db_url) if read_only else StateStore(db_url, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., StateStore]) -> StateStore:
    return open_store()
