"""Operator commands over Telegram: python-telegram-bot's ``CommandHandler``s on the notifier's application,
answering only the allow-listed chats (``filters.Chat``).

``/status``, ``/positions`` and ``/pnl`` answer from a ``StatusSource``; ``/pause`` and ``/resume`` go to the
``CommandSink`` (the state store's command queue, which the runtime applies); ``/flatten`` only asks for
confirmation: the command is issued when the same chat sends ``/flatten confirm`` within the confirmation
window (60 s). Messages from any other chat match no command handler: they are logged with their chat id
and never acted on. Replies go back to the chat that asked, through the notifier (its order, rate limit and
retries). A command older than ``max_age_s`` when it arrives (sent while the runtime was down) is not
carried out; the chat is told so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, Protocol

import pandas as pd
from telegram import Update
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.ext import Application, BaseHandler, CommandHandler, ContextTypes, MessageHandler, filters
from tenacity import RetryCallState

from pipeline.clock import Clock, SystemClock
from pipeline.retry import RetryPolicy, any_error
from pipeline.services.telegram import AsyncSleep, clip
from runtime.notify.messages import when
from runtime.notify.notifier import Notifier

log = logging.getLogger("runtime.notify")

COMMAND_SOURCE: Final = "telegram"
"""The ``source`` every command from Telegram carries into the ``CommandSink``."""
COMMANDS: Final = ("status", "positions", "pnl", "pause", "resume", "flatten", "help", "start")

HELP_TEXT: Final = (
    "Commands:\n"
    "/status - runtime status\n"
    "/positions - open positions\n"
    "/pnl - profit and loss\n"
    "/pause - stop opening new positions\n"
    "/resume - allow new positions again\n"
    "/flatten - close every position (asks for /flatten confirm)"
)


class StatusSource(Protocol):
    """Where the bot's read-only answers come from (called on a worker thread: keep it thread-safe)."""

    def status_text(self) -> str: ...

    def positions_text(self) -> str: ...

    def pnl_text(self) -> str: ...


class CommandSink(Protocol):
    """Where operator commands go (called on a worker thread: keep it thread-safe).

    ``command`` is ``pause``, ``resume`` or ``flatten``; ``source`` says who asked (``telegram``).
    """

    def submit(self, command: str, source: str) -> None: ...


def parse_command(text: str, bot_username: str | None = None) -> tuple[str, list[str]] | None:
    """A message's command and arguments, lower-cased: ``"/Flatten@bot confirm"`` → ``("flatten", ["confirm"])``.

    None for plain text, and for a command addressed to another bot (``/status@other_bot``) when this
    bot's username is known.
    """
    words = text.strip().split()
    if not words or not words[0].startswith("/") or len(words[0]) < 2:
        return None
    name, _, addressee = words[0][1:].partition("@")
    if addressee and bot_username and addressee.lower() != bot_username.lower():
        return None
    return name.lower(), [word.lower() for word in words[1:]]


Context = ContextTypes.DEFAULT_TYPE


class CommandBot:
    """Operator commands over Telegram, from the notifier's allow-listed chats only (see the module
    documentation). ``start`` starts the notifier if needed and polls on its thread."""

    def __init__(
        self,
        notifier: Notifier,
        status: StatusSource,
        sink: CommandSink,
        *,
        clock: Clock | None = None,
        poll_timeout_s: int = 10,
        confirm_window_s: float = 60.0,
        max_age_s: float | None = 300.0,
        retry_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        """``poll_timeout_s``: how long one long poll waits for a message; ``confirm_window_s``: how long a
        ``/flatten`` waits for its ``/flatten confirm``; ``clock`` (wall time) measures both windows;
        ``retry_backoff_s`` … ``max_backoff_s``: the waits (``sleep``) between attempts to reach Telegram at
        start."""
        if poll_timeout_s < 0:
            raise ValueError(f"telegram poll_timeout_s must be 0 or more, got {poll_timeout_s}")
        if confirm_window_s <= 0:
            raise ValueError(f"telegram confirm_window_s must be positive, got {confirm_window_s}")
        self._notifier = notifier
        self._status = status
        self._sink = sink
        self._clock: Clock = clock or SystemClock()
        self._poll_timeout_s = poll_timeout_s
        self._confirm_window = pd.Timedelta(seconds=confirm_window_s)
        self._max_age = None if max_age_s is None else pd.Timedelta(seconds=max_age_s)
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        allowed = filters.Chat(chat_id=notifier.chat_ids)
        self._handlers: list[BaseHandler[Update, Context, None]] = [
            *(CommandHandler(name, self._on_command, filters=allowed) for name in COMMANDS),
            MessageHandler(filters.COMMAND & allowed, self._on_command),  # unknown commands get the help
            MessageHandler(~allowed, self._on_stranger),
        ]
        self._flatten_deadlines: dict[int, pd.Timestamp] = {}
        self._starting: concurrent.futures.Future[None] | None = None
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    def start(self) -> None:
        """Start polling (no-op when notifications are off or it already polls)."""
        if not self._notifier.enabled:
            log.info("telegram commands are off: no token configured")
            return
        if self.running:
            return
        self._notifier.start()
        app, loop = self._notifier.application, self._notifier.loop
        if app is None or loop is None:
            log.warning("telegram commands are off: the notifier is not running")
            return
        self._stopped.clear()
        self._starting = self._run(loop, self._start_polling(app))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling (the notifier keeps running)."""
        if not self.running:
            return
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()
        app, loop = self._notifier.application, self._notifier.loop
        if app is not None and loop is not None:
            stopping = self._run(loop, self._stop_polling(app))
            if stopping is not None:
                try:
                    stopping.result(timeout)
                except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                    log.warning("telegram polling did not stop within %.3g s", timeout)
        self._stopped.set()

    @staticmethod
    def _run(
        loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]
    ) -> concurrent.futures.Future[None] | None:
        try:
            return asyncio.run_coroutine_threadsafe(work, loop)
        except RuntimeError:  # the loop has closed
            work.close()
            return None

    # --- polling ----------------------------------------------------------------------------------

    async def _start_polling(self, app: Application) -> None:  # type: ignore[type-arg]
        def retrying(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            text = self._notifier.describe(error) if error is not None else "unknown"
            if state.attempt_number == 1 or isinstance(error, InvalidToken):
                log.warning("telegram commands cannot start yet: %s; retrying in %.3g s", text, state.upcoming_sleep)

        forever = RetryPolicy(attempts=None, base_s=self._retry_backoff_s,
                              cap_s=max(self._max_backoff_s, self._retry_backoff_s), jitter=0.0,
                              async_sleep=self._sleep)
        async for attempt in forever.async_attempts_of(what="telegram commands", transient=any_error,
                                                       on_retry=retrying):
            with attempt:
                await self._notifier.check_in()
        for handler in self._handlers:
            app.add_handler(handler)
        app.add_error_handler(self._on_error)
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(
            timeout=self._poll_timeout_s,
            bootstrap_retries=-1,
            allowed_updates=["message"],
            error_callback=self._poll_failed,
        )

    async def _stop_polling(self, app: Application) -> None:  # type: ignore[type-arg]
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        for handler in self._handlers:
            app.remove_handler(handler)
        app.remove_error_handler(self._on_error)

    def _poll_failed(self, error: TelegramError) -> None:
        text = self._notifier.describe(error)
        if isinstance(error, Conflict):
            log.error("telegram polling refused (is another process polling with this bot?): %s", text)
        elif isinstance(error, InvalidToken):
            log.error("telegram polling refused: the bot token was rejected: %s", text)
        else:
            log.warning("telegram polling failed: %s; retrying", text)

    async def _on_error(self, update: object, context: Context) -> None:
        error = context.error
        described = self._notifier.describe(error, with_trace=True) if error is not None else "unknown error"
        log.error("telegram: an update could not be handled: %s", described)

    # --- commands ---------------------------------------------------------------------------------

    async def _on_stranger(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None:
            return
        sender = message.from_user.id if message.from_user else None
        log.warning(
            "telegram: ignored a message from chat %s (user %s), which is not allow-listed", message.chat_id, sender
        )

    async def _on_command(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        parsed = parse_command(message.text, context.bot.username)
        if parsed is None:
            return  # addressed to another bot
        name, args = parsed
        chat_id = message.chat_id
        log.info("telegram command /%s%s from chat %s", name, "".join(f" {a}" for a in args), chat_id)
        if self._max_age is not None and self._clock.now() - pd.Timestamp(message.date) > self._max_age:
            reply = f"Ignored /{name}: it was sent at {when(message.date)}, too long ago. Send it again."
        else:
            reply = await self._answer(chat_id, name, args)
        self._notifier.enqueue(reply, (chat_id,))

    async def _answer(self, chat_id: int, name: str, args: list[str]) -> str:
        if name == "status":
            return await self._read("status", self._status.status_text)
        if name == "positions":
            return await self._read("positions", self._status.positions_text)
        if name == "pnl":
            return await self._read("pnl", self._status.pnl_text)
        if name in ("pause", "resume"):
            return await self._submit(name)
        if name == "flatten":
            return await self._flatten(chat_id, args)
        if name in ("help", "start"):
            return HELP_TEXT
        return f"Unknown command /{name}.\n{HELP_TEXT}"

    async def _read(self, what: str, source: Callable[[], str]) -> str:
        try:
            text = await asyncio.to_thread(source)
        except Exception as exc:
            log.error("telegram /%s: the status source failed: %s", what, self._notifier.describe(exc))
            return f"/{what} is unavailable right now ({type(exc).__name__})."
        return text if text.strip() else f"/{what}: nothing to report."

    async def _submit(self, command: str) -> str:
        try:
            await asyncio.to_thread(self._sink.submit, command, COMMAND_SOURCE)
        except Exception as exc:
            log.error("telegram /%s could not be submitted: %s", command, self._notifier.describe(exc))
            return f"/{command} failed: {type(exc).__name__}: {clip(str(exc), 200)}"
        return {
            "pause": "Pause submitted: no new positions will be opened until /resume.",
            "resume": "Resume submitted: new positions may be opened again.",
            "flatten": "Flatten submitted: every open position will be closed.",
        }[command]

    async def _flatten(self, chat_id: int, args: list[str]) -> str:
        now = self._clock.now()
        window_s = int(self._confirm_window.total_seconds())
        if not args:
            self._flatten_deadlines[chat_id] = now + self._confirm_window
            return f"Flatten closes every open position. To proceed, send /flatten confirm within {window_s} s."
        if args != ["confirm"]:
            return "Usage: /flatten, then /flatten confirm to proceed."
        deadline = self._flatten_deadlines.pop(chat_id, None)
        if deadline is None or now > deadline:
            return f"Nothing to confirm: send /flatten first, then /flatten confirm within {window_s} s."
        return await self._submit("flatten")
