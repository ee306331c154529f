"""The runtime's Telegram edge, on python-telegram-bot: notifications out, operator commands in.

* ``messages`` — the notification texts (fills, breaker trips and releases, errors, start and stop);
* ``notifier`` — ``Notifier``: the ``Application`` on its own event loop in a background thread, which
  delivers what the trading loop hands over, in order, rate-limited and retried;
* ``commands`` — ``CommandBot``: ``/status``, ``/positions``, ``/pnl``, ``/pause``, ``/resume`` and
  ``/flatten`` from the allow-listed chats only, into the state store's command queue.

How requests are limited and retried, and how the token is kept out of logs, is the shared edge in
:mod:`pipeline.services.telegram`. The message texts load at once; the Telegram client library only when the notifier
or the command bot is first used, so a runtime without Telegram never loads it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.notify.messages import (
    DAILY_RULES,
    OPERATOR_PAUSE,
    breaker_event_message,
    breaker_message,
    breaker_release,
    error_message,
    fill_message,
    start_message,
    stop_message,
)

if TYPE_CHECKING:
    from pipeline.services.telegram import MAX_MESSAGE_CHARS
    from runtime.notify.commands import (
        COMMAND_SOURCE,
        HELP_TEXT,
        CommandBot,
        CommandSink,
        StatusSource,
        parse_command,
    )
    from runtime.notify.notifier import Notifier, NotifierStats

_LAZY = {
    "MAX_MESSAGE_CHARS": "pipeline.services.telegram",
    "COMMAND_SOURCE": "runtime.notify.commands",
    "HELP_TEXT": "runtime.notify.commands",
    "CommandBot": "runtime.notify.commands",
    "CommandSink": "runtime.notify.commands",
    "StatusSource": "runtime.notify.commands",
    "parse_command": "runtime.notify.commands",
    "Notifier": "runtime.notify.notifier",
    "NotifierStats": "runtime.notify.notifier",
}


def __getattr__(name: str) -> Any:
    """The names that need the Telegram client library, loaded on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMMAND_SOURCE",
    "DAILY_RULES",
    "HELP_TEXT",
    "MAX_MESSAGE_CHARS",
    "OPERATOR_PAUSE",
    "CommandBot",
    "CommandSink",
    "Notifier",
    "NotifierStats",
    "StatusSource",
    "breaker_event_message",
    "breaker_message",
    "breaker_release",
    "error_message",
    "fill_message",
    "parse_command",
    "start_message",
    "stop_message",
]
