"""What every command prints with: the stdout and stderr consoles, name/value tables, the JSON document, errors.

Nothing is hard-wrapped to the terminal width: an error, a path or an id is printed on one line whatever the
width (the terminal folds a long line on screen, a copy keeps it whole).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; the ``typer.Exit`` to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def say(text: str) -> None:
    """A line on stderr, printed as it is (no markup)."""
    err.print(escape(text), highlight=False)


def load_settings() -> Settings:
    """The settings, or an error naming the bad setting."""
    from pipeline.settings import load_settings as load

    try:
        return load()
    except ValueError as exc:
        raise fail(f"configuration is invalid: {exc}") from exc


def timestamp(text: str | None, option: str) -> pd.Timestamp | None:
    from pipeline.domain import parse_utc

    return parse_utc(text, option)


def pairs(rows: Iterable[tuple[str, str]], title: str | None = None, table_box: box.Box | None = box.SIMPLE,
          caption: str | None = None) -> Table:
    """A table of names and values (``rows`` hold rich markup), as wide as its longest value: a value (a path,
    an id, a number) is never cut short nor wrapped inside its cell."""
    rows = list(rows)
    widest = max((Text.from_markup(value).cell_len for _, value in rows), default=0)
    table = Table(title=title, caption=caption, show_header=False, box=table_box)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, min_width=widest)
    for name, value in rows:
        table.add_row(name, value)
    return table


def emit(document: dict[str, Any] | list[dict[str, Any]], as_json: bool, table: Table) -> None:
    """One JSON document on stdout with ``--json``, else the table."""
    if as_json:
        print(json.dumps(document, default=str))
    else:
        out.print(table)


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}"
    return "-" if value is None else str(value)


def jsonable(record: dict[Any, Any]) -> dict[str, Any]:
    """A record of a frame with JSON values: timestamps as ISO text, NaN as None, numpy scalars as Python's."""
    import pandas as pd

    converted: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, pd.Timestamp):
            converted[str(key)] = value.isoformat()
        elif value is None or (isinstance(value, float) and value != value):
            converted[str(key)] = None
        elif hasattr(value, "item"):
            converted[str(key)] = value.item()
        else:
            converted[str(key)] = value
    return converted


class progress:
    """A rich progress line on stderr counting rows as a source delivers them."""

    def __init__(self, label: str) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._task = self._progress.add_task(label, total=None)

    def __enter__(self) -> Callable[[int], None]:
        self._progress.start()
        return lambda rows: self._progress.advance(self._task, rows)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
