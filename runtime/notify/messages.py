"""The texts of the runtime's Telegram notifications: fills, circuit-breaker trips and releases, errors, start
and stop. Plain text, exact amounts (fixed point with thousands separators), times in UTC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, cast

import pandas as pd


def when(at: datetime) -> str:
    """``at`` as ``YYYY-MM-DD HH:MM:SS UTC`` (a naive time is refused)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"the time of a notification must be timezone-aware (UTC), got the naive {at!r}")
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: Decimal | int | str) -> str:
    """A number as a trader reads it: fixed point with thousands separators, precision kept as given."""
    if isinstance(value, str):
        return value
    return f"{Decimal(value):,f}"


def _clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fill_message(
    symbol: str,
    side: str,
    quantity: Decimal,
    price: Decimal,
    at: datetime,
    *,
    fee: Decimal | None = None,
    fee_currency: str | None = None,
    venue: str | None = None,
    strategy: str | None = None,
    reason: str | None = None,
) -> str:
    """A fill, e.g. ``Fill: BUY 0.015 BTC/USDT @ 64,210.50`` with fee, venue, strategy, reason and time."""
    lines = [f"Fill: {side.upper()} {_number(quantity)} {symbol} @ {_number(price)}"]
    details = []
    if fee is not None:
        details.append(f"fee {_number(fee)}" + (f" {fee_currency}" if fee_currency else ""))
    if venue:
        details.append(venue)
    if strategy:
        details.append(f"strategy {strategy}")
    if details:
        lines.append(" | ".join(details))
    if reason:
        lines.append(f"reason: {reason}")
    lines.append(when(at))
    return "\n".join(lines)


DAILY_RULES: Final = frozenset({"daily_loss", "trades_per_day", "max_trades_per_day"})
"""Breaker rules that release at the first bar of the next trading day (unless ``daily_release`` is off)."""
OPERATOR_PAUSE: Final = "paused"
"""The rule of an operator's pause: only a resume lifts it."""
_RELEASED_BY: Final = {
    "new_day": "at the next trading day",
    "cooldown": "by the cool-down",
    "operator": "by an operator's reset",
}


def breaker_release(rule: str, *, daily_release: bool = True, cooldown_bars: int | None = None) -> str:
    """How a tripped ``rule`` releases, as the engine releases it: ``until the next trading day`` for a daily
    rule, else ``until an operator resets the breaker`` (``or the N-bar cool-down ends`` with a cool-down); an
    operator's pause lasts until an operator resumes."""
    if rule == OPERATOR_PAUSE:
        return "until an operator resumes trading"
    if rule in DAILY_RULES and daily_release:
        return "until the next trading day"
    text = "until an operator resets the breaker"
    if cooldown_bars:
        text += f" or the {cooldown_bars}-bar cool-down ends"
    return text


def breaker_message(
    rule: str,
    at: datetime,
    *,
    value: Decimal | str | None = None,
    limit: Decimal | str | None = None,
    strategy: str | None = None,
    action: str = "trip",
    released_by: str | None = None,
    bars_tripped: int | None = None,
    daily_release: bool = True,
    cooldown_bars: int | None = None,
    then: str | None = None,
) -> str:
    """A circuit-breaker event (the fields of a breaker event): the rule (e.g. ``max_drawdown``), its value
    against its limit, and what follows.

    ``action="trip"``: new entries are blocked, and the message says until when (``breaker_release``: the next
    trading day for a daily rule, an operator's reset or the cool-down for the others; ``daily_release`` and
    ``cooldown_bars`` are the engine's settings). ``action="release"``: what released it (``released_by``:
    ``new_day``, ``cooldown`` or ``operator``) after how many bars, and that entries are allowed again.
    ``then`` replaces the line saying what follows.
    """
    if action not in ("trip", "release"):
        raise ValueError(f"a breaker event's action is 'trip' or 'release', got {action!r}")
    tripped = action == "trip"
    lines = [f"Circuit breaker {'tripped' if tripped else 'released'}: {rule}"]
    measured = []
    if value is not None:
        measured.append(f"value {_number(value)}")
    if limit is not None:
        measured.append(f"limit {_number(limit)}")
    if strategy:
        measured.append(f"strategy {strategy}")
    if measured:
        lines.append(" | ".join(measured))
    if not tripped:
        how = [_RELEASED_BY.get(released_by, f"by {released_by}")] if released_by else []
        if bars_tripped is not None:
            how.append(f"after {bars_tripped} bar{'' if bars_tripped == 1 else 's'}")
        if how:
            lines.append(" ".join(["released", *how]))
    if then is None:
        if tripped:
            then = "new entries are blocked " + breaker_release(
                rule, daily_release=daily_release, cooldown_bars=cooldown_bars
            )
        else:
            then = "new entries are allowed again"
    if then:
        lines.append(then)
    lines.append(when(at))
    return "\n".join(lines)


def error_message(where: str, error: str | BaseException, at: datetime, *, action: str | None = None) -> str:
    """An error in part of the runtime (``where``), with what the runtime does about it."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    lines = [f"Error in {where}: {_clip(text)}"]
    if action:
        lines.append(action)
    lines.append(when(at))
    return "\n".join(lines)


def start_message(
    mode: str,
    at: datetime,
    *,
    broker: str | None = None,
    strategy: str | None = None,
    model: str | None = None,
    symbols: Sequence[str] = (),
    equity: Decimal | None = None,
) -> str:
    """The runtime started, in ``mode`` (e.g. ``paper`` or ``live``), with what it trades."""
    lines = [f"tradeforge runtime started ({mode})"]
    details = []
    if broker:
        details.append(f"broker {broker}")
    if strategy:
        details.append(f"strategy {strategy}")
    if model:
        details.append(f"model {model}")
    if details:
        lines.append(" | ".join(details))
    if symbols:
        lines.append("symbols: " + ", ".join(symbols))
    if equity is not None:
        lines.append(f"equity {_number(equity)}")
    lines.append(when(at))
    return "\n".join(lines)


def stop_message(
    reason: str,
    at: datetime,
    *,
    equity: Decimal | None = None,
    open_positions: int | None = None,
) -> str:
    """The runtime stopped, and why (e.g. ``operator request``, ``fatal error``)."""
    lines = [f"tradeforge runtime stopped: {reason}"]
    details = []
    if equity is not None:
        details.append(f"equity {_number(equity)}")
    if open_positions is not None:
        details.append(f"open positions {open_positions}")
    if details:
        lines.append(" | ".join(details))
    lines.append(when(at))
    return "\n".join(lines)




def _measure(value: object) -> str | None:
    """An engine measure (a float ratio, count or loss) as a short number; None when it is missing."""
    if value is None or value == "":
        return None
    number = float(str(value))
    return None if number != number else f"{number:.4g}"


def breaker_event_message(
    event: Mapping[str, object],
    *,
    strategy: str | None = None,
    daily_release: bool = True,
    cooldown_bars: int | None = None,
) -> str:
    """``breaker_message`` for one row of the engine's breaker events (a sleeve's ``breaker_events`` frame or
    the portfolio stepper's events: ``timestamp, rule, value, threshold, action, released_by,
    bars_tripped``); ``strategy`` names the sleeve it belongs to."""
    action = str(event["action"])
    released = action == "release"
    bars = event.get("bars_tripped")
    return breaker_message(
        str(event["rule"]),
        pd.Timestamp(cast(Any, event["timestamp"])).to_pydatetime(),
        value=_measure(event.get("value")),
        limit=_measure(event.get("threshold")),
        strategy=strategy,
        action=action,
        released_by=(str(event.get("released_by") or "") or None) if released else None,
        bars_tripped=int(str(bars)) if released and bars is not None else None,
        daily_release=daily_release,
        cooldown_bars=cooldown_bars,
    )
