"""Results shared between many fresh streams over one series: what a parameter sweep needs, since each of its
parameter sets builds its own strategy over the same frame and would otherwise compute the same windows again.

Inside ``with sharing():`` a fresh primitive (nothing seen yet) given a series it has already been given, with
the same settings, returns the result computed the first time instead of computing it again. Inside the block
those results are read-only arrays (every stream gets the same ones): a strategy that writes into the output of a
primitive in place fails there with numpy's "read-only" error, and must work on a copy. A
series is recognised by its memory and confirmed by its values (a stored copy, bit for bit), so a series
changed in place is computed anew. Outside the block nothing is kept. Threads started with a copy of the
context (``contextvars.copy_context().run``) share the block's results.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

_SHARED: ContextVar[dict[Hashable, tuple[np.ndarray, Any]] | None] = ContextVar("shared_streams", default=None)


@contextmanager
def sharing() -> Iterator[None]:
    """Share fresh streams' results over identical series for the duration of the block."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _key(series: np.ndarray, settings: Hashable) -> Hashable:
    return series.__array_interface__["data"][0], series.shape, series.strides, settings


def recall(series: np.ndarray, settings: Hashable) -> Any | None:
    """What a fresh stream with ``settings`` gave for ``series`` earlier in the block, or None."""
    shared = _SHARED.get()
    if shared is None:
        return None
    found = shared.get(_key(series, settings))
    if found is None or not _same_bits(found[0], series):
        return None
    return found[1]


def _same_bits(kept: np.ndarray, series: np.ndarray) -> bool:
    if not (kept.flags.c_contiguous and series.flags.c_contiguous):
        return bool(np.array_equal(kept, series, equal_nan=True))
    return bool(np.array_equal(kept.view(np.uint8), series.view(np.uint8)))


def remember(series: np.ndarray, settings: Hashable, result: tuple[Any, ...]) -> tuple[Any, ...]:
    """Keep what a fresh stream with ``settings`` gave for ``series`` (inside a block only); returns ``result``
    with its arrays made read-only inside a block (they are handed to every later stream), as it is outside."""
    shared = _SHARED.get()
    if shared is None:
        return result
    for part in result:
        if isinstance(part, np.ndarray):
            part.flags.writeable = False
    shared[_key(series, settings)] = (series.copy(), result)
    return result
