"""What every flow shares: the settings, the clock, ``pipeline``'s logs in the Prefect run log, and what happens
when a run fails.

A flow whose job did not happen ends Failed: it does what it can, then raises (:class:`JobNotDone` says what was
done and what was not). Every flow carries :func:`report_failure` as its ``on_failure`` and ``on_crashed`` hook:
when a run ends Failed or Crashed, it records the flow and the reason in the state store (a ``flow_failed``
runtime event, which the dashboard's Overview shows; nothing is recorded while there is no state store yet) and,
where Telegram is configured, sends an alert naming the flow, the run and the reason.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import Flow, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.logging.loggers import flow_run_logger
from prefect.states import State

from pipeline.clock import SystemClock
from pipeline.domain import DataError
from pipeline.reports.flow_runs import FLOW_FAILED, failure_alert, failure_detail, failure_reason
from pipeline.services.telegram import TelegramSender
from pipeline.settings import Settings, load_settings
from pipeline.state import StateError, StateStore

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


def telegram(config: Settings) -> TelegramSender:
    """The Telegram sender of the settings (``enabled`` is False without a token or chats)."""
    return TelegramSender(config.telegram_token, config.telegram_chat_ids, config.telegram_api_url,
                          config.telegram_rate_per_minute, timeout_s=config.http_timeout_s,
                          max_retries=config.max_retries, backoff_s=config.retry_backoff_s)


class JobNotDone(RuntimeError):
    """A flow's job did not happen, or only in part; the message says what was done and what was not."""


def _record(config: Settings, flow: str, reason: str) -> str:
    """Record the failure in the state store; says what became of it."""
    try:
        StateStore.read_only(config.state_url).close()  # opens existing state only: nothing is created here
        with StateStore(config.state_url, create=False) as store:
            store.record_event(FLOW_FAILED, failure_detail(flow, reason))
    except (StateError, DataError) as exc:
        return f"not recorded for the dashboard: {exc}"
    except Exception as exc:  # the database did not answer: the alert still goes out
        return f"not recorded for the dashboard: {type(exc).__name__}: {exc}"
    return "recorded for the dashboard"


def _alert(config: Settings, flow: str, run: str, reason: str) -> str:
    """Send the failure to Telegram; says what became of it."""
    sender = telegram(config)
    if not sender.enabled:
        return "no Telegram alert (telegram is not configured)"
    problems = sender.deliver_message(failure_alert(flow, run, reason, clock().now().to_pydatetime()))
    failed = [f"chat {chat}: {problem}" for chat, problem in problems.items() if problem]
    return f"Telegram alert not delivered ({'; '.join(failed)})" if failed else "Telegram alert sent"


def report_failure(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """The failure hook of every flow (``on_failure`` and ``on_crashed``): record the failure for the dashboard
    and alert."""
    logger = flow_run_logger(flow_run, flow)
    reason = failure_reason(state.message, state.name)
    try:
        config = settings()
    except DataError as exc:
        logger.error("flow %s failed (%s); not recorded and no alert: %s", flow.name, reason, exc)
        return
    outcomes = [_record(config, flow.name, reason), _alert(config, flow.name, flow_run.name, reason)]
    logger.error("flow %s failed: %s (%s)", flow.name, reason, "; ".join(outcomes))
