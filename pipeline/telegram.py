"""A small synchronous Telegram sender (text and photos) for scheduled jobs, and the Bot API edge it shares
with the runtime's notifier.

``TelegramSender.send_message`` and ``send_photo`` deliver to every allow-listed chat and return, per chat,
whether Telegram accepted it. They never raise for delivery problems:

* **Off without a token.** ``enabled`` is False and every send returns an empty result (the caller says so).
* **Rate limit.** At most ``rate_per_minute`` requests in any 60 s window (retries count); over the limit a
  send waits.
* **Retries.** Network errors, timeouts, 429 (waiting the ``retry_after`` Telegram asks for) and 5xx are
  retried up to ``max_retries`` times with exponential back-off from ``backoff_s``; permanent refusals (bad
  request, bot blocked, token rejected) are not.
* **The token stays secret.** The client library only ever holds ``REDACTED``; :class:`TokenTransport` puts
  the real token into the request path at the socket, and logged errors are redacted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import urllib.request
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Final
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr
from telegram import Bot
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger(__name__)

DEFAULT_API_URL: Final = "https://api.telegram.org"
TOKEN_PLACEHOLDER: Final = "REDACTED"  # noqa: S105 (a placeholder, not a secret)
"""What the client library holds instead of the token; the transport swaps in the real one at the socket."""
MAX_MESSAGE_CHARS: Final = 4096
MAX_CAPTION_CHARS: Final = 1024


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


def retry_after_seconds(error: RetryAfter) -> float:
    """How long a 429 asks to wait, in seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)  # the int-or-timedelta transition
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def redact(text: str, token: str | None) -> str:
    """``text`` with the token (plain or URL-quoted) replaced by the placeholder."""
    if not token:
        return text
    return text.replace(token, TOKEN_PLACEHOLDER).replace(quote(token, safe=""), TOKEN_PLACEHOLDER)


class SlidingWindow:
    """At most ``per_minute`` acquisitions in any 60 s (a blocking limiter for synchronous callers)."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute < 1:
            raise ValueError(f"telegram rate_per_minute must be at least 1, got {per_minute}")
        self._per_minute = per_minute
        self._monotonic = monotonic
        self._sleep = sleep
        self._spent: deque[float] = deque()

    def reserve(self) -> float:
        """Take a slot and return 0.0, or return how many seconds until one is free (taking nothing).

        The non-blocking core, for callers that wait their own way (an event loop's sleep)."""
        now = self._monotonic()
        while self._spent and now - self._spent[0] >= 60.0:
            self._spent.popleft()
        if len(self._spent) < self._per_minute:
            self._spent.append(now)
            return 0.0
        return 60.0 - (now - self._spent[0])

    def acquire(self) -> None:
        """Take a slot, sleeping until one is free."""
        while (delay := self.reserve()) > 0:
            self._sleep(delay)


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"telegram max_retries must be 0 or more, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"telegram timeout_s must be positive, got {timeout_s}")
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._token: str | None = secret.strip() if secret and secret.strip() else None
        self.chat_ids = tuple(dict.fromkeys(int(chat_id) for chat_id in chat_ids))
        self._root = api_root(api_url)
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._limiter = SlidingWindow(rate_per_minute, monotonic, sleep)

    def __repr__(self) -> str:
        return f"TelegramSender({'on' if self.enabled else 'off'}, chats={list(self.chat_ids)}, api={self._root})"

    @property
    def enabled(self) -> bool:
        """A token and at least one chat are configured."""
        return self._token is not None and bool(self.chat_ids)

    def send_message(self, text: str) -> dict[int, bool]:
        """Send ``text`` (cut to Telegram's 4096 characters) to every chat; per chat, whether it arrived."""
        if not text.strip():
            raise ValueError("a telegram message needs some text")
        body = text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"

        async def call(bot: Bot, chat_id: int) -> object:
            return await bot.send_message(chat_id=chat_id, text=body)

        return self._deliver("message", call)

    def send_photo(self, png: bytes, caption: str = "", filename: str = "chart.png") -> dict[int, bool]:
        """Send a PNG image with an optional caption to every chat; per chat, whether it arrived."""
        if not png:
            raise ValueError("a telegram photo needs image bytes")
        short = caption if len(caption) <= MAX_CAPTION_CHARS else caption[: MAX_CAPTION_CHARS - 1] + "…"

        async def call(bot: Bot, chat_id: int) -> object:
            return await bot.send_photo(chat_id=chat_id, photo=png, caption=short or None, filename=filename)

        return self._deliver("photo", call)

    # ---------------------------------------------------------------------------------------------

    def _deliver(self, what: str, call: Call) -> dict[int, bool]:
        if not self.enabled:
            return {}
        return asyncio.run(self._deliver_all(what, call))

    async def _deliver_all(self, what: str, call: Call) -> dict[int, bool]:
        assert self._token is not None
        request = HTTPXRequest(
            connection_pool_size=1,
            read_timeout=self._timeout_s,
            write_timeout=self._timeout_s,
            connect_timeout=self._timeout_s,
            pool_timeout=self._timeout_s,
            media_write_timeout=self._timeout_s,
            httpx_kwargs={"transport": TokenTransport(self._token, environment_proxy(self._root)),
                          "trust_env": False},
        )
        bot = Bot(TOKEN_PLACEHOLDER, base_url=f"{self._root}/bot", base_file_url=f"{self._root}/file/bot",
                  request=request)
        await request.initialize()
        try:
            return {chat_id: await self._one(bot, chat_id, what, call) for chat_id in self.chat_ids}
        finally:
            await request.shutdown()

    async def _one(self, bot: Bot, chat_id: int, what: str, call: Call) -> bool:
        attempts = self._max_retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            await asyncio.to_thread(self._limiter.acquire)
            try:
                await call(bot, chat_id)
                return True
            except RetryAfter as exc:
                delay = retry_after_seconds(exc)
                problem = f"flood control (429), Telegram asks to wait {delay:g} s"
            except ChatMigrated as exc:
                log.error("telegram %s to chat %s not delivered: the group moved to chat %s", what, chat_id,
                          exc.new_chat_id)
                return False
            except (BadRequest, Forbidden, InvalidToken) as exc:
                log.error("telegram %s to chat %s not delivered: %s", what, chat_id, self._describe(exc))
                return False
            except NetworkError as exc:  # connection trouble, timeouts, 5xx
                delay = min(self._backoff_s * 2 ** (attempt - 1), self._max_backoff_s)
                problem = self._describe(exc)
            except TelegramError as exc:
                log.error("telegram %s to chat %s not delivered: %s", what, chat_id, self._describe(exc))
                return False
            if attempt == attempts:
                break
            log.warning("telegram %s to chat %s failed (attempt %d of %d): %s; retrying in %.3g s", what, chat_id,
                        attempt, attempts, problem, delay)
            await asyncio.to_thread(self._sleep, delay)
        log.error("telegram %s to chat %s not delivered after %d attempts: %s", what, chat_id, attempts, problem)
        return False

    def _describe(self, error: BaseException) -> str:
        return redact("".join(traceback.format_exception_only(error)).strip(), self._token)
