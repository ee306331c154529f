"""The HTTP side of the fake Alpaca: the request handler, what it records, its replies and the scripted faults.

Requests are grouped by endpoint family (``bars``, ``account``, ``orders``, ``positions``); a ``Fault`` is
trouble scripted for one coming request of a family: an HTTP error with Alpaca's body for it, an answer held
back, or an order placed and its answer lost (the connection closed without one).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.fakes.local_http import MethodHandler

if TYPE_CHECKING:
    from tests.fakes.alpaca_server import AlpacaServer

ERROR_BODIES: dict[int, tuple[int, str]] = {
    400: (40010000, "bad request"),
    403: (40310000, "insufficient buying power"),
    404: (40410000, "not found"),
    422: (42210000, "invalid order"),
    429: (42910000, "rate limit exceeded"),
    500: (50010000, "internal server error occurred"),
}
"""Alpaca's ``{"code", "message"}`` for each status; other statuses get ``status * 100000`` and ``HTTP <status>``."""


def endpoint_of(path: str) -> str:
    """The endpoint family of a path: ``bars``, ``account``, ``orders``, ``positions`` or ``other``."""
    if path == "/v2/stocks/bars":
        return "bars"
    for name in ("account", "orders", "positions"):
        if path == f"/v2/{name}" or path.startswith((f"/v2/{name}/", f"/v2/{name}:")):
            return name
    return "other"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (query parameters flattened to their last value; ``body`` the JSON)."""

    method: str
    path: str
    params: dict[str, str]
    had_key_headers: bool
    body: Any = None

    @property
    def endpoint(self) -> str:
        return endpoint_of(self.path)


@dataclass(frozen=True)
class Fault:
    """Trouble for one coming request to ``endpoint`` (``"*"``: any), of ``method`` when given.

    ``status`` answers that HTTP status without handling the request (``body``: Alpaca's error for it unless
    given); ``delay_s`` holds the answer back first (with no status the request is handled: an order is
    placed); ``lose_response`` handles the request, then closes the connection without an answer.
    """

    endpoint: str = "bars"
    method: str | None = None
    status: int | None = None
    delay_s: float = 0.0
    body: dict[str, Any] | None = None
    lose_response: bool = False

    def matches(self, method: str, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint) and self.method in (None, method)


@dataclass
class Reply:
    """An HTTP answer: ``status`` and a JSON ``body`` (``None``: no body), held back ``delay_s``, or lost."""

    status: int
    body: Any = None
    delay_s: float = 0.0
    lose_response: bool = False

    @classmethod
    def of_fault(cls, fault: Fault, status: int) -> Reply:
        code, message = ERROR_BODIES.get(status, (status * 100_000, f"HTTP {status}"))
        return cls(status, fault.body or {"code": code, "message": message}, fault.delay_s)


class Handler(MethodHandler):
    """Hands each request to ``AlpacaServer.answer`` and writes its reply (or closes the connection unanswered)."""

    protocol_version = "HTTP/1.1"

    def _serve(self, method: str) -> None:
        fake: AlpacaServer = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length > 0 else ""
        reply = fake.answer(method, self.path, raw, self.headers.get("APCA-API-KEY-ID"),
                            self.headers.get("APCA-API-SECRET-KEY"))
        fake.hold(reply.delay_s)
        if reply.lose_response:
            self.close_connection = True  # no status line, no body: the client sees the connection close
            return
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``AlpacaServer.requests`` instead of an access log."""
