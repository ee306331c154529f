"""What every flow shares: the settings, the clock, and ``pipeline``'s logs in the Prefect run log."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from pipeline.clock import SystemClock
from pipeline.domain import DataError
from pipeline.settings import Settings, load_settings

LIBRARY_LOGGER = "pipeline"
NO_CACHING = NO_CACHE
"""Tasks here read and write files and databases: their results are never reused from a cache."""
IO_RETRIES = 2
IO_RETRY_DELAY_S = 30


class _InRunOnly(logging.Filter):
    """Pass records only inside a flow or task run (outside one there is no run log to write to)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def attach_library_logs() -> None:
    """Send records of the ``pipeline`` loggers (INFO and up) to Prefect's API log handler, so they appear in
    each run's log in the UI; idempotent. Records still reach the console through the root logger."""
    library = logging.getLogger(LIBRARY_LOGGER)
    if library.level == logging.NOTSET or library.level > logging.INFO:
        library.setLevel(logging.INFO)
    for handler in list(library.handlers):
        if isinstance(handler, APILogHandler):
            library.removeHandler(handler)  # a plain one from PREFECT_LOGGING_EXTRA_LOGGERS: replaced below
    handler = APILogHandler()
    handler.addFilter(_InRunOnly())
    library.addHandler(handler)


attach_library_logs()


def settings() -> Settings:
    """The settings, or a ``DataError`` naming the bad setting."""
    try:
        return load_settings()
    except ValueError as exc:
        raise DataError(f"tradeforge configuration is invalid: {exc}") from exc


def clock() -> SystemClock:
    return SystemClock()


def say(text: str) -> None:
    """A line in the current run's log."""
    get_run_logger().info(text)
