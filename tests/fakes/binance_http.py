"""The HTTP side of the fake Binance: the request handler, the replies, scripted faults and the signed-request check.

Signed requests need the ``X-MBX-APIKEY`` header (else HTTP 401 ``-2015``), a ``timestamp`` within
``recvWindow`` of the wall clock (``-1021``) and a ``signature``: the hex HMAC-SHA256, keyed with the secret,
of the query string followed by the form body, both as sent with the ``signature`` parameter taken out
(Binance's rule; ccxt signs exactly that string). A wrong one is HTTP 400 ``-1022``.

A ``Fault`` is trouble scripted for one coming request: an HTTP error with Binance's body for it (a gateway's
HTML page for other 5xx statuses), an answer held back, a connection closed without an answer, or something done
at the venue before the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.binance_records import BAD_SIGNATURE, INVALID_API_KEY, Rejection, error_body, int_param, missing
from tests.fakes.local_http import MethodHandler

if TYPE_CHECKING:
    from tests.fakes.binance_server import FakeBinance

GATEWAY_PAGE = (
    "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>"
)

DEFAULT_ERROR_BODIES: dict[int, str] = {
    400: error_body(-1100, "Illegal characters found in a parameter."),
    418: error_body(-1003, "Way too many requests; IP(127.0.0.1) banned until 4102444800000."),
    429: error_body(
        -1003,
        "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
    ),
    500: error_body(-1001, "Internal error; unable to process your request. Please try again."),
}
"""What Binance answers with each status; other 5xx statuses get a gateway's HTML page."""

DEFAULT_RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000


@dataclass(frozen=True)
class Fault:
    """Trouble for one coming request to ``endpoint``: wait ``delay_s``, then answer ``status``.

    ``status`` 0 answers normally (late, when ``delay_s`` is set). ``endpoint`` ``"*"`` matches any endpoint;
    ``method`` (``"GET"``, ``"POST"``, ``"DELETE"``) narrows the match, ``None`` matches any method.
    ``drop`` closes the connection without an answer and without handling the request; ``lose_response``
    handles the request (an order is placed) and then closes the connection without an answer; ``action`` runs
    first, then the request is answered as the rest says (``FakeBinance.before_next``).
    """

    endpoint: str = "klines"
    status: int = 0
    delay_s: float = 0.0
    body: str | None = None
    method: str | None = None
    drop: bool = False
    lose_response: bool = False
    action: Callable[[], object] | None = None

    def matches(self, method: str, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint) and self.method in (None, method)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, with what it answered."""

    method: str
    endpoint: str
    params: dict[str, str]
    status: int
    """The HTTP status answered; for a lost response the one that would have been sent; 0 when dropped unread."""
    rows: int
    """Rows in a list answer (klines, orders, trades); 0 for other answers and errors."""
    delay_s: float = 0.0
    """How long the answer was held back."""
    api_key: str | None = None
    """The ``X-MBX-APIKEY`` header, when sent."""
    dropped: bool = False
    """The connection was closed without an answer (``fail_next(drop=True)`` or ``lose_response_next``)."""

    def int_param(self, name: str) -> int | None:
        value = self.params.get(name)
        return None if value is None else int(value)


class Reply:
    """An HTTP answer: status, body and content type (or, with ``drop``, no answer: the connection closes)."""

    def __init__(
        self,
        status: int,
        body: str,
        content_type: str = "application/json;charset=UTF-8",
        headers: dict[str, str] | None = None,
        rows: int = 0,
        delay_s: float = 0.0,
        drop: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.rows = rows
        self.delay_s = delay_s
        self.drop = drop

    @classmethod
    def json(cls, payload: object) -> Reply:
        rows = len(payload) if isinstance(payload, list) else 0
        return cls(200, json.dumps(payload, separators=(",", ":")), rows=rows)

    @classmethod
    def rejection(cls, rejection: Rejection) -> Reply:
        return cls(rejection.status, error_body(rejection.code, rejection.msg))

    @classmethod
    def of_fault(cls, fault: Fault) -> Reply:
        """The error a fault answers: its body, else Binance's for its status, else a gateway's HTML page."""
        headers = {"Retry-After": "1"} if fault.status in (418, 429) else {}
        if fault.body is not None:
            return cls(fault.status, fault.body, headers=headers)
        if fault.status in DEFAULT_ERROR_BODIES:
            return cls(fault.status, DEFAULT_ERROR_BODIES[fault.status], headers=headers)
        return cls(fault.status, GATEWAY_PAGE.format(status=fault.status), "text/html", headers)


def _without_signature(raw: str) -> str:
    """A query string or form body with its ``signature`` parameter taken out, otherwise byte for byte."""
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


def authenticate(
    params: dict[str, str], raw_query: str, raw_body: str, api_key: str | None, *, key: str, secret: str
) -> None:
    """Binance's checks of a signed request, in its order: API key, timestamp, signature (``Rejection``)."""
    if not api_key or not hmac.compare_digest(api_key.encode(), key.encode()):
        raise Rejection(INVALID_API_KEY, status=401)
    timestamp = int_param(params, "timestamp")
    if timestamp is None:
        raise missing("timestamp")
    recv_window = int_param(params, "recvWindow")
    recv_window = DEFAULT_RECV_WINDOW_MS if recv_window is None else recv_window
    if recv_window > MAX_RECV_WINDOW_MS:
        raise Rejection((-1131, "recvWindow must be less than 60000"))
    now = int(time.time() * 1000)
    if timestamp > now + 1000:
        raise Rejection((-1021, "Timestamp for this request was 1000ms ahead of the server's time."))
    if now - timestamp > recv_window:
        raise Rejection((-1021, "Timestamp for this request is outside of the recvWindow."))
    signature = params.get("signature")
    if not signature:
        raise missing("signature")
    payload = _without_signature(raw_query) + _without_signature(raw_body)
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise Rejection(BAD_SIGNATURE)


class Handler(MethodHandler):
    """Hands each request to ``FakeBinance.answer`` and writes its reply (or closes the connection unanswered)."""

    server_version = "fake-binance/1.0"

    def _serve(self, method: str) -> None:
        fake: FakeBinance = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode("utf-8") if length > 0 else ""
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if raw_body and "json" not in (self.headers.get("Content-Type") or ""):
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        reply = fake.answer(
            method,
            parts.path,
            params,
            raw_query=parts.query,
            raw_body=raw_body,
            api_key=self.headers.get("X-MBX-APIKEY"),
        )
        fake.hold(reply.delay_s)
        if reply.drop:
            self.close_connection = True  # no status line, no body: the client sees the connection closed
            return
        payload = reply.body.encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout it was meant to see)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``FakeBinance.requests`` instead of an access log."""
