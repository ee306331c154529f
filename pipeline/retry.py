"""The one retry policy for calls to venues and services, built on tenacity.

* **What is transient** (``is_transient``): timeouts and dropped or refused connections, HTTP 429 and 5xx
  answers, and their ccxt, alpaca-py, requests and httpx forms (ccxt's ``OperationFailed`` family: network
  errors, timeouts, rate limits, outages, maintenance and venue-side failures). Everything else (a refusal, bad
  input, bad credentials) passes through at once.
* **How long to wait** (``RetryPolicy.delay``): ``base_s`` doubled after each failure, at most ``cap_s``, less a
  random share of up to ``jitter`` so that many clients do not retry in step; a ``Retry-After`` the answer
  carries is honoured (up to ``retry_after_cap_s``).
* **When to give up**: after ``attempts`` tries, when the next wait would pass ``deadline_s`` (measured on the
  policy's ``Clock``), or as soon as ``until()`` says so; the caller's ``give_up`` then turns the last error into
  the one to raise (by default ``RetriesExhausted``, naming what failed and how often).
* **One log line per retry**, on the ``pipeline.retry`` logger, with URL query strings, keys, tokens and
  signatures removed.

``sleep``, ``clock`` and ``rng`` are injectable, so tests drive a policy without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, TypeVar

import pandas as pd
import tenacity
from tenacity import AttemptManager, RetryCallState

from pipeline.clock import Clock, SystemClock

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_JITTER = 0.2
"""The largest share of a wait taken off at random."""
TRANSIENT_STATUS = frozenset({408, 425, 429})
"""HTTP statuses (besides every 5xx) worth another attempt."""
_MAX_TEXT = 300
_CHAIN_DEPTH = 5

Transient = Callable[[BaseException], bool]
GiveUp = Callable[[BaseException, int], BaseException]
"""Turns the last error and the number of attempts into the error to raise (or the last error itself)."""
OnRetry = Callable[[RetryCallState], None]
"""Told of every failed attempt before its wait (instead of the policy's own log line)."""
AsyncSleep = Callable[[float], Awaitable[None]]


class RetriesExhausted(RuntimeError):
    """A call still failed when the retry policy gave up; ``last`` is its last error."""

    def __init__(self, message: str, last: BaseException, attempts: int) -> None:
        super().__init__(message)
        self.last = last
        self.attempts = attempts


# ---------------------------------------------------------------------------------------------- errors


def _module(name: str) -> Any:
    """A library already imported (its errors can exist only then), or None."""
    return sys.modules.get(name)


def _status(exc: BaseException) -> int | None:
    """The HTTP status an error carries, if any."""
    for name in ("status_code", "http_status_code", "status"):
        value = getattr(exc, name, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def _transient_status(status: int | None) -> bool:
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


def is_transient(exc: BaseException) -> bool:
    """Whether another attempt may succeed: network faults, timeouts, 429 and 5xx (see the module docstring)."""
    ccxt = _module("ccxt")
    if ccxt is not None and isinstance(exc, ccxt.BaseError):
        return isinstance(exc, ccxt.OperationFailed)
    alpaca = _module("alpaca.common.exceptions")
    if alpaca is not None and isinstance(exc, alpaca.APIError):
        status = exc.status_code
        return status is None or _transient_status(status)
    requests = _module("requests")
    if requests is not None and isinstance(exc, requests.RequestException):
        if isinstance(exc, requests.HTTPError):
            return _transient_status(_status(exc))
        return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                                requests.exceptions.ChunkedEncodingError))
    httpx = _module("httpx")
    if httpx is not None and isinstance(exc, httpx.HTTPError):
        if isinstance(exc, httpx.HTTPStatusError):
            return _transient_status(exc.response.status_code)
        return isinstance(exc, httpx.TransportError)
    return isinstance(exc, (TimeoutError, ConnectionError))


def any_error(exc: BaseException) -> bool:
    """Every ``Exception`` is worth another attempt (for loops that must outlive any venue fault)."""
    return isinstance(exc, Exception)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from or while handling."""
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


def retry_after(exc: BaseException, now: pd.Timestamp) -> float | None:
    """Seconds the answer behind ``exc`` asked to wait (its ``Retry-After`` header), or None."""
    for error in _chain(exc):
        headers = getattr(getattr(error, "response", None), "headers", None)
        value = headers.get("Retry-After") if headers is not None and hasattr(headers, "get") else None
        if value is None:
            continue
        text = str(value).strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            pass
        try:
            when = pd.Timestamp(parsedate_to_datetime(text))
        except (TypeError, ValueError, IndexError):
            return None
        when = when.tz_localize("UTC") if when.tzinfo is None else when
        return max(0.0, (when - now).total_seconds())
    return None


_SCRUB = (
    (re.compile(r"(https?://[^\s?#]+)\?[^\s]*"), r"\1?…"),
    (re.compile(r"(?i)\b(api[-_]?key|apikey|secret[-_a-z]*|token|signature|password|passphrase)(\"?\s*[=:]\s*\"?)"
                r"[^\s&,\"'}]+"), r"\1\2***"),
    (re.compile(r"\bbot\d+:[A-Za-z0-9_-]+"), "bot***"),
)


def scrub(text: str) -> str:
    """``text`` without URL query strings, keys, secrets, tokens or signatures, at most 300 characters."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text[:_MAX_TEXT]


def describe(exc: BaseException) -> str:
    """An error for messages and logs: its type, its HTTP status when it has one, and its scrubbed text."""
    status = _status(exc)
    text = str(exc)
    if status is not None and not text.startswith(f"HTTP {status}"):
        text = f"HTTP {status}: {text}"
    return scrub(f"{type(exc).__name__}: {text}")


# ---------------------------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried: ``attempts`` tries in all (None: no limit), waits from ``base_s`` doubling up to
    ``cap_s`` less up to ``jitter`` of it at random, a ``Retry-After`` honoured up to ``retry_after_cap_s``, and
    no wait that would end past ``deadline_s`` seconds after the first attempt (None: no deadline)."""

    attempts: int | None = 6
    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = DEFAULT_JITTER
    deadline_s: float | None = None
    retry_after_cap_s: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    async_sleep: AsyncSleep = field(default=asyncio.sleep, compare=False)
    clock: Clock = field(default_factory=SystemClock, compare=False)
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"retry attempts {self.attempts} is not valid: at least one attempt is made")
        if self.base_s < 0 or self.cap_s < self.base_s:
            raise ValueError(f"backoff base {self.base_s} s and cap {self.cap_s} s are not valid: the base must "
                             "be zero or more and the cap at least the base")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter {self.jitter} is not valid: use a share from 0 up to (not including) 1")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError(f"retry deadline {self.deadline_s} s is not valid: it must be positive")

    @classmethod
    def from_settings(cls, max_retries: int, backoff_s: float, **options: Any) -> RetryPolicy:
        """The policy of the settings ``max_retries`` (retries after the first attempt) and ``retry_backoff_s``."""
        cap = max(float(options.pop("cap_s", 60.0)), backoff_s)
        return cls(attempts=max_retries + 1, base_s=backoff_s, cap_s=cap, **options)

    def with_options(self, **changes: Any) -> RetryPolicy:
        """This policy with some fields changed (``attempts=None`` for a loop that retries until stopped)."""
        return replace(self, **changes)

    def delay(self, failures: int, error: BaseException | None = None) -> float:
        """The wait after the ``failures``-th failure in a row (1 for the first), given its ``error``."""
        backoff = min(self.cap_s, self.base_s * 2.0 ** min(failures - 1, 60))
        wait = backoff * (1.0 - self.jitter * self.rng())
        asked = retry_after(error, self.clock.now()) if error is not None else None
        if asked is not None:
            wait = max(wait, min(asked, self.retry_after_cap_s))
        return wait

    # ------------------------------------------------------------------------------------------ running calls
    def call(self, fn: Callable[[], T], *, what: str, transient: Transient = is_transient,
             give_up: GiveUp | None = None, until: Callable[[], bool] | None = None) -> T:
        """``fn()``, retried while it raises a ``transient`` error; any other error passes through at once.

        When the policy gives up, ``give_up(last error, attempts)`` is raised (the last error itself when
        ``give_up`` returns it); by default ``RetriesExhausted`` naming ``what``.
        """
        result: T = self._retrying(what, transient, give_up, until)(fn)
        return result

    def attempts_of(self, *, what: str, transient: Transient = is_transient, give_up: GiveUp | None = None,
                    until: Callable[[], bool] | None = None) -> Iterator[AttemptManager]:
        """The attempts of a block, for code that must act between them (a generator that yields while it waits):
        ``for attempt in policy.attempts_of(what=...): with attempt: ...``."""
        return iter(self._retrying(what, transient, give_up, until))

    def async_attempts_of(self, *, what: str, transient: Transient = is_transient, give_up: GiveUp | None = None,
                          until: Callable[[], bool] | None = None, describe_error: Callable[[BaseException], str]
                          = describe, on_retry: OnRetry | None = None) -> tenacity.AsyncRetrying:
        """The attempts of a block in a coroutine, waiting with ``async_sleep``: ``async for attempt in
        policy.async_attempts_of(what=...): with attempt: await ...``. ``describe_error`` words an error in
        the retry log line (e.g. with a token blanked out); ``on_retry`` replaces that line."""
        options = self._options(what, transient, give_up, until, describe_error, on_retry)
        return tenacity.AsyncRetrying(sleep=self.async_sleep, **options)

    def _retrying(self, what: str, transient: Transient, give_up: GiveUp | None,
                  until: Callable[[], bool] | None) -> tenacity.Retrying:
        return tenacity.Retrying(sleep=self.sleep, **self._options(what, transient, give_up, until, describe, None))

    def _options(self, what: str, transient: Transient, give_up: GiveUp | None, until: Callable[[], bool] | None,
                 describe_error: Callable[[BaseException], str], on_retry: OnRetry | None) -> dict[str, Any]:
        """The stop, wait, retry, log and give-up rules shared by the blocking and the asynchronous forms."""
        started = self.clock.now()
        failed: list[BaseException] = []  # the last failure, kept for a stop that comes during the wait after it

        def stop(state: RetryCallState) -> bool:
            if until is not None and until():
                return True
            if self.attempts is not None and state.attempt_number >= self.attempts:
                return True
            if self.deadline_s is None:
                return False
            spent = (self.clock.now() - started).total_seconds()
            return spent + state.upcoming_sleep > self.deadline_s

        def wait(state: RetryCallState) -> float:
            return self.delay(state.attempt_number, _error(state))

        def before_sleep(state: RetryCallState) -> None:
            failed[:] = [_error(state)]
            if on_retry is not None:
                on_retry(state)
                return
            limit = f"/{self.attempts - 1}" if self.attempts is not None else ""
            log.warning("%s failed (%s); retry %d%s in %.2fs", what, describe_error(failed[0]),
                        state.attempt_number, limit, state.upcoming_sleep)

        def give_up_with(error: BaseException, attempts: int) -> NoReturn:
            final = (give_up(error, attempts) if give_up is not None else
                     RetriesExhausted(f"{what} failed after {attempts} attempts: {describe_error(error)}", error,
                                      attempts))
            if final is error:
                raise error
            raise final from error

        def before(state: RetryCallState) -> None:
            """``until`` coming true during a wait ends the retries before the next attempt is made."""
            if failed and until is not None and until():
                give_up_with(failed[0], state.attempt_number - 1)

        def exhausted(state: RetryCallState) -> NoReturn:
            give_up_with(_error(state), state.attempt_number)

        return {"stop": stop, "wait": wait, "retry": tenacity.retry_if_exception(transient), "before": before,
                "before_sleep": before_sleep, "retry_error_callback": exhausted}


def _error(state: RetryCallState) -> BaseException:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if error is None:  # pragma: no cover - tenacity asks only after a failed attempt
        raise RuntimeError("retry policy consulted without a failed attempt")
    return error
