"""A fake Telegram Bot API on 127.0.0.1, for driving the real python-telegram-bot client in tests.

It speaks the part of the Bot API that tradeforge's notifier, command bot and sender use (python-telegram-bot
calls ``getMe`` and ``deleteWebhook`` itself when it starts), at ``POST /bot<token>/<method>`` with form-encoded
parameters, answering ``{"ok": true, "result": ...}`` (the HTTP side is in ``telegram_http``):

* ``getMe`` — the bot's user;
* ``sendMessage`` — records the message (chat id, text) and answers a Message (message_id, date, chat, text);
* ``getUpdates`` — long polling: ``offset`` confirms (forgets) every update below it, the updates from
  ``offset`` on are returned (at most 100), and with none queued the answer waits up to ``timeout``
  seconds for one; tests queue updates with ``push_message``;
* ``deleteWebhook``.

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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes.local_http import LocalHttpServer
from tests.fakes.telegram_http import STATUS_DESCRIPTIONS, Fault, RecordedRequest, split_path
from tests.fakes.telegram_http import Handler as _Handler
from tests.fakes.telegram_http import Reply as _Reply

DEFAULT_TOKEN = "123456:TEST-TOKEN"
MAX_TEXT_CHARS = 4096
MAX_UPDATES = 100


@dataclass(frozen=True)
class SentMessage:
    """A message the bot sent through ``sendMessage``."""

    chat_id: int
    text: str
    message_id: int


class FakeTelegram(LocalHttpServer):
    """The fake Bot API: start it (or enter it as a context), push updates, point a client at ``url``."""

    thread_name = "fake-telegram"
    bot_id = 7_000_000_001
    bot_username = "tradeforge_test_bot"

    def __init__(self, token: str = DEFAULT_TOKEN, *, clock: Callable[[], float] = time.time) -> None:
        """``clock`` (epoch seconds) stamps sent messages and pushed updates."""
        self.token = token
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

    def _wake_waiters(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # --- scripting --------------------------------------------------------------------------------

    def push_message(self, chat_id: int, text: str, *, user_id: int | None = None, date: float | None = None) -> int:
        """Queue an incoming text message in ``chat_id`` as an update; returns its ``update_id``.

        ``date`` (epoch seconds) defaults to the server's clock; the chat is ``private`` for positive chat ids
        and a ``supergroup`` for negative ones. A leading ``/command`` gets its bot_command entity.
        """
        sender = user_id if user_id is not None else abs(chat_id)
        message: dict[str, Any] = {
            "date": int(self._clock() if date is None else date),
            "chat": self._chat(chat_id, None),
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
        token, method = split_path(path)
        fault = self._take_fault(method) if token == self.token else None
        if fault is None and token == self.token:
            fault = self._flood_fault(method)
        if fault is not None and fault.drop:
            reply = _Reply(0)
        elif fault is not None and fault.status:
            reply = _Reply.of_fault(fault)
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

    def _route(self, method: str, params: dict[str, str]) -> _Reply:
        name = method.lower()
        if name == "getme":
            return _Reply.ok(self._bot_user())
        if name == "sendmessage":
            return self._send_message(params)
        if name == "getupdates":
            return self._get_updates(params)
        if name == "deletewebhook":
            return _Reply.ok(True)
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
            timeout = float(params.get("timeout") or 0)
        except ValueError:
            return _Reply.error(400, "Bad Request: wrong parameter")
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            if offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return _Reply.ok(list(self._updates[:MAX_UPDATES]))

    def _take_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id += 1
        return message_id

    @staticmethod
    def _chat(chat_id: int, chat_type: str | None) -> dict[str, Any]:
        """A Chat: ``chat_type``, else ``private`` for a positive id and ``supergroup`` for a negative one."""
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = "Operator"
        else:
            chat["title"] = f"chat {chat_id}"
        return chat
