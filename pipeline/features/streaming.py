"""Streaming step primitives, compiled and exact, shared by the features and the strategies.

A decision is a streaming computation (DESIGN.md, section 2): each new value of a series advances a small state
by one step. Every primitive here has one ``update(values)`` that takes the next values of its series (one or
many, continuing those given before) and returns its output for exactly those values. The batch form over a
history is the same ``update`` called once with the whole history: its compiled loop applies the same per-value
step in the same order, so the output is the same bit for bit however the series is cut into chunks.
``state()`` is an exact JSON-serialisable snapshot (floats as base64 of their raw little-endian bytes) and
``restore(state)`` continues from it bit-identically. A state's size depends on the primitive's parameters only,
never on how many values it has seen, and so does the work per value.

* ``Ema(alpha)``: ``pandas.Series.ewm(alpha=alpha, adjust=False).mean()`` with pandas' own arithmetic (the
  weights ``1 - alpha`` and ``alpha``, ``(old_wt * e + alpha * x) / (old_wt + alpha)``, no update when
  ``e == x``, NaN values skipped as pandas does); ``span_alpha(w)`` and ``smoothing_alpha(a)`` give the ``alpha``
  that pandas derives from ``span=w`` and from ``alpha=a``.
* ``Wilder(period)``: Wilder's smoothing of a series whose first value is skipped (it has no predecessor): the
  numpy mean of the next ``period`` values, then ``Ema(smoothing_alpha(1 / period))``.
* ``Rsi(period)``: Wilder's RSI of closes, ``100 * gain / (gain + loss)`` (``50`` when both are 0).
* ``Window(window, ddof, with_std)``: mean and standard deviation of the last ``window`` values, summed exactly
  over the window's own values (``x[i], x[i-1], ..., x[i-window+1]`` from 0, then the squared deviations in
  the same order; a window whose values are all equal has exactly that value as mean and 0 as deviation).
* ``Lag(lag)``: the series ``lag`` values back (NaN before).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Protocol

import numpy as np
from numba import njit

from pipeline.domain import DataError
from pipeline.features.shared import recall, remember

_BLOCK = 512


class Stateful(Protocol):
    """A streaming computation whose exact state can be saved and restored."""

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


def pack(values: np.ndarray) -> str:
    """``values`` as base64 of their raw little-endian float64 bytes: exact and JSON-safe."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def unpack(text: object, size: int, what: str) -> np.ndarray:
    """The inverse of ``pack``; ``DataError`` naming ``what`` unless ``text`` holds exactly ``size`` values."""
    try:
        raw = base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise DataError(f"saved {what} is not base64-encoded float64 values: {exc}") from exc
    if len(raw) != 8 * size:
        raise DataError(f"saved {what} holds {len(raw) / 8:g} values, expected {size}")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


def count(state: dict[str, Any], key: str, limit: int, what: str) -> int:
    """An integer field of a saved state, checked to lie in ``0..limit``."""
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise DataError(f"saved {what} field {key!r} must be an integer in 0..{limit}, got {value!r}")
    return value


def span_alpha(span: int) -> float:
    """The ``alpha`` pandas uses for ``ewm(span=span)``: ``1 / (1 + (span - 1) / 2)`` in its float steps."""
    centre_of_mass = float((span - 1) / 2)
    return 1.0 / (1.0 + centre_of_mass)


def smoothing_alpha(alpha: float) -> float:
    """The ``alpha`` pandas uses for ``ewm(alpha=alpha)`` (it goes through the centre of mass and back)."""
    centre_of_mass = float((1 - alpha) / alpha)
    return 1.0 / (1.0 + centre_of_mass)


# ------------------------------------------------------------------------------------------ compiled steps
@njit(cache=True)
def ema_step(weighted: float, old_wt: float, cur: float, alpha: float, factor: float) -> tuple[float, float]:
    """One step of pandas' ``ewm(adjust=False).mean()``: the new ``(weighted, old_wt)`` after value ``cur``."""
    if weighted == weighted:
        old_wt *= factor
        if cur == cur:
            if weighted != cur:
                weighted = (old_wt * weighted + alpha * cur) / (old_wt + alpha)
            old_wt = 1.0
    elif cur == cur:
        weighted = cur
    return weighted, old_wt


@njit(cache=True)
def _ema_run(x: np.ndarray, state: np.ndarray, alpha: float, factor: float) -> np.ndarray:
    out = np.empty(x.shape[0])
    weighted, old_wt = state[0], state[1]
    for i in range(x.shape[0]):
        weighted, old_wt = ema_step(weighted, old_wt, x[i], alpha, factor)
        out[i] = weighted
    state[0], state[1] = weighted, old_wt
    return out


@njit(cache=True)
def _window_rows(
    buf: np.ndarray, first: int, run_before: int, window: int, ddof: int, with_std: bool,
    mean: np.ndarray, std: np.ndarray,
) -> int:
    """Moments of the ``window`` values ending at each of ``buf[first:]`` into ``mean``/``std`` (row ``p - first``).

    ``buf[:first]`` are the values before (at most ``window - 1``); ``run_before`` is how many equal values end
    at ``buf[first - 1]``. Rows whose window would start before ``buf[0]`` stay NaN. Each row's sum runs over
    ``buf[p], buf[p-1], ..., buf[p-window+1]`` from 0, then the squared deviations in the same order. Rows are
    summed up to ``_BLOCK`` at a time as independent sums, so the grouping (and the chunking) changes no result.
    Returns the run of equal values ending at the last value (capped at ``window``).
    """
    n = buf.shape[0]
    run = np.empty(n - first, dtype=np.int64)
    current = run_before
    for p in range(first, n):
        current = min(current + 1, window) if p > 0 and buf[p] == buf[p - 1] else 1
        run[p - first] = current
    total = np.empty(_BLOCK)
    squares = np.empty(_BLOCK)
    start = max(first, window - 1)
    while start < n:
        size = min(_BLOCK, n - start)
        total[:size] = 0.0
        for j in range(window):
            values = buf[start - j : start - j + size]
            for k in range(size):
                total[k] += values[k]
        for k in range(size):
            row = start + k - first
            total[k] = buf[start + k] if run[row] >= window else total[k] / window
            mean[row] = total[k]
        if with_std:
            squares[:size] = 0.0
            for j in range(window):
                values = buf[start - j : start - j + size]
                for k in range(size):
                    deviation = values[k] - total[k]
                    squares[k] += deviation * deviation
            for k in range(size):
                row = start + k - first
                std[row] = 0.0 if run[row] >= window else np.sqrt(squares[k] / (window - ddof))
        start += size
    return current


def _floats(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ primitives
class Ema:
    """``pandas.Series.ewm(alpha=alpha, adjust=False).mean()`` as a stream (seeded with the first value)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = float(alpha)
        self.factor = 1.0 - self.alpha
        self._state = np.array([np.nan, 1.0])  # (weighted, old_wt) as pandas names them

    @classmethod
    def of_span(cls, span: int) -> Ema:
        return cls(span_alpha(span))

    def update(self, x: np.ndarray) -> np.ndarray:
        result: np.ndarray = _ema_run(_floats(x), self._state, self.alpha, self.factor)
        return result

    def state(self) -> dict[str, Any]:
        return {"ema": pack(self._state)}

    def restore(self, state: dict[str, Any]) -> None:
        self._state = unpack(state.get("ema"), 2, "EMA state")


class Wilder:
    """Wilder's smoothing: the first value is skipped, the next ``period`` values' mean (``numpy.mean``) is the
    seed, then an exponential mean with ``alpha = 1 / period`` (as ``ewm(alpha=1/period, adjust=False)``).

    NaN until the seed; the seed is the output at the ``period + 1``-th value.
    """

    def __init__(self, period: int) -> None:
        self.period = int(period)
        self._ema = Ema(smoothing_alpha(1.0 / self.period))
        self._seed = np.zeros(self.period)
        self._seen = 0  # values seen, counted up to period + 1 (the seed is complete)

    def update(self, x: np.ndarray) -> np.ndarray:
        x = _floats(x)
        out = np.full(x.shape[0], np.nan)
        i = 0
        if self._seen <= self.period and x.shape[0]:
            if self._seen == 0:
                i, self._seen = 1, 1
            take = min(x.shape[0] - i, self.period + 1 - self._seen)
            self._seed[self._seen - 1 : self._seen - 1 + take] = x[i : i + take]
            self._seen += take
            i += take
            if self._seen == self.period + 1:
                out[i - 1] = self._ema.update(np.array([self._seed.mean()]))[0]
        if i < x.shape[0] and self._seen > self.period:
            out[i:] = self._ema.update(x[i:])
        return out

    def state(self) -> dict[str, Any]:
        return {"seen": self._seen, "seed": pack(self._seed), **self._ema.state()}

    def restore(self, state: dict[str, Any]) -> None:
        seen = count(state, "seen", self.period + 1, "Wilder state")
        seed = unpack(state.get("seed"), self.period, "Wilder seed")
        self._ema.restore(state)
        self._seen, self._seed = seen, seed


class Lag:
    """The series ``lag`` values back: NaN for the first ``lag`` values."""

    def __init__(self, lag: int) -> None:
        self.lag = int(lag)
        self._tail = np.full(self.lag, np.nan)

    def update(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate((self._tail, _floats(x)))
        self._tail = buf[buf.shape[0] - self.lag :].copy()
        return buf[: x.shape[0]].copy()

    def state(self) -> dict[str, Any]:
        return {"tail": pack(self._tail)}

    def restore(self, state: dict[str, Any]) -> None:
        self._tail = unpack(state.get("tail"), self.lag, "lag buffer")


class Window:
    """Mean (and, with ``with_std``, standard deviation with ``ddof``) of the last ``window`` values, exactly.

    ``update`` returns ``(mean, std)`` (``std`` all NaN without ``with_std``), NaN until ``window`` values exist.
    The state is the last ``window - 1`` values and the run of equal values ending at the last one.
    """

    def __init__(self, window: int, ddof: int = 0, with_std: bool = False) -> None:
        self.window = int(window)
        self.ddof = int(ddof)
        self.with_std = bool(with_std)
        self._tail = np.zeros(self.window - 1)
        self._filled = 0  # how many of the tail's last values are real
        self._run = 0

    def update(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = _floats(x)
        filled = self._filled
        buf = np.concatenate((self._tail[self._tail.shape[0] - filled :], x))
        fresh = filled == 0 and self._run == 0
        settings = ("window", self.window, self.ddof, self.with_std)
        known = recall(x, settings) if fresh else None
        if known is not None:
            mean, std, self._run = known
        else:
            mean = np.full(x.shape[0], np.nan)
            std = np.full(x.shape[0], np.nan)
            self._run = _window_rows(buf, filled, self._run, self.window, self.ddof, self.with_std, mean, std)
            if fresh:
                mean, std = remember(x, settings, (mean, std, self._run))[:2]
        keep = min(buf.shape[0], self.window - 1)
        self._tail[self._tail.shape[0] - keep :] = buf[buf.shape[0] - keep :]
        self._filled = keep
        return mean, std

    def state(self) -> dict[str, Any]:
        return {"tail": pack(self._tail), "filled": self._filled, "run": self._run}

    def restore(self, state: dict[str, Any]) -> None:
        tail = unpack(state.get("tail"), self.window - 1, "window buffer")
        filled = count(state, "filled", self.window - 1, "window state")
        self._run = count(state, "run", self.window, "window state")
        self._tail, self._filled = tail, filled


class Rsi:
    """Wilder's RSI of closes over ``period`` changes: NaN on the first ``period`` closes."""

    def __init__(self, period: int) -> None:
        self.period = int(period)
        self._previous = Lag(1)
        self._gain = Wilder(self.period)
        self._loss = Wilder(self.period)

    def update(self, close: np.ndarray) -> np.ndarray:
        close = _floats(close)
        change = close - self._previous.update(close)
        gain = self._gain.update(np.maximum(change, 0.0))
        loss = self._loss.update(np.maximum(-change, 0.0))
        total = gain + loss
        with np.errstate(invalid="ignore", divide="ignore"):
            rsi: np.ndarray = np.where(total > 0.0, 100.0 * gain / total, 50.0)
        rsi[np.isnan(total)] = np.nan
        return rsi

    def state(self) -> dict[str, Any]:
        return {"previous": self._previous.state(), "gain": self._gain.state(), "loss": self._loss.state()}

    def restore(self, state: dict[str, Any]) -> None:
        for key, part in (("previous", self._previous), ("gain", self._gain), ("loss", self._loss)):
            part.restore(section(state, key, "RSI state"))


def section(state: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """The part ``key`` of a saved state (a dict), or ``DataError`` naming what lacks it."""
    part = state.get(key)
    if not isinstance(part, dict):
        raise DataError(f"saved {what} lacks its {key!r} part")
    return part

