"""The enumerated strings the state's tables hold besides the trading vocabulary of :mod:`pipeline.domain`, and
the name of the portfolio's own sleeve."""

from __future__ import annotations

from typing import Final

BOT_STATUSES: Final = frozenset({"running", "paused", "stopped"})
COMMANDS: Final = frozenset({"pause", "resume", "flatten", "reset_breaker", "stop"})
BREAKER_ACTIONS: Final = frozenset({"trip", "release"})
COMMAND_SOURCES: Final = frozenset({"api", "cli", "dashboard", "telegram"})
PORTFOLIO: Final = "portfolio"
"""The sleeve name of portfolio-level breaker events and equity rows."""
