"""Cron expressions of the schedules (settings ``schedule_*``), checked before anything is scheduled.

A schedule is standard five-field cron in UTC, ``minute hour day-of-month month day-of-week``, each field made of
numbers (month and day-of-week also take names: ``jan``, ``sun``), ``*``, ranges ``a-b``, steps ``/n`` and lists
``a,b``, or one of the shorthands ``@hourly``, ``@daily``, ... Extensions some cron dialects add (seconds, ``L``,
``W``, ``#``, ``?``) are refused: Prefect, which runs the schedules, does not read them all alike. The fields' ranges
and the check that a day can occur at all come from ``cronsim``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from cronsim import CronSim, CronSimError
from cronsim.cronsim import RANGES, SYMBOLIC_DAYS, SYMBOLIC_MONTHS

FIELDS: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")
SHORTHANDS: Final = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
EXAMPLE: Final = "*/5 * * * *"
_PART: Final = re.compile(r"^(\*|\d+|[a-z]{3})(-(\d+|[a-z]{3}))?(/\d+)?$", re.IGNORECASE)
_NAMES: Final = {"month": SYMBOLIC_MONTHS, "day-of-week": SYMBOLIC_DAYS}


def _accepted(field: str) -> str:
    """What ``field`` accepts, from cronsim's own ranges and names."""
    values = RANGES[FIELDS.index(field) + 1]  # cronsim counts a seconds field first
    text = f"{values.start}-{values.stop - 1}"
    names = _NAMES.get(field)
    return f"{text} or {names[0].lower()}-{names[-1].lower()}" if names else text


def cron_problem(expression: str) -> str | None:
    """What is wrong with ``expression`` as a schedule (naming the field), or None when it is a valid one."""
    text = expression.strip()
    if text.lower() in SHORTHANDS:
        return None
    fields = text.split()
    if len(fields) != len(FIELDS):
        return (f"{expression!r} has {len(fields)} field{'' if len(fields) == 1 else 's'}; a cron expression has "
                f"{len(FIELDS)}: {' '.join(FIELDS)} (e.g. {EXAMPLE!r}), or one of {', '.join(SHORTHANDS)}")
    for name, field in zip(FIELDS, fields, strict=True):
        if not all(_PART.match(part) for part in field.split(",")):
            return (f"{expression!r}: the {name} field {field!r} is not standard cron (numbers, names, *, ranges "
                    f"a-b, steps /n and lists a,b)")
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        name = str(exc).removeprefix("Bad ")
        if name not in FIELDS:
            return f"{expression!r} is not a valid cron expression ({exc})"
        field = fields[FIELDS.index(name)]
        days = ", on a day one of the chosen months has" if name == "day-of-month" else ""
        return f"{expression!r}: the {name} field {field!r} is not valid (it accepts {_accepted(name)}{days})"
    return None
