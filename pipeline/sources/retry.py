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
    retryable: tuple[type[BaseException], ...],
    what: str,
    max_retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; on a ``retryable`` error wait ``backoff_s * 2**attempt`` and try again.

    After ``max_retries`` retries the last error is raised with ``what`` in its message.
    """
    attempt = 0
    while True:
        try:
            return call()
        except retryable as exc:
            if attempt >= max_retries:
                raise RuntimeError(f"{what} failed after {attempt + 1} attempts: {exc}") from exc
            delay = backoff_s * (2**attempt)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc,
                        attempt + 1, max_retries, delay)
            sleep(delay)
            attempt += 1
