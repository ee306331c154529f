"""The Telegram Bot API edge every part of tradeforge shares, on python-telegram-bot, and the synchronous
sender the scheduled jobs use (texts and photos).

* **Delivery policy** (:class:`Delivery`): python-telegram-bot's ``AIORateLimiter`` spaces requests (at most
  ``rate_per_minute`` a minute on average across every chat, a burst of that many at once; Telegram's own per-group
  limit on top) and, when Telegram answers 429 anyway, holds every request for the ``retry_after`` it asks for and
  retries, up to ``max_retries`` times. Network errors, timeouts and 5xx are retried by the project's one retry policy
  (:class:`pipeline.retry.RetryPolicy`), backing off exponentially from ``backoff_s`` (capped at ``max_backoff_s``),
  up to ``max_retries`` times. Permanent refusals (bad request, bot blocked, chat migrated, token rejected) are not
  retried. :func:`attempt` applies the policy to one request and reports what became of it (``None`` once
  Telegram accepted it, else why not), never raises; :func:`deliver` says only whether it arrived.
* **The token stays secret.** The client library only ever holds ``REDACTED``: :class:`TokenTransport` puts
  the real token into the request path at the socket, so python-telegram-bot's and httpx's log lines (which
  show request URLs) and their exceptions only ever contain the placeholder; errors logged here are
  redacted too.
* :class:`TelegramSender`: ``send_message`` and ``send_photo`` deliver to every allow-listed chat (the rate
  limit holds within each send) and return, per chat, whether Telegram accepted it (``deliver_message`` and
  ``deliver_photo``: per chat, ``None`` or why it did not arrive); without a token (or chats) ``enabled`` is
  False and every send returns an empty result.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr
from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest
from tenacity import RetryCallState

from pipeline.retry import RetryPolicy

log = logging.getLogger(__name__)

DEFAULT_API_URL: Final = "https://api.telegram.org"
TOKEN_PLACEHOLDER: Final = "REDACTED"  # noqa: S105 (a placeholder, not a secret)
"""What the client library holds instead of the token; the transport swaps in the real one at the socket."""
MAX_MESSAGE_CHARS: Final = 4096
"""Telegram's limit on one message; longer texts are cut to it (ending in "…")."""
MAX_CAPTION_CHARS: Final = 1024
RATE_PERIOD_S: Final = 60.0

AsyncSleep = Callable[[float], Awaitable[None]]
"""An asynchronous sleep (``asyncio.sleep``, or a test's fake one that advances a fake clock)."""


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (ending in "…" when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def secret_token(token: str | SecretStr | None) -> str | None:
    """The token as text, or None when it is missing or blank (Telegram is off then)."""
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    return secret.strip() if secret and secret.strip() else None


def redact(text: str, token: str | None) -> str:
    """``text`` with the token (plain or URL-quoted) replaced by the placeholder."""
    if not token:
        return text
    return text.replace(token, TOKEN_PLACEHOLDER).replace(quote(token, safe=""), TOKEN_PLACEHOLDER)


def describe(error: BaseException, token: str | None, *, with_trace: bool = False) -> str:
    """An error as one line (or its whole traceback), with the token blanked out should any layer hold it."""
    lines = traceback.format_exception(error) if with_trace else traceback.format_exception_only(error)
    return redact("".join(lines).strip(), token)


def _said(error: BaseException, token: str | None) -> str:
    """What went wrong, in one short line: Telegram's own words for its errors (e.g. ``Forbidden: bot was blocked
    by the user``), else the error's class and message; the token blanked out."""
    text = str(error).strip()
    if not isinstance(error, TelegramError) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return redact(text, token)


class TokenTransport(httpx.AsyncBaseTransport):
    """Swaps the token placeholder in a request's path for the real token, just before the socket."""

    def __init__(self, token: str, proxy: str | None) -> None:
        self._marker = f"/bot{TOKEN_PLACEHOLDER}/".encode()
        self._real = f"/bot{quote(token, safe=':')}/".encode()
        self._inner = httpx.AsyncHTTPTransport(proxy=proxy)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        outgoing = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=request.url.raw_path.replace(self._marker, self._real, 1)),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        return await self._inner.handle_async_request(outgoing)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __repr__(self) -> str:
        return "<telegram token transport>"


def api_root(api_url: str | None) -> str:
    """The Bot API server's root URL (a trailing ``/bot`` is accepted and removed)."""
    root = (api_url or DEFAULT_API_URL).strip().rstrip("/")
    root = root.removesuffix("/bot")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"telegram api url {api_url!r} is not an http(s) URL like {DEFAULT_API_URL}")
    return root


def environment_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) asks for to reach ``url``."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


@dataclass(frozen=True)
class Delivery:
    """How requests to Telegram are timed, limited and retried (see the module documentation)."""

    timeout_s: float = 10.0
    rate_per_minute: int = 20
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.rate_per_minute < 1:
            raise ValueError(f"telegram rate_per_minute must be at least 1, got {self.rate_per_minute}")
        if self.max_retries < 0:
            raise ValueError(f"telegram max_retries must be 0 or more, got {self.max_retries}")
        if self.timeout_s <= 0:
            raise ValueError(f"telegram timeout_s must be positive, got {self.timeout_s}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("telegram backoff_s and max_backoff_s must be 0 or more")

    def request(self, token: str, root: str, pool_size: int = 1) -> HTTPXRequest:
        """An HTTP connection pool to ``root`` that adds the token at the socket (see :class:`TokenTransport`)."""
        return HTTPXRequest(
            connection_pool_size=pool_size,
            read_timeout=self.timeout_s,
            write_timeout=self.timeout_s,
            connect_timeout=self.timeout_s,
            pool_timeout=self.timeout_s,
            media_write_timeout=self.timeout_s,
            httpx_kwargs={"transport": TokenTransport(token, environment_proxy(root)), "trust_env": False},
        )

    def rate_limiter(self) -> AIORateLimiter:
        """python-telegram-bot's rate limiter for this policy (429s are retried by it, ``max_retries`` times)."""
        return AIORateLimiter(
            overall_max_rate=self.rate_per_minute, overall_time_period=RATE_PERIOD_S, max_retries=self.max_retries
        )


def bot_urls(root: str) -> tuple[str, str]:
    """The ``base_url`` and ``base_file_url`` of a bot talking to the Bot API server at ``root``."""
    return f"{root}/bot", f"{root}/file/bot"


def _transient(error: BaseException) -> bool:
    """Worth another try: connection trouble, timeouts, 5xx (python-telegram-bot's ``NetworkError``s other
    than a refused request)."""
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


async def attempt(
    call: Callable[[], Awaitable[object]],
    *,
    policy: Delivery,
    token: str | None,
    what: str,
    sleep: AsyncSleep = asyncio.sleep,
    logger: logging.Logger = log,
) -> str | None:
    """Make one request (``call``) under ``policy``: ``None`` once Telegram accepted it, else why it was not
    delivered (one line, the token blanked out).

    Every problem is logged (``what`` names the request, e.g. ``message to chat 42``); nothing is raised.
    """
    attempts = policy.max_retries + 1
    retry = RetryPolicy(attempts=attempts, base_s=policy.backoff_s, cap_s=max(policy.max_backoff_s, policy.backoff_s),
                        jitter=0.0, async_sleep=sleep)

    def retrying(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "telegram %s failed (attempt %d of %d): %s; retrying in %.3g s",
            what,
            state.attempt_number,
            attempts,
            describe(error, token) if error is not None else "unknown",
            state.upcoming_sleep,
        )

    try:
        async for each in retry.async_attempts_of(what=f"telegram {what}", transient=_transient,
                                                  give_up=lambda error, _attempts: error, on_retry=retrying):
            with each:
                await call()
    except RetryAfter as exc:
        problem = f"flood control (429) persisted: {_said(exc, token)}"
        logger.error("telegram %s not delivered: flood control (429) persisted: %s", what, describe(exc, token))
        return problem
    except ChatMigrated as exc:
        problem = f"the group moved to chat {exc.new_chat_id}; put the new id in the allow-list"
        logger.error("telegram %s not delivered: %s", what, problem)
        return problem
    except Exception as exc:
        if _transient(exc):
            logger.error(
                "telegram %s not delivered after %d attempts: %s", what, attempts, describe(exc, token)
            )
            return f"not delivered after {attempts} attempts: {_said(exc, token)}"
        if isinstance(exc, TelegramError):
            logger.error("telegram %s not delivered: %s", what, describe(exc, token))
        else:
            logger.error("telegram %s not delivered: %s", what, describe(exc, token, with_trace=True))
        return _said(exc, token)
    return None


async def deliver(
    call: Callable[[], Awaitable[object]],
    *,
    policy: Delivery,
    token: str | None,
    what: str,
    sleep: AsyncSleep = asyncio.sleep,
    logger: logging.Logger = log,
) -> bool:
    """Make one request (``call``) under ``policy``; True once Telegram accepted it (see :func:`attempt`)."""
    return await attempt(call, policy=policy, token=token, what=what, sleep=sleep, logger=logger) is None


Call = Callable[[Bot, int], Awaitable[object]]


class TelegramSender:
    """Synchronous delivery of texts and PNG photos to the allow-listed chats (see the module documentation)."""

    def __init__(
        self,
        token: str | SecretStr | None,
        chat_ids: Sequence[int],
        api_url: str | None = None,
        rate_per_minute: int = 20,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``sleep`` waits between retries of failed requests (a test's fake one records instead)."""
        self._policy = Delivery(timeout_s, rate_per_minute, max_retries, backoff_s, max_backoff_s)
        self._token = secret_token(token)
        self.chat_ids = tuple(dict.fromkeys(int(chat_id) for chat_id in chat_ids))
        self._root = api_root(api_url)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"TelegramSender({'on' if self.enabled else 'off'}, chats={list(self.chat_ids)}, api={self._root})"

    @property
    def enabled(self) -> bool:
        """A token and at least one chat are configured."""
        return self._token is not None and bool(self.chat_ids)

    def send_message(self, text: str) -> dict[int, bool]:
        """Send ``text`` (cut to Telegram's 4096 characters) to every chat; per chat, whether it arrived."""
        return {chat: problem is None for chat, problem in self.deliver_message(text).items()}

    def send_photo(self, png: bytes, caption: str = "", filename: str = "chart.png") -> dict[int, bool]:
        """Send a PNG image with an optional caption to every chat; per chat, whether it arrived."""
        return {chat: problem is None for chat, problem in self.deliver_photo(png, caption, filename).items()}

    def deliver_message(self, text: str) -> dict[int, str | None]:
        """Send ``text`` (cut to Telegram's 4096 characters) to every chat; per chat, ``None`` once it arrived,
        else why not."""
        if not text.strip():
            raise ValueError("a telegram message needs some text")
        body = clip(text)

        async def call(bot: Bot, chat_id: int) -> object:
            return await bot.send_message(chat_id=chat_id, text=body)

        return self._deliver("message", call)

    def deliver_photo(self, png: bytes, caption: str = "", filename: str = "chart.png") -> dict[int, str | None]:
        """Send a PNG image with an optional caption to every chat; per chat, ``None`` once it arrived, else why
        not."""
        if not png:
            raise ValueError("a telegram photo needs image bytes")
        short = clip(caption, MAX_CAPTION_CHARS)

        async def call(bot: Bot, chat_id: int) -> object:
            return await bot.send_photo(chat_id=chat_id, photo=png, caption=short or None, filename=filename)

        return self._deliver("photo", call)

    def _deliver(self, what: str, call: Call) -> dict[int, str | None]:
        if not self.enabled:
            return {}
        # A loop of its own, never installed as the thread's loop: whatever loop the caller's thread has is left
        # as it is (asyncio.run would replace it, and drop it unclosed).
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(self._deliver_all(what, call))

    async def _deliver_all(self, what: str, call: Call) -> dict[int, str | None]:
        assert self._token is not None
        base_url, base_file_url = bot_urls(self._root)
        request = self._policy.request(self._token, self._root)
        bot: ExtBot[int] = ExtBot(
            TOKEN_PLACEHOLDER,
            base_url=base_url,
            base_file_url=base_file_url,
            request=request,
            rate_limiter=self._policy.rate_limiter(),  # a limiter serves one event loop: one per send
        )

        async def sleep(seconds: float) -> None:
            await asyncio.to_thread(self._sleep, seconds)

        await request.initialize()
        try:
            outcome: dict[int, str | None] = {}
            for chat_id in self.chat_ids:

                async def one(chat: int = chat_id) -> object:
                    return await call(bot, chat)

                outcome[chat_id] = await attempt(
                    one,
                    policy=self._policy,
                    token=self._token,
                    what=f"{what} to chat {chat_id}",
                    sleep=sleep,
                )
            return outcome
        finally:
            await request.shutdown()
