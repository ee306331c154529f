"""Which SQLite file MLflow may use as its store (read without importing MLflow, so ``doctor`` checks it too).

A ``sqlite:///`` tracking URI is used only when its file is absent or empty, or is already an MLflow store (it has
MLflow's ``alembic_version``, ``experiments`` and ``runs`` tables). Anything else (tradeforge's own state
database, another application's database, a file that is not a database) is refused by name before MLflow
creates or migrates its tables in it; the file is left as it was. Other tracking URIs (an ``http(s)://`` server)
are the server's business.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pipeline.domain import DataError
from pipeline.sqlite_files import NotSqliteFile, table_names

MLFLOW_TABLES: Final = frozenset({"alembic_version", "experiments", "runs"})
"""Tables every MLflow SQL store has had since its first schema."""
_TRADEFORGE_STATE: Final = frozenset({"schema_version", "bot_state"})
_FIX: Final = "it was left untouched; set TRADEFORGE_MLFLOW_TRACKING_URI to an MLflow store or a new file"


def tracking_file(uri: str) -> Path | None:
    """The SQLite file of a ``sqlite:///`` tracking URI; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def check_tracking_store(uri: str) -> None:
    """Raise ``DataError`` when ``uri`` is a SQLite file that is not an MLflow store (module documentation)."""
    path = tracking_file(uri)
    if path is None:
        return
    try:
        tables = table_names(path)
    except NotSqliteFile as exc:
        raise DataError(f"cannot use {uri} as the MLflow store: {exc.reason}; {_FIX}") from exc
    if not tables or tables >= MLFLOW_TABLES:
        return
    if tables >= _TRADEFORGE_STATE:
        raise DataError(f"cannot use {uri} as the MLflow store: it is tradeforge's state database; {_FIX}")
    names = sorted(tables)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise DataError(f"cannot use {uri} as the MLflow store: it holds {len(names)} table(s) of another application "
                    f"({shown}), not MLflow's; {_FIX}")
