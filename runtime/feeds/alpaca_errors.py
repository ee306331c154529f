"""What Alpaca's bar stream says when it will not serve, sorted into what a reconnect can fix and what it cannot.

Alpaca answers a login or a subscription it will not serve with an error frame ``{"T": "error", "code", "msg"}``,
and a handshake it will not take with an HTTP status.

* **Given up** (``StreamRejected``): the account or the request is wrong, and every new connection would be
  answered the same: 402 "auth failed" (wrong keys), 405 "symbol limit exceeded" (more symbols than the account's
  market-data plan allows), 409 "insufficient subscription" (the feed is not in the account's plan), 410 "invalid
  subscribe action for this feed" (the feed offers no such subscription). The stream is given up; its bars are
  polled through REST.
* **Backed off** (``StreamRefused``): everything else passes, and a later connection may be served: 406
  "connection limit exceeded" (another connection still holds the account's slot), 404 "auth timeout", 407 "slow
  client", 500 "internal error", an HTTP status on the handshake (429 with a ``Retry-After``, 503...). The stream
  reconnects after the feed's retry policy's wait.

alpaca-py raises a login's error frame as a ``ValueError`` carrying its text only; ``login_error`` finds the code
again by Alpaca's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

LIMIT_STATUS: Final = 406
"""Alpaca's error code for "connection limit exceeded" (too many streams on the account)."""
TEXTS: Final[Mapping[int, str]] = {
    400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
    404: "auth timeout", 405: "symbol limit exceeded", 406: "connection limit exceeded", 407: "slow client",
    409: "insufficient subscription", 410: "invalid subscribe action for this feed", 500: "internal error",
}
"""Alpaca's stream error codes and their texts."""
GIVEN_UP: Final[Mapping[int, str]] = {
    402: "check TRADEFORGE_ALPACA_API_KEY and TRADEFORGE_ALPACA_API_SECRET",
    405: "trade fewer symbols or take a market-data plan that streams more",
    409: "use a feed the account's market-data plan includes (TRADEFORGE_ALPACA_FEED=iex) or subscribe to the plan",
    410: "use a feed that streams bars (TRADEFORGE_ALPACA_FEED=iex or sip)",
}
"""The error codes a reconnect cannot fix, with what the operator can do about each."""
_CODE_OF_TEXT: Final = {text: code for code, text in TEXTS.items()}


@dataclass(frozen=True)
class _Answer:
    headers: Mapping[str, str]


class StreamRefused(ConnectionError):
    """Alpaca refused the bar stream for now: ``status_code`` (an HTTP status on the handshake, or the code of an
    error frame such as 406) and the answer's ``response.headers`` (a ``Retry-After`` among them is honoured)."""

    def __init__(self, message: str, status_code: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = _Answer(headers if headers is not None else {})


class StreamRejected(ConnectionError):
    """Alpaca refused the bar stream for a reason a reconnect cannot fix: the error frame's ``code`` and ``text``,
    at ``stage`` (``login`` or ``subscription``), and what the operator can do (``advice``)."""

    def __init__(self, code: int, text: str, stage: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.stage = stage
        self.advice = GIVEN_UP.get(code, "")


def error_of(frame: Mapping[str, Any], stage: str) -> StreamRejected | StreamRefused:
    """The error an error frame of Alpaca's stream stands for, received at ``stage``."""
    code = frame.get("code")
    text = str(frame.get("msg") or "").strip()
    if not isinstance(code, int):
        code = _CODE_OF_TEXT.get(text.lower(), 0)
    text = text or TEXTS.get(code, "error")
    if code in GIVEN_UP:
        return StreamRejected(code, text, stage)
    return StreamRefused(f"the stream refused the {stage}: {text} ({code})", code)


def login_error(exc: ValueError) -> StreamRejected | StreamRefused | None:
    """The error a failed login (alpaca-py's ``ValueError`` with Alpaca's text) stands for; None for a text that
    is no error frame of Alpaca's (the connection failed otherwise)."""
    text = str(exc).strip()
    code = _CODE_OF_TEXT.get(text.lower())
    return None if code is None else error_of({"code": code, "msg": text}, "login")


def handshake_error(exc: Exception) -> StreamRefused | None:
    """A handshake answered with an HTTP status as ``StreamRefused`` (None: no status): websockets' legacy
    ``InvalidStatusCode`` (``status_code``, ``headers``), which alpaca-py's client raises, or its newer
    ``InvalidStatus`` (``response.status_code``, ``response.headers``)."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    if not isinstance(status, int):
        return None
    headers = getattr(exc, "headers", None) or getattr(response, "headers", None)
    return StreamRefused(f"the stream refused the connection: HTTP {status}", status, headers)
