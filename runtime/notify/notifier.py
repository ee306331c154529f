"""The runtime's Telegram notifier: python-telegram-bot's ``Application`` on its own event loop in a background
thread, so the synchronous trading loop only ever hands messages over (``send`` returns at once; ``flush``
waits until everything handed over has been handled).

Delivery rules:

* **Off without a token.** With no token the notifier says so once (INFO) and every send is a no-op that
  returns False; no request is ever made.
* **Rate limit and retries** are :class:`pipeline.services.telegram.Delivery`'s: python-telegram-bot's
  ``AIORateLimiter`` (``rate_per_minute`` across every chat, one message to three chats is three requests; a 429
  holds every request for the ``retry_after`` Telegram asks for), the retry policy of :mod:`pipeline.retry` for
  network errors, timeouts and 5xx. Messages leave one at a time, in the order they were sent. A message that
  could not be delivered is logged as an ERROR and dropped; nothing is raised into the caller, and the notifier
  keeps working.
* **Queue limit.** At most ``max_queue`` messages wait; a message arriving at a full queue is dropped with a
  WARNING and its ``send`` returns False.
* **The token stays secret** (see :mod:`pipeline.services.telegram`): the client library, its logs, its exceptions
  and this module's logs only ever see ``REDACTED`` in its place.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr
from telegram.ext import Application, ApplicationBuilder

from pipeline.services.telegram import (
    TOKEN_PLACEHOLDER,
    AsyncSleep,
    Delivery,
    api_root,
    bot_urls,
    clip,
    deliver,
    describe,
    secret_token,
)

log = logging.getLogger("runtime.notify")


@dataclass
class _Outgoing:
    text: str
    chat_ids: tuple[int, ...]
    outcome: concurrent.futures.Future[bool] = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True)
class NotifierStats:
    """Counts since the notifier was made: messages waiting, delivered, undeliverable and dropped."""

    queued: int
    delivered: int
    failed: int
    dropped: int


class Notifier:
    """Telegram notifications to the allow-listed chats, sent from a background thread.

    ``start()`` the thread, ``send`` texts (made with ``fill_message`` and friends), ``stop()`` at the end
    (it first delivers what is queued, for up to ``timeout`` seconds). Messages sent before ``start`` wait;
    a stopped notifier accepts nothing more. The notifier is also a context manager. Its ``application``
    (while running) is where :class:`runtime.notify.CommandBot` adds its command handlers.
    """

    def __init__(
        self,
        token: str | SecretStr | None,
        chat_ids: Sequence[int],
        api_url: str | None = None,
        rate_per_minute: int = 20,
        sleep: AsyncSleep = asyncio.sleep,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_queue: int = 100,
    ) -> None:
        """``token``: the bot token (None or empty: notifications off); ``chat_ids``: the allow-list, where
        every notification goes; ``api_url``: the Bot API server's root (default Telegram's).

        ``sleep`` waits between retries of a failed request; ``timeout_s`` bounds each request.
        """
        if max_queue < 1:
            raise ValueError(f"telegram max_queue must be at least 1, got {max_queue}")
        self._policy = Delivery(timeout_s, rate_per_minute, max_retries, backoff_s, max_backoff_s)
        self._token = secret_token(token)
        self._chat_ids = tuple(dict.fromkeys(int(chat_id) for chat_id in chat_ids))
        self._api_root = api_root(api_url)
        self._sleep = sleep
        self._max_queue = max_queue

        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._waiting: list[_Outgoing] = []  # handed over before the loop runs
        self._unfinished = 0
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._closed = False

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app: Application | None = None  # type: ignore[type-arg]
        self._checked_in = False
        self._in_order: asyncio.Lock | None = None
        self._check_in_lock: asyncio.Lock | None = None
        self._first_check_in: asyncio.Task[None] | None = None
        self._live = False  # hand-overs go straight to the loop (else they wait for start)

        if self._token is None:
            log.info("telegram notifications are off: no token configured")
        elif not self._chat_ids:
            log.warning("telegram has a token but no chat ids: notifications go nowhere and commands are refused")

    def __repr__(self) -> str:
        state = "off" if self._token is None else ("running" if self.running else "idle")
        return f"Notifier({state}, chats={list(self._chat_ids)}, api={self._api_root})"

    # --- state ------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """A token is configured (without one, nothing is ever sent)."""
        return self._token is not None

    @property
    def chat_ids(self) -> tuple[int, ...]:
        """The allow-listed chats: where notifications go and the only chats whose commands count."""
        return self._chat_ids

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> NotifierStats:
        with self._lock:
            return NotifierStats(self._unfinished, self._delivered, self._failed, self._dropped)

    @property
    def application(self) -> Application | None:  # type: ignore[type-arg]
        """The python-telegram-bot application while the notifier runs (None otherwise)."""
        return self._app if self.running else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The Telegram thread's event loop while the notifier runs."""
        return self._loop if self.running else None

    def describe(self, error: BaseException, *, with_trace: bool = False) -> str:
        """An error as text, with the token blanked out."""
        return describe(error, self._token, with_trace=with_trace)

    async def check_in(self) -> None:
        """Initialise the application (it asks Telegram who the bot is); raises while Telegram cannot be
        reached. Sending works without it; commands need it. Runs on the Telegram thread."""
        app, lock = self._app, self._check_in_lock
        if app is None or lock is None:
            return
        async with lock:
            if not self._checked_in:
                await app.initialize()
                self._checked_in = True

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the Telegram thread (no-op when off, already running or stopped)."""
        if self._token is None or self.running or self._closed:
            return
        root = self._api_root
        base_url, base_file_url = bot_urls(root)
        self._app = (
            ApplicationBuilder()
            .token(TOKEN_PLACEHOLDER)
            .base_url(base_url)
            .base_file_url(base_file_url)
            .request(self._policy.request(self._token, root, pool_size=2))
            .get_updates_request(self._policy.request(self._token, root))
            .rate_limiter(self._policy.rate_limiter())
            .build()
        )
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="telegram", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        with self._lock:
            self._live = True
            waiting, self._waiting = self._waiting, []
            for outgoing in waiting:
                self._schedule(outgoing)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for up to ``timeout`` seconds), then stop the thread for good.

        Messages still queued after that are dropped with a WARNING.
        """
        with self._lock:
            self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self.flush(timeout)
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop has already closed
                    loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        with self._lock:
            self._live = False
        self._thread = None
        self._drop_remaining("the notifier stopped" if thread is not None else "the notifier was never started")

    def __enter__(self) -> Notifier:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- sending ----------------------------------------------------------------------------------

    def send(self, text: str, *, timeout: float | None = None) -> bool:
        """Send ``text`` to every allow-listed chat; never raises.

        By default this only hands the message over and returns at once: True when it was queued, False when
        it was not (notifications off, no chats, notifier stopped, queue full, empty text). With ``timeout``
        it also waits up to that long for the outcome: True only if every chat received the message, False
        if any chat could not be reached after the retries (or the wait ran out).
        """
        if self._token is None or not self._chat_ids:
            return False
        outgoing = self.enqueue(text, self._chat_ids)
        if outgoing is None:
            return False
        if timeout is None or threading.current_thread() is self._thread:
            return True
        try:
            return outgoing.outcome.result(timeout=timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message has been delivered or given up on; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(remaining)
        return True

    def enqueue(self, text: str, chat_ids: tuple[int, ...]) -> _Outgoing | None:
        """Hand ``text`` for ``chat_ids`` over to the Telegram thread (from any thread, that one included)."""
        if not text.strip():
            log.warning("telegram: an empty message was not sent")
            return None
        outgoing = _Outgoing(clip(text), chat_ids)
        with self._lock:
            if self._closed:
                log.debug("telegram: a message after stop was not sent")
                return None
            if self._unfinished >= self._max_queue:
                self._dropped += 1
                log.warning("telegram queue is full (%d messages waiting): a message was dropped", self._unfinished)
                return None
            self._unfinished += 1
            if self._live:
                self._schedule(outgoing)
            else:
                self._waiting.append(outgoing)
        return outgoing

    def _schedule(self, outgoing: _Outgoing) -> None:
        """Start delivering ``outgoing`` on the loop (called with the lock held, so hand-overs keep their order)."""
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("the Telegram thread is not running")
            asyncio.run_coroutine_threadsafe(self._deliver(outgoing), loop)
        except RuntimeError:
            self._waiting.append(outgoing)  # accounted for by stop()

    def _finish(self, outgoing: _Outgoing, delivered: bool, *, dropped: bool = False) -> None:
        with self._drained:
            self._unfinished -= 1
            if dropped:
                self._dropped += 1
            elif delivered:
                self._delivered += 1
            else:
                self._failed += 1
            self._drained.notify_all()
        outgoing.outcome.set_result(delivered)

    def _drop_remaining(self, why: str) -> None:
        with self._drained:
            left, self._waiting = self._waiting, []
            self._unfinished -= len(left)
            self._dropped += len(left)
            self._drained.notify_all()
        for outgoing in left:
            outgoing.outcome.set_result(False)
        if left:
            log.warning("telegram: %d queued message(s) dropped: %s", len(left), why)

    # --- the Telegram thread ----------------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._open())
            self._loop = loop
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
        except Exception as exc:
            log.error("telegram thread failed: %s", self.describe(exc, with_trace=True))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()
                ready.set()

    async def _open(self) -> None:
        self._in_order = asyncio.Lock()
        self._check_in_lock = asyncio.Lock()
        self._first_check_in = asyncio.create_task(self._try_check_in())

    async def _try_check_in(self) -> None:
        """The first check-in, in the background: the thread that started the notifier does not wait for
        Telegram, and messages wait only for this one attempt."""
        try:
            await self.check_in()
        except Exception as exc:  # Telegram unreachable or the token refused: sends report their own trouble
            log.warning("telegram: the bot could not check in (sending anyway): %s", self.describe(exc))

    async def _close(self) -> None:
        """Stop polling and update handling, cancel what is left, close the connection pools."""
        app = self._app
        assert app is not None
        try:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
        except Exception as exc:
            log.warning("telegram: stopping the command handling failed: %s", self.describe(exc))
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        try:
            if self._checked_in:
                await app.shutdown()
            else:
                await app.bot.shutdown()
        except Exception as exc:
            log.debug("telegram: closing the connection pools failed: %s", self.describe(exc))
        self._checked_in = False

    async def _deliver(self, outgoing: _Outgoing) -> None:
        app, in_order, first_check_in = self._app, self._in_order, self._first_check_in
        assert app is not None and in_order is not None and first_check_in is not None
        delivered = False
        try:
            async with in_order:
                await asyncio.wait([first_check_in])  # the bot's connection pools are open after it
                results = []
                for chat_id in outgoing.chat_ids:

                    async def call(chat: int = chat_id) -> object:
                        return await app.bot.send_message(chat_id=chat, text=outgoing.text)

                    results.append(await deliver(call, policy=self._policy, token=self._token, sleep=self._sleep,
                                                 what=f"message to chat {chat_id}", logger=log))
                delivered = all(results)
        except asyncio.CancelledError:
            self._finish(outgoing, False, dropped=True)
            raise
        self._finish(outgoing, delivered)
