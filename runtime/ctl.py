"""Operator commands queued from a command line (``tradeforge runtime ctl`` and ``python -m runtime ctl``).

Everything is checked before anything is written: the command is one the runtime applies, the state store holds a
runtime's state (a missing SQLite file is named, not created), and a sleeve is one of that runtime's sleeves (named
as the runtime keys them, ``id:SYMBOL``). The runtime applies a queued command within one loop
(``runtime.commands``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.addresses import masked
from pipeline.domain import DataError
from pipeline.input_errors import did_you_mean
from pipeline.settings import Settings
from runtime.config import COMMANDS

STARTED_BY = "tradeforge runtime starts it; TRADEFORGE_DATA_DIR or TRADEFORGE_DATABASE_URL chooses the state it uses"


@dataclass(frozen=True)
class Queued:
    """A command written to the state store."""

    id: int
    command: str
    sleeve: str | None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "command": self.command, "sleeve": self.sleeve}


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite state URL (None for PostgreSQL, in-memory and ``file:`` URI databases)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _sleeve_problem(sleeve: str, sleeves: list[str], where: str) -> str:
    if not sleeves:
        return f"--sleeve {sleeve!r}: the runtime in {where} has no sleeve yet (it has not traded a bar)"
    by_id = [key for key in sleeves if key.split(":", 1)[0] == sleeve]
    hint = f"; did you mean {by_id[0]!r}?" if len(by_id) == 1 else did_you_mean(sleeve, sleeves)
    return f"--sleeve {sleeve!r} is not a sleeve of the runtime in {where}: its sleeves are {', '.join(sleeves)}{hint}"


def queue(settings: Settings, command: str, sleeve: str | None = None, source: str = "cli") -> Queued:
    """Queue ``command`` (for ``sleeve``, or every sleeve) for the runtime whose state the settings name; a
    ``DataError`` says what is wrong, with nothing written."""
    from pipeline.state import PORTFOLIO, StateError, StateStore

    if command.replace("_", "-") not in COMMANDS:
        raise DataError(f"command {command!r} is not known: use {', '.join(COMMANDS)}{did_you_mean(command, COMMANDS)}")
    name = command.replace("-", "_")
    where = masked(settings.state_url)
    path = _sqlite_file(settings.state_url)
    if path is not None and not path.is_file():
        raise DataError(f"no runtime state at {path}: is the runtime started? ({STARTED_BY})")
    try:
        store = StateStore(settings.state_url, create=False)
    except StateError as exc:
        raise DataError(str(exc)) from None
    try:
        if store.bot_state() is None:
            raise DataError(f"no runtime state in {where}: is the runtime started? ({STARTED_BY})")
        if sleeve is not None:
            sleeves = sorted(key for key in store.ledgers() if key != PORTFOLIO)
            if sleeve not in sleeves:
                raise DataError(_sleeve_problem(sleeve, sleeves, where))
        number = store.add_command(name, source, sleeve=sleeve)
    finally:
        store.close()
    return Queued(number, name, sleeve)
