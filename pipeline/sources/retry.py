"""Retries with exponential backoff for calls to data venues."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def with_retries(
    call: Callable[[], T],
    *,
    retryable: tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    what: str,
    max_retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
    give_up: Callable[[BaseException, int], BaseException] | None = None,
) -> T:
    """Run ``call``; on a ``retryable`` error (an exception type, or a test of the exception) wait
    ``backoff_s * 2**attempt`` and try again. Other errors pass through at once.

    After ``max_retries`` retries the error ``give_up(last error, attempts)`` is raised (the last error itself
    when ``give_up`` returns it); by default a ``RuntimeError`` with ``what`` in its message.
    """
    test = retryable if callable(retryable) and not isinstance(retryable, tuple) else None
    types = retryable if isinstance(retryable, tuple) else (Exception,)
    attempt = 0
    while True:
        try:
            return call()
        except types as exc:
            if test is not None and not test(exc):
                raise
            if attempt >= max_retries:
                final = (give_up(exc, attempt + 1) if give_up is not None
                         else RuntimeError(f"{what} failed after {attempt + 1} attempts: {exc}"))
                if final is exc:
                    raise
                raise final from exc
            delay = backoff_s * (2**attempt)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc,
                        attempt + 1, max_retries, delay)
            sleep(delay)
            attempt += 1
