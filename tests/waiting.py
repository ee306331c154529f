"""Waiting in tests: poll a condition until it holds.

Tests wait on events and progress, never on a fixed sleep, and set no wall-clock bound of their own: a slow
machine only makes a test slower. The suite's per-test timeout (``timeout`` in ``pyproject.toml``) ends a test
that waits on something that never happens. A wait that watches a process fails at once, with the process's exit
code and the end of its output, when that process ends before the condition holds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
from sqlalchemy.exc import OperationalError

from pipeline.state import StateError, StateStore

T = TypeVar("T")

POLL_S = 0.05
"""Pause between two looks at the condition (it spares the CPU for the processes under test; nothing relies on
its length)."""


def wait_until(predicate: Callable[[], T], what: str, *, process: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    ``what`` names the awaited condition in the failure message. When ``process`` ends first the wait fails,
    quoting the end of its stderr (when piped) or of ``log``.
    """
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            value = predicate()  # the condition may have come true just before the process ended
            if value:
                return value
            raise AssertionError(f"waiting for {what}: the process exited with code {process.returncode} first"
                                 + _output_tail(process, log))
        time.sleep(POLL_S)


def _output_tail(process: subprocess.Popen[bytes], log: Path | None) -> str:
    if process.stderr is not None:
        text = process.stderr.read().decode(errors="replace")
    elif log is not None and log.exists():
        text = log.read_text(errors="replace")
    else:
        return ""
    return "\n" + text[-3000:]


class ProcessedBars:
    """How many bars of one replayed series the runtime has processed, as its state store records it.

    Reads the feed's cursor (the open time of the last processed bar) through a read-only store, opened once
    the runtime has created the database.
    """

    def __init__(self, db: Path, feed: str, times: pd.Series) -> None:
        self.db = db
        self.feed = feed
        self.times = pd.DatetimeIndex(times)
        self._store: StateStore | None = None

    def __call__(self) -> int:
        if self._store is None:
            if not self.db.exists():
                return 0
            try:
                self._store = StateStore.read_only(f"sqlite:///{self.db}")
            except (StateError, OperationalError):  # the runtime is still creating its database
                return 0
        cursor = self._store.cursor(self.feed)
        return 0 if cursor is None else int(self.times.searchsorted(pd.Timestamp(cursor), side="right"))

    def reached(self, bars: int) -> Callable[[], bool]:
        """The condition "at least ``bars`` bars processed"."""
        return lambda: self() >= bars

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
