"""Timing in tests: only ever to compare two costs measured in the same run (how a cost grows with the input),
never against a wall-clock bound, so a test holds on a slow machine as on a fast one."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """The shortest of ``repeats`` timings of ``work()``, in seconds (the least disturbed by other processes)."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best
