"""What every command prints with: the stdout and stderr consoles, name/value tables, the JSON document, errors.

Nothing is hard-wrapped to the terminal width: an error, a path or an id is printed on one line whatever the
width (the terminal folds a long line on screen, a copy keeps it whole).

A refusal is one line on stderr, ``error: ...``, naming the input (option, file, setting) and what is wrong, and
a non-zero exit; a command given ``--json`` also prints ``{"error": "..."}`` on stdout, so a script reading its
output always gets a document. ``fail`` does this for every command; ``CommandLine`` (the top-level group) does
it for usage errors (an unknown option or command, a missing or invalid value) and for settings that do not load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer._click.core import Context  # the click that typer bundles (typer.Context extends it)
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.domain import Timeframe
    from pipeline.settings import Settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
JSON_OPTION = "--json"
_ARGS = "tradeforge.args"
"""Where the top-level context keeps the command line (``ctx.meta``): a usage error looks for ``--json`` in it."""


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined, surrounding blanks dropped."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _json_given(ctx: Context | None) -> bool:
    """Whether the command of ``ctx`` has ``--json`` and it was given."""
    if ctx is None:
        return False
    if ctx.params.get("as_json"):
        return True
    has_json = any(JSON_OPTION in getattr(p, "opts", ()) for p in ctx.command.params)
    return has_json and JSON_OPTION in ctx.find_root().meta.get(_ARGS, ())


def refuse(message: str, code: int, ctx: Context | None = None) -> typer.Exit:
    """Print the refusal (one line on stderr; the JSON error document on stdout when ``--json`` was given); the
    ``typer.Exit`` to raise."""
    line = one_line(message)
    if _json_given(ctx or get_current_context(silent=True)):
        print(json.dumps({"error": line}), flush=True)
    err.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
    return typer.Exit(code)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Refuse with ``error: message`` on one line of stderr (and ``{"error": message}`` on stdout when the command
    was given ``--json``); the ``typer.Exit`` to raise."""
    return refuse(message, code)


def _usage_message(exc: UsageError) -> str:
    from pipeline.input_errors import did_you_mean, plain

    message = one_line(plain(exc.format_message().replace("Value error, ", "")))
    refused = re.search(r"'([^']*)' is not one of (.*)$", message)
    if refused:
        hint = did_you_mean(refused.group(1), re.findall(r"'(.*?)'", refused.group(2)))
        message = message.rstrip(".") + hint if hint else message
    if exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return message


class CommandLine(TyperGroup):
    """The top-level command group: a usage error (an unknown command or option, a missing or invalid value)
    and settings that do not load are refused on one line, as ``fail`` refuses (exit code 2 for usage)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Context | None = None,
                     **extra: Any) -> Context:
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise refuse(_usage_message(exc), exc.exit_code, _with_args(exc.ctx, args)) from None
        ctx.meta[_ARGS] = tuple(args)
        return ctx

    def invoke(self, ctx: Context) -> Any:
        from pydantic import ValidationError

        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            raise refuse(_usage_message(exc), exc.exit_code, exc.ctx) from None
        except ValidationError as exc:  # settings built by a library call rather than through load_settings
            if exc.title != "Settings":
                raise
            from pipeline.settings import settings_problems

            raise refuse(f"configuration is invalid: {settings_problems(exc)}", 1) from None


def _with_args(ctx: Context | None, args: Sequence[str]) -> Context | None:
    if ctx is not None:
        ctx.meta[_ARGS] = tuple(args)
    return ctx


def say(text: str) -> None:
    """A line on stderr, printed as it is (no markup)."""
    err.print(escape(text), highlight=False)


def load_settings() -> Settings:
    """The settings, or a refusal naming each bad setting (``TRADEFORGE_...``) and what is wrong with it."""
    from pipeline.settings import SettingsError
    from pipeline.settings import load_settings as load

    try:
        return load()
    except SettingsError as exc:
        raise fail(str(exc)) from None


def timestamp(text: str | None, option: str) -> pd.Timestamp | None:
    from pipeline.domain import parse_utc

    return parse_utc(text, option)


def timeframe_option(text: str, option: str = "--timeframe") -> Timeframe:
    """A timeframe given as ``option``; a ``DataError`` names the option and what is accepted."""
    from pipeline.domain import DataError, Timeframe

    try:
        return Timeframe.parse(text)
    except DataError as exc:
        raise DataError(f"{option} {str(exc).removeprefix('timeframe ')}") from None


def symbol_option(text: str, option: str = "--symbol") -> str:
    """A symbol given as ``option``, in its canonical form; a ``DataError`` names the option and the forms."""
    from pipeline.domain import DataError, parse_symbol

    try:
        return parse_symbol(text)[0]
    except DataError as exc:
        raise DataError(f"{option} {str(exc).removeprefix('symbol ')}") from None


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
