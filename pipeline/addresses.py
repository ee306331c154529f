"""Addresses in the settings, checked before anything connects: web and websocket URLs, database URLs (the state
store, the parameter studies) and the MLflow tracking URI.

Each check returns what is wrong (naming the value with any password masked, and what would be accepted), or
None. A database URL must name a backend the state store supports (SQLite or PostgreSQL) with a driver that is
installed here; the accepted schemes are found by asking SQLAlchemy which of them it can load, so the hint lists
exactly what would work.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from pipeline.input_errors import did_you_mean

DATABASE_BACKENDS: Final = ("sqlite", "postgresql")
_DRIVERS: Final = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2",
                   "postgresql+pg8000")
"""Schemes of the supported backends; those SQLAlchemy can load here (driver installed, not async) are accepted."""
_ALIASES: Final = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg"}
"""Schemes the settings rewrite for the state store and the studies (``pipeline.settings``): PostgreSQL through
psycopg 3, the installed driver. MLflow reads its URI as it is."""
_SQLITE: Final = ("sqlite", "sqlite+pysqlite")
MLFLOW_SCHEMES: Final = ("http", "https", "file", "databricks")
_PASSWORD: Final = re.compile(r"(://[^/:@\s]*:)\S*@")
"""The password of a ``scheme://user:password@host`` URL: up to the last ``@`` (a password may hold ``/`` or ``@``)."""


def masked(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    return _PASSWORD.sub(r"\1***@", url)


def web_url_problem(url: str, schemes: Sequence[str], example: str) -> str | None:
    """What is wrong with ``url`` as an address with one of ``schemes`` (``http``, ``ws``, ...), or None."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return f"{masked(url)!r} is not a URL with the scheme {' or '.join(schemes)} and a host (e.g. {example})"
    try:
        parts.port  # noqa: B018 - reading the port is what checks it
    except ValueError:
        return f"{masked(url)!r} has a port that is not a number from 0 to 65535 (e.g. {example})"
    return None


def _loadable(scheme: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        dialect = make_url(f"{scheme}://").get_dialect()
        dialect.import_dbapi()
    except Exception:  # any failure to load the dialect or its driver means: not usable here
        return False
    return not getattr(dialect, "is_async", False)


@functools.cache
def database_schemes(rewritten: bool = True) -> tuple[str, ...]:
    """The database URL schemes this installation can open (SQLite and PostgreSQL with an installed driver);
    ``rewritten``: as the settings rewrite a PostgreSQL URL to psycopg 3 (not for MLflow)."""
    return tuple(scheme for scheme in _DRIVERS
                 if _loadable(_ALIASES.get(scheme, scheme) if rewritten else scheme))


def database_url_problem(url: str, also: str = "", rewritten: bool = True) -> str | None:
    """What is wrong with ``url`` as the URL of a database tradeforge keeps (SQLite file or PostgreSQL), or None.
    ``also``: what else the setting accepts, named after the accepted schemes; ``rewritten``: see
    ``database_schemes``."""
    shown = masked(url)
    head, separator, rest = url.strip().partition("://")
    if separator and head in _SQLITE:  # SQLite is always there: no need to load SQLAlchemy to know it
        host = rest.split("/", 1)[0]
        if not host:
            return None
        return (f"{shown!r} names a host, which SQLite has not: the path comes after three slashes, "
                f"sqlite:///{rest} for a path relative to the working folder")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    forms = "sqlite:///RELATIVE/PATH.db, sqlite:////ABSOLUTE/PATH.db or postgresql://USER@HOST:PORT/DATABASE"
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        return f"{shown!r} is not a database URL: write {forms}"
    scheme = parsed.drivername
    accepted = database_schemes(rewritten)
    if scheme not in accepted:
        known = parsed.get_backend_name() in (*DATABASE_BACKENDS, "postgres")
        why = ("its driver is not installed or is asynchronous" if known or not rewritten
               else "the stores are SQLite or PostgreSQL")
        return (f"{shown!r}: the scheme {scheme!r} cannot be used ({why}); accepted schemes: {', '.join(accepted)}"
                f"{also}{did_you_mean(scheme, accepted)}")
    return None


def mlflow_uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as an MLflow tracking URI (a database URL, a tracking server, a folder), or None."""
    text = uri.strip()
    if not text:
        return "is empty: give a tracking URI such as sqlite:///mlruns/mlflow.db"
    scheme = urlsplit(text).scheme.lower() if "://" in text or text.startswith("file:") else ""
    if not scheme:
        if text.lower().endswith((".db", ".sqlite", ".sqlite3")):
            return f"{text!r} is a path to an SQLite file: write it as a URL, sqlite:///{text}"
        return None  # a folder store
    if scheme in ("http", "https"):
        return web_url_problem(text, ("http", "https"), "http://127.0.0.1:5000")
    if scheme in MLFLOW_SCHEMES or _loadable(scheme):  # MLflow keeps its store in any database SQLAlchemy opens
        return None
    return database_url_problem(text, also=f", or a tracking server ({' or '.join(MLFLOW_SCHEMES[:2])}) or a folder",
                                rewritten=False)


def dask_address_problem(address: str) -> str | None:
    """What is wrong with ``address`` as the address of a Dask scheduler (``tcp://host:8786``), or None."""
    text = address.strip()
    schemes = ("tcp", "tls", "ws", "wss", "inproc", "ucx")
    if "://" not in text:
        text = f"tcp://{text}"
    problem = web_url_problem(text, schemes, "tcp://127.0.0.1:8786")
    return None if problem is None else problem.replace(repr(masked(text)), repr(masked(address)))
