"""A fake Telegram Bot API on 127.0.0.1, for driving the real python-telegram-bot client in tests.

It speaks the part of the Bot API that tradeforge's notifier and command bot use, at
``POST /bot<token>/<method>`` with form-encoded or JSON parameters, answering ``{"ok": true, "result": ...}``:

* ``getMe`` — the bot's user;
* ``sendMessage`` — records the message (chat id, text) and answers a Message (message_id, date, chat, text);
* ``getUpdates`` — long polling: ``offset`` confirms (forgets) every update below it, the updates from
  ``offset`` on are returned (at most ``limit``), and with none queued the answer waits up to ``timeout``
  seconds for one; tests queue updates with ``push_message``;
* ``deleteWebhook``, ``getWebhookInfo``, ``setMyCommands``, ``getMyCommands``, ``deleteMyCommands``.

A request with another token gets Telegram's ``401 Unauthorized``; an unknown method ``404 Not Found``.

Tests script trouble with ``fail_next``: an error status with Telegram's body (429 carries
``parameters.retry_after``), an answer held back longer than the client's timeout, or a connection closed
without any answer; ``flood_after`` plays Telegram's flood control (a 429 with ``retry_after`` once a burst
passes a count). Every request is recorded, with the token it carried and when (the server's monotonic
clock) it arrived and was answered.

Usage::

    with FakeTelegram("123:ABC") as server:
        server.fail_next(status=429, retry_after=1)
        ...  # point a client at server.url
        assert server.texts_to(42) == ["hello"]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.local_http import LocalHttpServer

DEFAULT_TOKEN = "123456:TEST-TOKEN"
MAX_TEXT_CHARS = 4096
MAX_UPDATES = 100

STATUS_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
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


@dataclass(frozen=True)
class SentMessage:
    """A message the bot sent through ``sendMessage``."""

    chat_id: int
    text: str
    message_id: int


class _Reply:
    """An HTTP answer (``status`` 0 closes the connection without one)."""

    def __init__(self, status: int, payload: dict[str, Any] | None = None, delay_s: float = 0.0) -> None:
        self.status = status
        self.payload = payload
        self.delay_s = delay_s

    @classmethod
    def ok(cls, result: object) -> _Reply:
        return cls(200, {"ok": True, "result": result})

    @classmethod
    def error(cls, status: int, description: str, parameters: dict[str, Any] | None = None) -> _Reply:
        payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            payload["parameters"] = parameters
        return cls(status, payload)


class FakeTelegram(LocalHttpServer):
    """The fake Bot API: start it (or enter it as a context), push updates, point a client at ``url``."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_id: int = 7_000_000_001,
        bot_username: str = "tradeforge_test_bot",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` (epoch seconds) stamps sent messages and pushed updates."""
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._sent: list[SentMessage] = []
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 100
        self._next_message_id = 1
        self._flood: tuple[int, int] | None = None  # (accepted sendMessage left before a 429, retry_after)
        self._listen(_Handler)

    thread_name = "fake-telegram"

    def _wake_waiters(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- scripting --------------------------------------------------------------------------------

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        date: float | None = None,
        chat_type: str | None = None,
    ) -> int:
        """Queue an incoming text message in ``chat_id`` as an update; returns its ``update_id``.

        ``date`` (epoch seconds) defaults to the server's clock; ``chat_type`` to ``private`` for positive
        chat ids and ``supergroup`` for negative ones. A leading ``/command`` gets its bot_command entity.
        """
        sender = user_id if user_id is not None else abs(chat_id)
        message: dict[str, Any] = {
            "date": int(self._clock() if date is None else date),
            "chat": self._chat(chat_id, chat_type),
            "from": {"id": sender, "is_bot": False, "first_name": "Operator", "username": f"user{sender}"},
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0] if text.split() else text
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        with self._changed:
            update_id = self._next_update_id
            self._next_update_id += 1
            message["message_id"] = self._take_message_id()
            self._updates.append({"update_id": update_id, "message": message})
            self._changed.notify_all()
        return update_id

    def fail_next(
        self,
        status: int = 0,
        *,
        retry_after: int | None = None,
        delay_s: float = 0.0,
        drop: bool = False,
        description: str | None = None,
        times: int = 1,
        method: str = "sendMessage",
    ) -> None:
        """Queue trouble for the next ``times`` requests to ``method``.

        ``status`` answers with that HTTP status and Telegram's error body (a 429 carries
        ``parameters.retry_after``, 1 s unless ``retry_after`` says otherwise); ``delay_s`` holds the
        answer back that long first (longer than the client's timeout, the client sees a timeout; the
        request is still carried out, as Telegram would); ``drop`` closes the connection without answering
        (the request is not carried out).
        """
        if status == 0 and delay_s <= 0 and not drop:
            raise ValueError("a fault needs a status, a delay or a dropped connection")
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.extend(Fault(method, status, retry_after, delay_s, drop, description) for _ in range(times))

    def flood_after(self, accepted: int, *, retry_after: int = 1) -> None:
        """Telegram's flood control: once ``accepted`` more messages have been sent, answer the next
        ``sendMessage`` with 429 and ``parameters.retry_after`` (once)."""
        with self._lock:
            self._flood = (accepted, retry_after)

    def reset(self) -> None:
        """Forget faults, recorded requests and sent messages (queued updates stay)."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._sent.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.method.lower() == method.lower()]

    @property
    def sent(self) -> list[SentMessage]:
        """Every message sent so far, oldest first."""
        with self._lock:
            return list(self._sent)

    def texts_to(self, chat_id: int) -> list[str]:
        return [message.text for message in self.sent if message.chat_id == chat_id]

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by a ``getUpdates`` with a higher offset."""
        with self._lock:
            return len(self._updates)

    # --- serving ----------------------------------------------------------------------------------

    def answer(self, path: str, params: dict[str, str]) -> _Reply:
        """The reply to one request (faults applied), recorded once it is known."""
        received_at = time.monotonic()
        token, method = _split_path(path)
        fault = self._take_fault(method) if token == self.token else None
        if fault is None and token == self.token:
            fault = self._flood_fault(method)
        if fault is not None and fault.drop:
            reply = _Reply(0)
        elif fault is not None and fault.status:
            reply = self._fault_reply(fault)
        elif token != self.token:
            reply = _Reply.error(401, STATUS_DESCRIPTIONS[401])
        else:
            reply = self._route(method, params)
        with self._lock:
            self._requests.append(
                RecordedRequest(method, token, dict(params), reply.status, received_at, time.monotonic())
            )
        reply.delay_s = 0.0 if fault is None else fault.delay_s
        return reply

    def hold(self, seconds: float) -> None:
        """Wait ``seconds`` before answering (cut short when the server stops)."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.method.lower() == method.lower():
                    return self._faults.pop(index)
        return None

    def _flood_fault(self, method: str) -> Fault | None:
        if method.lower() != "sendmessage":
            return None
        with self._lock:
            if self._flood is None:
                return None
            left, retry_after = self._flood
            if left > 0:
                self._flood = (left - 1, retry_after)
                return None
            self._flood = None
        return Fault(method, 429, retry_after)

    @staticmethod
    def _fault_reply(fault: Fault) -> _Reply:
        template = fault.description or STATUS_DESCRIPTIONS.get(fault.status, f"Error {fault.status}")
        description = template.format(retry_after=fault.retry_after)
        parameters = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
        return _Reply.error(fault.status, description, parameters)

    def _route(self, method: str, params: dict[str, str]) -> _Reply:
        name = method.lower()
        if name == "getme":
            return _Reply.ok(self._bot_user())
        if name == "sendmessage":
            return self._send_message(params)
        if name == "getupdates":
            return self._get_updates(params)
        if name in ("deletewebhook", "setmycommands", "deletemycommands"):
            return _Reply.ok(True)
        if name == "getmycommands":
            return _Reply.ok([])
        if name == "getwebhookinfo":
            return _Reply.ok({"url": "", "has_custom_certificate": False, "pending_update_count": 0})
        return _Reply.error(404, STATUS_DESCRIPTIONS[404])

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "tradeforge",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _send_message(self, params: dict[str, str]) -> _Reply:
        raw_chat = params.get("chat_id", "")
        text = params.get("text", "")
        if not raw_chat:
            return _Reply.error(400, "Bad Request: chat_id is empty")
        try:
            chat_id = int(raw_chat)
        except ValueError:
            return _Reply.error(400, "Bad Request: chat not found")
        if not text.strip():
            return _Reply.error(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT_CHARS:
            return _Reply.error(400, "Bad Request: message is too long")
        with self._changed:
            message_id = self._take_message_id()
            self._sent.append(SentMessage(chat_id, text, message_id))
            self._changed.notify_all()
        return _Reply.ok(
            {
                "message_id": message_id,
                "date": int(self._clock()),
                "chat": self._chat(chat_id, None),
                "from": self._bot_user(),
                "text": text,
            }
        )

    def _get_updates(self, params: dict[str, str]) -> _Reply:
        try:
            offset = int(params.get("offset") or 0)
            limit = int(params.get("limit") or MAX_UPDATES)
            timeout = float(params.get("timeout") or 0)
        except ValueError:
            return _Reply.error(400, "Bad Request: wrong parameter")
        limit = max(1, min(limit, MAX_UPDATES))
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            if offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return _Reply.ok(list(self._updates[:limit]))

    def _take_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    @staticmethod
    def _chat(chat_id: int, chat_type: str | None) -> dict[str, Any]:
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = "Operator"
        else:
            chat["title"] = f"chat {chat_id}"
        return chat


def _split_path(path: str) -> tuple[str, str]:
    """``/bot<token>/<method>`` as (token, method); ("", "") for anything else."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0].startswith("bot"):
        return parts[0].removeprefix("bot"), parts[1]
    return "", ""


def _params(query: str, body: bytes, content_type: str) -> dict[str, str]:
    """Request parameters from the query string and a form-encoded or JSON body, as strings."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    if not body:
        return params
    if content_type.startswith("application/json"):
        decoded = json.loads(body)
        if isinstance(decoded, dict):
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()})
    else:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return params


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-telegram/1.0"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake: FakeTelegram = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        params = _params(parts.query, body, self.headers.get("Content-Type", ""))
        reply = fake.answer(parts.path, params)
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
