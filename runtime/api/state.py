"""The API's door to the state store: reads through a read-only store, control commands through the store's
``add_command`` (the path the dashboard, Telegram and ``tradeforge runtime ctl`` use).

The API may start before the runtime has created its state: the stores are opened on first use, and until the
state exists every read answers as "no runtime state yet" and every command is refused.
"""

from __future__ import annotations

import threading
from typing import Final

from sqlalchemy.exc import SQLAlchemyError

from pipeline.state import StateError, StateStore

COMMAND_SOURCE: Final = "api"
"""The source the API's commands are recorded with."""


class NoState(RuntimeError):
    """The runtime has not created its state yet."""


class StateAccess:
    """Lazily opened stores on ``url``: one read-only store for every read, one writable store for commands."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._reader: StateStore | None = None
        self._writer: StateStore | None = None

    def reader(self) -> StateStore | None:
        """The read-only store, or None while the runtime has not created its state."""
        with self._lock:
            if self._reader is None:
                try:
                    self._reader = StateStore.read_only(self.url)
                except (StateError, SQLAlchemyError):  # no database yet, or the runtime is still creating it
                    return None
            return self._reader

    def queue(self, command: str, sleeve: str | None) -> int:
        """Queue ``command`` (for ``sleeve``, or every sleeve) for the runtime; returns its id.

        Raises :class:`NoState` while the runtime has never run here (nothing would carry the command out).
        """
        store = self.reader()
        if store is None or store.bot_state() is None:
            raise NoState("no runtime state yet: start the runtime first; it carries out commands within one loop")
        with self._lock:
            if self._writer is None:
                self._writer = StateStore(self.url, create=False)
            writer = self._writer
        return writer.add_command(command, COMMAND_SOURCE, sleeve=sleeve)

    def close(self) -> None:
        with self._lock:
            for store in (self._reader, self._writer):
                if store is not None:
                    store.close()
            self._reader = self._writer = None
