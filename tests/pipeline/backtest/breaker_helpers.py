"""The breaker tests' shared setup: every engine breaker switched off, to switch on one at a time."""

from __future__ import annotations

NO_BREAKERS = {"max_drawdown": None, "daily_loss": None, "max_consecutive_losses": None, "max_trades_per_day": None}
