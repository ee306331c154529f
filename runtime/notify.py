"""The runtime's Telegram edge: notifications out, operator commands in.

``Notifier`` sends plain-text messages (fills, breaker trips and releases, errors, start and stop) to every
allow-listed chat. Telegram I/O runs on one background thread with its own event loop, so the synchronous
trading loop only ever enqueues: ``send`` returns at once, ``flush`` waits until everything queued has been handled.

Delivery rules:

* **Off without a token.** With no token the notifier says so once (INFO) and every send is a no-op that
  returns False; no request is ever made.
* **Rate limit.** At most ``rate_per_minute`` messages leave in any 60 s window (a bucket of that many
  tokens; a spent token comes back 60 s after it was spent). Every request counts, retries included, and
  one message to three chats is three messages. Messages over the limit wait in the queue, in order.
* **Queue limit.** At most ``max_queue`` messages wait; a message arriving at a full queue is dropped with a
  WARNING and its ``send`` returns False.
* **Retries.** Network errors, timeouts, 429 and 5xx are retried up to ``max_retries`` times: a 429 waits
  the ``retry_after`` Telegram asks for, the rest back off exponentially from ``backoff_s`` (capped at
  ``max_backoff_s``). Permanent refusals (bad request, bot blocked, chat migrated, token rejected) are not
  retried. A message that could not be delivered is logged as an ERROR and dropped; nothing is raised into
  the caller, and the notifier keeps working.
* **The token stays secret.** It is put into each request's URL only at the socket (an HTTP transport
  adds it on the way out): the client library, its logs, its exceptions and this module's logs only ever
  see ``REDACTED`` in its place.

``CommandBot`` long-polls Telegram for messages and answers ``/status``, ``/positions``, ``/pnl``,
``/pause``, ``/resume`` and ``/flatten`` from allow-listed chats only; everything else is ignored and
logged with its chat id. ``/flatten`` only asks for confirmation: the command is issued when the same chat
sends ``/flatten confirm`` within the confirmation window (60 s). Replies go back to the chat that asked,
through the notifier's queue and rate limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Protocol

import pandas as pd
from pydantic import SecretStr
from telegram import Bot, Message, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from pipeline.clock import Clock, SystemClock
from pipeline.telegram import TOKEN_PLACEHOLDER, SlidingWindow, redact
from pipeline.telegram import TokenTransport as _TokenTransport
from pipeline.telegram import api_root as _api_root
from pipeline.telegram import environment_proxy as _environment_proxy
from pipeline.telegram import retry_after_seconds as _retry_after_s

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS: Final = 4096
"""Telegram's limit on one message; longer texts are cut to it (ending in "…")."""
COMMAND_SOURCE: Final = "telegram"
"""The ``source`` every command from Telegram carries into the ``CommandSink``."""

Sleep = Callable[[float], Awaitable[None]]
"""An asynchronous sleep (``asyncio.sleep``, or a test's fake one that advances a fake clock)."""


# --- message formatting ---------------------------------------------------------------------------------


def _when(at: datetime) -> str:
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
    lines.append(_when(at))
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
    lines.append(_when(at))
    return "\n".join(lines)


def error_message(where: str, error: str | BaseException, at: datetime, *, action: str | None = None) -> str:
    """An error in part of the runtime (``where``), with what the runtime does about it."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    lines = [f"Error in {where}: {_clip(text)}"]
    if action:
        lines.append(action)
    lines.append(_when(at))
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
    lines.append(_when(at))
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
    lines.append(_when(at))
    return "\n".join(lines)


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


# --- the notifier ---------------------------------------------------------------------------------------


class Notifier:
    """Telegram notifications to the allow-listed chats, sent from a background thread.

    ``start()`` the thread, ``send`` texts (made with ``fill_message`` and friends), ``stop()`` at the end
    (it first delivers what is queued, for up to ``timeout`` seconds). Messages sent before ``start`` wait in
    the queue; a stopped notifier accepts nothing more. The notifier is also a context manager.
    """

    def __init__(
        self,
        token: str | SecretStr | None,
        chat_ids: Sequence[int],
        api_url: str | None = None,
        rate_per_minute: int = 20,
        sleep: Sleep = asyncio.sleep,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_queue: int = 100,
    ) -> None:
        """``token``: the bot token (None or empty: notifications off); ``chat_ids``: the allow-list, where
        every notification goes; ``api_url``: the Bot API server's root (default Telegram's).

        ``sleep`` and ``monotonic`` are the notifier's sense of time, for the rate limit and the retry waits;
        ``timeout_s`` bounds each request.
        """
        if rate_per_minute < 1:
            raise ValueError(f"telegram rate_per_minute must be at least 1, got {rate_per_minute}")
        if max_retries < 0:
            raise ValueError(f"telegram max_retries must be 0 or more, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"telegram timeout_s must be positive, got {timeout_s}")
        if backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("telegram backoff_s and max_backoff_s must be 0 or more")
        if max_queue < 1:
            raise ValueError(f"telegram max_queue must be at least 1, got {max_queue}")
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._token: str | None = secret.strip() if secret and secret.strip() else None
        self._chat_ids = tuple(dict.fromkeys(int(chat_id) for chat_id in chat_ids))
        self._api_root = _api_root(api_url)
        self._sleep = sleep
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_queue = max_queue
        self._limiter = SlidingWindow(rate_per_minute, monotonic)

        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._pending: deque[_Outgoing] = deque()
        self._unfinished = 0
        self._delivered = 0
        self._failed = 0
        self._dropped = 0
        self._closed = False

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._bot: Bot | None = None
        self._tasks: set[asyncio.Task[None]] = set()

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
            return NotifierStats(len(self._pending), self._delivered, self._failed, self._dropped)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the Telegram thread (no-op when off, already running or stopped)."""
        if self._token is None or self.running or self._closed:
            return
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="telegram", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for up to ``timeout`` seconds), then stop the thread for good.

        Messages still queued after that are dropped with a WARNING.
        """
        with self._lock:
            self._closed = True
        thread = self._thread
        if thread is None:
            self._drop_remaining("the notifier was never started")
            return
        if thread.is_alive():
            self.flush(timeout)
            loop, task = self._loop, self._main_task
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop has already closed
                    loop.call_soon_threadsafe(task.cancel)
            thread.join(timeout=10)
        self._thread = None
        self._drop_remaining("the notifier stopped")

    def __enter__(self) -> Notifier:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- sending ----------------------------------------------------------------------------------

    def send(self, text: str, *, timeout: float | None = None) -> bool:
        """Send ``text`` to every allow-listed chat; never raises.

        By default this only queues the message and returns at once: True when it was queued, False when it
        was not (notifications off, no chats, notifier stopped, queue full, empty text). With ``timeout``
        it also waits up to that long for the outcome: True only if every chat received the message, False
        if any chat could not be reached after the retries (or the wait ran out).
        """
        if self._token is None:
            return False
        if not self._chat_ids:
            return False
        outgoing = self._enqueue(text, self._chat_ids)
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

    def _enqueue(self, text: str, chat_ids: tuple[int, ...]) -> _Outgoing | None:
        if not text.strip():
            log.warning("telegram: an empty message was not sent")
            return None
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 1] + "…"
        outgoing = _Outgoing(text, chat_ids)
        with self._lock:
            if self._closed:
                log.debug("telegram: a message after stop was not sent")
                return None
            if len(self._pending) >= self._max_queue:
                self._dropped += 1
                log.warning("telegram queue is full (%d messages waiting): a message was dropped", len(self._pending))
                return None
            self._pending.append(outgoing)
            self._unfinished += 1
        self._wake_worker()
        return outgoing

    def _wake_worker(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed; stop() accounts for what is left
                loop.call_soon_threadsafe(wake.set)

    def _drop_remaining(self, why: str) -> None:
        with self._drained:
            left = list(self._pending)
            self._pending.clear()
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
            loop.run_until_complete(self._main(ready))
        except Exception as exc:
            log.error("telegram thread failed: %s", self._describe(exc, with_trace=True))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()
                ready.set()

    async def _main(self, ready: threading.Event) -> None:
        assert self._token is not None
        self._loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        self._wake = asyncio.Event()
        proxy = _environment_proxy(self._api_root)
        requests = [
            HTTPXRequest(
                connection_pool_size=size,
                read_timeout=self._timeout_s,
                write_timeout=self._timeout_s,
                connect_timeout=self._timeout_s,
                pool_timeout=self._timeout_s,
                httpx_kwargs={"transport": _TokenTransport(self._token, proxy), "trust_env": False},
            )
            for size in (1, 2)
        ]
        self._bot = Bot(
            TOKEN_PLACEHOLDER,
            base_url=f"{self._api_root}/bot",
            base_file_url=f"{self._api_root}/file/bot",
            get_updates_request=requests[0],
            request=requests[1],
        )
        try:
            for request in requests:
                await request.initialize()
            ready.set()
            await self._deliver_forever()
        except asyncio.CancelledError:
            pass  # stop() ends the thread this way
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for request in requests:
                try:
                    await request.shutdown()
                except Exception as exc:
                    log.debug("telegram: closing a connection pool failed: %s", self._describe(exc))
            self._bot = None
            self._wake = None

    def _spawn(
        self, factory: Callable[[], Coroutine[None, None, None]], done: threading.Event
    ) -> Callable[[], None] | None:
        """Run a coroutine on the Telegram thread until it ends, is cancelled or the notifier stops.

        ``done`` is set when it has ended. Returns the function that cancels it (None: not running).
        """
        loop = self._loop
        if loop is None or not self.running:
            return None
        created: list[asyncio.Task[None]] = []

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            done.set()

        def create() -> None:
            task = loop.create_task(factory())
            self._tasks.add(task)
            task.add_done_callback(finished)
            created.append(task)

        def cancel_created() -> None:
            for task in created:
                task.cancel()

        def cancel() -> None:
            try:
                loop.call_soon_threadsafe(cancel_created)
            except RuntimeError:
                done.set()  # the loop has closed: nothing runs any more

        try:
            loop.call_soon_threadsafe(create)
        except RuntimeError:
            return None
        return cancel

    async def _deliver_forever(self) -> None:
        assert self._wake is not None
        while True:
            with self._lock:
                outgoing = self._pending.popleft() if self._pending else None
            if outgoing is None:
                self._wake.clear()
                with self._lock:
                    idle = not self._pending
                if idle:
                    await self._wake.wait()
                continue
            delivered = False
            try:
                delivered = await self._deliver(outgoing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("telegram: a message could not be sent: %s", self._describe(exc, with_trace=True))
            finally:
                self._finish(outgoing, delivered)

    def _finish(self, outgoing: _Outgoing, delivered: bool) -> None:
        with self._drained:
            self._unfinished -= 1
            if delivered:
                self._delivered += 1
            else:
                self._failed += 1
            self._drained.notify_all()
        outgoing.outcome.set_result(delivered)

    async def _deliver(self, outgoing: _Outgoing) -> bool:
        results = [await self._send_to_chat(chat_id, outgoing.text) for chat_id in outgoing.chat_ids]
        return all(results)

    async def _send_to_chat(self, chat_id: int, text: str) -> bool:
        """One message to one chat, with the rate limit and the retries; True once Telegram accepted it."""
        bot = self._bot
        assert bot is not None
        attempts = self._max_retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            while (wait_s := self._limiter.reserve()) > 0:  # the rate limit, waited on the event loop
                await self._sleep(wait_s)
            delay = 0.0
            try:
                await bot.send_message(chat_id=chat_id, text=text)
                return True
            except RetryAfter as exc:
                delay = _retry_after_s(exc)
                problem = f"flood control (429), Telegram asks to wait {delay:g} s"
            except ChatMigrated as exc:
                log.error(
                    "telegram message to chat %s not delivered: the group moved to chat %s; "
                    "put the new id in the allow-list",
                    chat_id,
                    exc.new_chat_id,
                )
                return False
            except (BadRequest, Forbidden, InvalidToken, Conflict) as exc:
                log.error("telegram message to chat %s not delivered: %s", chat_id, self._describe(exc))
                return False
            except NetworkError as exc:  # connection trouble, timeouts, 5xx, 429 without retry_after
                delay = min(self._backoff_s * 2 ** (attempt - 1), self._max_backoff_s)
                problem = self._describe(exc)
            except TelegramError as exc:
                log.error("telegram message to chat %s not delivered: %s", chat_id, self._describe(exc))
                return False
            if attempt == attempts:
                break
            log.warning(
                "telegram message to chat %s failed (attempt %d of %d): %s; retrying in %.3g s",
                chat_id,
                attempt,
                attempts,
                problem,
                delay,
            )
            await self._sleep(delay)
        log.error("telegram message to chat %s not delivered after %d attempts: %s", chat_id, attempts, problem)
        return False

    def _describe(self, error: BaseException, *, with_trace: bool = False) -> str:
        """An error as text, with the token (should any layer have it) blanked out."""
        text = f"{type(error).__name__}: {error}"
        if with_trace:
            text = "".join(traceback.format_exception(error)).rstrip()
        return self._redact(text)

    def _redact(self, text: str) -> str:
        return redact(text, self._token)


# --- the command bot ------------------------------------------------------------------------------------


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


HELP_TEXT: Final = (
    "Commands:\n"
    "/status - runtime status\n"
    "/positions - open positions\n"
    "/pnl - profit and loss\n"
    "/pause - stop opening new positions\n"
    "/resume - allow new positions again\n"
    "/flatten - close every position (asks for /flatten confirm)"
)


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


class CommandBot:
    """Operator commands over Telegram, from the notifier's allow-listed chats only.

    It polls on the notifier's thread (``start`` starts the notifier if needed) and replies through the
    notifier's queue. A command older than ``max_age_s`` when it arrives (sent while the runtime was down)
    is not carried out; the chat is told so.
    """

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
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``poll_timeout_s``: how long one long poll waits for a message; ``confirm_window_s``: how long a
        ``/flatten`` waits for its ``/flatten confirm``; ``clock`` (wall time) measures both windows."""
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
        self._allowed = frozenset(notifier.chat_ids)
        self._flatten_deadlines: dict[int, pd.Timestamp] = {}
        self._username: str | None = None
        self._cancel: Callable[[], None] | None = None
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
        self._stopped.clear()
        self._cancel = self._notifier._spawn(self._poll_forever, self._stopped)
        if self._cancel is None:
            self._stopped.set()
            log.warning("telegram commands are off: the notifier is not running")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling (the notifier keeps running)."""
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
            self._stopped.wait(timeout)

    # --- polling ----------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        await self._prepare()
        offset: int | None = None
        failures = 0
        while True:
            bot = self._notifier._bot
            if bot is None:
                return
            try:
                updates = await bot.get_updates(
                    offset=offset, timeout=self._poll_timeout_s, allowed_updates=["message"]
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(self._retry_backoff_s * 2 ** min(failures - 1, 16), self._max_backoff_s)
                self._log_poll_failure(exc, failures, delay)
                await self._sleep(delay)
                continue
            if failures:
                log.info("telegram polling works again after %d failed attempt(s)", failures)
                failures = 0
            for update in updates:
                offset = update.update_id + 1  # confirmed by the next poll: each update is handled once
                try:
                    await self._handle(update)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error(
                        "telegram: update %s could not be handled: %s",
                        update.update_id,
                        self._notifier._describe(exc, with_trace=True),
                    )

    async def _prepare(self) -> None:
        """Learn the bot's username and make sure no webhook blocks polling (best effort)."""
        bot = self._notifier._bot
        if bot is None:
            return
        try:
            me = await bot.get_me()
            self._username = me.username
            await bot.delete_webhook()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("telegram: preparing to poll failed (polling anyway): %s", self._notifier._describe(exc))

    def _log_poll_failure(self, error: Exception, failures: int, delay: float) -> None:
        text = self._notifier._describe(error)
        if isinstance(error, Conflict):
            log.error("telegram polling refused (is another process polling with this bot?): %s", text)
        elif isinstance(error, InvalidToken):
            log.error("telegram polling refused: the bot token was rejected: %s", text)
        elif failures == 1:
            log.warning("telegram polling failed: %s; retrying in %.3g s", text, delay)
        else:
            log.debug("telegram polling failed (%d in a row): %s; retrying in %.3g s", failures, text, delay)

    # --- commands ---------------------------------------------------------------------------------

    async def _handle(self, update: Update) -> None:
        message = update.message
        if message is None or message.text is None:
            return
        chat_id = message.chat.id
        if chat_id not in self._allowed:
            sender = message.from_user.id if message.from_user else None
            log.warning(
                "telegram: ignored a message from chat %s (user %s), which is not allow-listed", chat_id, sender
            )
            return
        parsed = parse_command(message.text, self._username)
        if parsed is None:
            return
        name, args = parsed
        log.info("telegram command /%s%s from chat %s", name, "".join(f" {a}" for a in args), chat_id)
        if self._is_stale(message):
            reply = f"Ignored /{name}: it was sent at {_when(message.date)}, too long ago. Send it again."
        else:
            reply = await self._answer(chat_id, name, args)
        self._notifier._enqueue(reply, (chat_id,))

    def _is_stale(self, message: Message) -> bool:
        if self._max_age is None:
            return False
        return bool(self._clock.now() - pd.Timestamp(message.date) > self._max_age)

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
            log.error("telegram /%s: the status source failed: %s", what, self._notifier._describe(exc))
            return f"/{what} is unavailable right now ({type(exc).__name__})."
        return text if text.strip() else f"/{what}: nothing to report."

    async def _submit(self, command: str) -> str:
        try:
            await asyncio.to_thread(self._sink.submit, command, COMMAND_SOURCE)
        except Exception as exc:
            log.error("telegram /%s could not be submitted: %s", command, self._notifier._describe(exc))
            return f"/{command} failed: {type(exc).__name__}: {_clip(str(exc), 200)}"
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
