"""The HTTP side of the fake Telegram Bot API: the request handler, what it records, its replies and the faults.

python-telegram-bot posts every call to ``/bot<token>/<method>`` with its parameters form-encoded; the answer is
``{"ok": true, "result": ...}`` or Telegram's error body ``{"ok": false, "error_code", "description"}`` (a 429
carries ``parameters.retry_after``). A ``Fault`` is trouble scripted for one coming call of a method.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from tests.fakes.telegram_server import FakeTelegram

STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
"""The ``description`` Telegram sends with each error status."""


@dataclass(frozen=True)
class Fault:
    """Trouble for one coming request to ``method``.

    Wait ``delay_s`` first; then close the connection without answering (``drop``), answer ``status``
    with Telegram's error body, or (``status`` 0) answer normally.
    """

    method: str = "sendMessage"
    status: int = 0
    retry_after: int | None = None
    delay_s: float = 0.0
    drop: bool = False
    description: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, with what it answered (status 0: the connection was dropped)."""

    method: str
    token: str
    params: dict[str, str]
    status: int
    received_at: float = 0.0
    answered_at: float = 0.0

    def int_param(self, name: str) -> int | None:
        value = self.params.get(name)
        return None if value in (None, "") else int(str(value))


class Reply:
    """An HTTP answer (``status`` 0 closes the connection without one)."""

    def __init__(self, status: int, payload: dict[str, Any] | None = None, delay_s: float = 0.0) -> None:
        self.status = status
        self.payload = payload
        self.delay_s = delay_s

    @classmethod
    def ok(cls, result: object) -> Reply:
        return cls(200, {"ok": True, "result": result})

    @classmethod
    def error(cls, status: int, description: str, parameters: dict[str, Any] | None = None) -> Reply:
        payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            payload["parameters"] = parameters
        return cls(status, payload)

    @classmethod
    def of_fault(cls, fault: Fault) -> Reply:
        template = fault.description or STATUS_DESCRIPTIONS.get(fault.status, f"Error {fault.status}")
        description = template.format(retry_after=fault.retry_after)
        parameters = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
        return cls.error(fault.status, description, parameters)


def split_path(path: str) -> tuple[str, str]:
    """``/bot<token>/<method>`` as (token, method); ("", "") for anything else."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0].startswith("bot"):
        return parts[0].removeprefix("bot"), parts[1]
    return "", ""


class Handler(BaseHTTPRequestHandler):
    """Hands each posted call to ``FakeTelegram.answer`` and writes its reply (or closes the connection)."""

    server_version = "fake-telegram/1.0"

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake: FakeTelegram = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        reply = fake.answer(urlsplit(self.path).path, params)
        fake.hold(reply.delay_s)
        if reply.status == 0 or reply.payload is None:
            self.close_connection = True  # no answer at all: the client sees the connection drop
            return
        payload = json.dumps(reply.payload, separators=(",", ":")).encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout it was meant to see)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``FakeTelegram.requests`` instead of an access log."""
