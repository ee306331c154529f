"""Measures of overfitting of a parameter study: the deflated Sharpe ratio and the probability of backtest
overfitting, each one recomputable by hand.

Notation: ``Phi`` is the standard normal CDF and ``Phi^-1`` its inverse (``statistics.NormalDist``), ``g`` the
Euler–Mascheroni constant 0.5772156649…, ``e`` Euler's number. Every Sharpe ratio here is *per period*
(per bar, risk-free rate 0, never annualised).

Deflated Sharpe ratio (Bailey & López de Prado, 2014)
-----------------------------------------------------
``deflated_sharpe(sharpe, n_returns, skew, kurtosis, trial_sharpes)`` with ``SR = sharpe`` (the selected, best
trial), ``T = n_returns``, ``kurtosis`` the ordinary kurtosis (3 for a normal distribution) and ``x`` the finite
entries of ``trial_sharpes`` (NaN entries are left out), ``N`` of them:

* ``SR0 = sqrt(var(x)) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N * e)))`` (var with ddof = 1), the
  expected largest Sharpe ratio of ``N`` trials without skill; ``SR0 = 0`` when ``N = 1``;
* ``D = 1 - skew * SR + (kurtosis - 1) / 4 * SR^2``;
* ``DSR = Phi((SR - SR0) * sqrt(T - 1) / sqrt(D))``: the probability that the true Sharpe ratio exceeds ``SR0``.
  With ``N = 1`` it is the probabilistic Sharpe ratio against 0.

``return_moments(r)`` of ``n`` returns gives ``mean(r) / stdev(r)`` (ddof = 1), ``skew = m3 / m2^1.5`` and
``kurtosis = m4 / m2^2`` with the central moments ``mk = mean((r - mean(r))^k)``; a constant series gives
``(0, 0, 3)``.

Probability of backtest overfitting (Bailey, Borwein, López de Prado & Zhu, 2015)
---------------------------------------------------------------------------------
Combinatorially symmetric cross-validation from per-block sums: ``sums[n, s]`` and ``squares[n, s]`` are the sum
and the sum of squares of trial ``n``'s per-bar returns in time block ``s``, ``counts[s]`` the bars in block ``s``.
``blocks = S`` (default: the columns of ``sums``; a divisor of them merges runs of adjacent columns) must be even.

* A combination picks ``S/2`` blocks as in-sample (IS); the others are out-of-sample (OOS). All ``C(S, S/2)``
  combinations are used, or a seeded random set of 20,000 distinct ones when there are more (``sampled``).
* Pooled over a set of blocks, with ``s``, ``q``, ``c`` the summed sums, squares and counts: ``mean = s / c``,
  ``var = (q - s^2 / c) / (c - 1)``, ``Sharpe = mean / sqrt(var)``; ``0`` when ``q - s^2 / c <= 1e-10 * q``
  (zero variance up to rounding).
* ``n*`` = the trial with the best IS Sharpe (ties: the lowest index); ``rank`` = its OOS rank among the ``N``
  trials (1 = worst … N = best, ties get the average rank); ``omega = rank / (N + 1)``;
  ``logit = ln(omega / (1 - omega))``.
* ``PBO`` = the share of combinations with ``logit <= 0``; ``median_logit`` the median of the logits.
* ``degradation_slope`` = the least-squares slope of OOS Sharpe of ``n*`` on its IS Sharpe across combinations,
  ``cov(IS, OOS) / var(IS)``; ``None`` when every IS Sharpe is the same (``var(IS) <= 1e-10 * mean(IS^2)``).

``block_bounds(n, S)`` = ``floor(i * n / S)`` for ``i = 0 … S``: ``S`` contiguous blocks of ``n`` bars whose sizes
differ by at most one; block ``i`` is bars ``bounds[i] … bounds[i+1] - 1``.

Rejected input (``DataError`` naming the input and the problem): ``n_returns < 2``, a non-finite ``sharpe``,
``skew`` or ``kurtosis``, ``kurtosis < 1``, no finite trial Sharpe, ``D <= 0``, fewer than 2 returns; fewer than 2
trials, an odd ``S`` or ``S < 2``, shapes that disagree, a block of fewer than 2 bars, a non-finite value.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from pipeline.domain import DataError

EULER_GAMMA = 0.5772156649015329
MAX_COMBINATIONS = 20_000
SAMPLE_SEED = 20150101
_CHUNK_CELLS = 250_000  # combinations x trials evaluated at once (arrays that stay in the CPU cache)
_ZERO_VARIANCE = 1e-10
_NORMAL = NormalDist()


@dataclass(frozen=True)
class DeflatedSharpe:
    probability: float
    expected_max_sharpe: float
    trials: int
    sharpe: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain floats and ints, ready for JSON."""
        return {"probability": float(self.probability), "expected_max_sharpe": float(self.expected_max_sharpe),
                "trials": int(self.trials), "sharpe": float(self.sharpe)}


@dataclass(frozen=True, eq=False)
class Overfitting:
    probability: float
    combinations: int
    sampled: bool
    logits: np.ndarray
    median_logit: float
    degradation_slope: float | None
    trials: int
    blocks: int

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """Plain values, ready for JSON: the logits are summarised by their 5/25/50/75/95 % quantiles."""
        slope = None if self.degradation_slope is None else float(self.degradation_slope)
        out: dict[str, float | int | bool | None] = {
            "probability": float(self.probability), "combinations": int(self.combinations),
            "sampled": bool(self.sampled), "trials": int(self.trials), "blocks": int(self.blocks),
            "median_logit": float(self.median_logit), "degradation_slope": slope}
        for pct in (5, 25, 50, 75, 95):
            out[f"logit_q{pct:02d}"] = float(np.quantile(self.logits, pct / 100))
        return out


def _finite_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise DataError(f"{name} {value!r} is not valid: give a number")
    number = float(value)
    if not math.isfinite(number):
        raise DataError(f"{name} {value!r} is not valid: it must be finite")
    return number


def _whole(value: object, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataError(f"{name} {value!r} is not valid: give a whole number")
    if int(value) < least:
        raise DataError(f"{name} {int(value)} is not valid: it must be at least {least}")
    return int(value)


def _floats(values: object, name: str, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} holds values that are not numbers: {exc}") from exc
    if array.ndim != ndim:
        raise DataError(f"{name} has {array.ndim} dimension(s): it must have {ndim}")
    return array


def _require_finite(array: np.ndarray, name: str) -> None:
    if not bool(np.isfinite(array).all()):
        raise DataError(f"{name} holds a missing or infinite value")


def deflated_sharpe(
    sharpe: float, n_returns: int, skew: float, kurtosis: float, trial_sharpes: np.ndarray
) -> DeflatedSharpe:
    """The deflated Sharpe ratio of the best of a study's trials; the formulas are in the module documentation."""
    sr, sk, ku = _finite_number(sharpe, "sharpe"), _finite_number(skew, "skew"), _finite_number(kurtosis, "kurtosis")
    t = _whole(n_returns, "n_returns", 2)
    if ku < 1:
        raise DataError(f"kurtosis {ku!r} is not valid: the ordinary (non-excess) kurtosis is at least 1")
    trials = _floats(trial_sharpes, "trial_sharpes", 1)
    if bool(np.isinf(trials).any()):
        raise DataError("trial_sharpes holds an infinite value: give finite Sharpe ratios (NaN for a missing one)")
    finite = trials[~np.isnan(trials)]
    n = int(finite.size)
    if n == 0:
        raise DataError("trial_sharpes holds no finite Sharpe ratio: give the Sharpe ratio of every trial")
    sr0 = 0.0
    if n > 1:
        sr0 = math.sqrt(float(np.var(finite, ddof=1))) * (
            (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n) + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n * math.e)))
    denominator = 1 - sk * sr + (ku - 1) / 4 * sr**2
    if not denominator > 0:
        raise DataError(f"sharpe, skew and kurtosis give 1 - skew*sharpe + (kurtosis-1)/4*sharpe^2 = {denominator!r}, "
                        "which is not positive: the deflated Sharpe ratio is undefined for these moments")
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(denominator)
    return DeflatedSharpe(probability=_NORMAL.cdf(z), expected_max_sharpe=sr0, trials=n, sharpe=sr)


def return_moments(returns: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe ratio (ddof = 1), skew and ordinary kurtosis of a return series."""
    r = _floats(returns, "returns", 1)
    if r.size < 2:
        raise DataError(f"returns has {r.size} value(s): the moments need at least 2")
    _require_finite(r, "returns")
    if float(np.max(r)) == float(np.min(r)):
        return 0.0, 0.0, 3.0
    centred = r - float(np.mean(r))
    m2, m3, m4 = (float(np.mean(centred**k)) for k in (2, 3, 4))
    return float(np.mean(r)) / float(np.std(r, ddof=1)), m3 / m2**1.5, m4 / m2**2


def block_bounds(n_bars: int, blocks: int) -> np.ndarray:
    """The ``blocks + 1`` boundaries of ``blocks`` contiguous near-equal blocks of ``n_bars`` bars."""
    s = _whole(blocks, "blocks", 1)
    n = _whole(n_bars, "n_bars", 2 * s)
    return (np.arange(s + 1, dtype=np.int64) * n) // s


def _combinations(s: int) -> tuple[np.ndarray, bool]:
    """Boolean masks (combinations x S) of the in-sample blocks, and whether they are a random sample."""
    half = s // 2
    if math.comb(s, half) <= MAX_COMBINATIONS:
        masks = np.zeros((math.comb(s, half), s), dtype=bool)
        for row, chosen in enumerate(itertools.combinations(range(s), half)):
            masks[row, list(chosen)] = True
        return masks, False
    rng = np.random.default_rng(SAMPLE_SEED)
    drawn = np.zeros((0, s), dtype=bool)
    while True:
        order = np.argsort(rng.random((MAX_COMBINATIONS, s)), axis=1)[:, :half]
        batch = np.zeros((MAX_COMBINATIONS, s), dtype=bool)
        np.put_along_axis(batch, order, True, axis=1)
        drawn = np.concatenate([drawn, batch])
        _, first = np.unique(drawn, axis=0, return_index=True)
        if first.size >= MAX_COMBINATIONS:
            return drawn[np.sort(first)[:MAX_COMBINATIONS]], True


def _pooled_sharpe(s: np.ndarray, q: np.ndarray, c: np.ndarray) -> np.ndarray:
    centred = q - s * s / c
    flat = centred <= _ZERO_VARIANCE * q
    std = np.sqrt(np.where(flat, 1.0, centred) / (c - 1))
    return np.where(flat, 0.0, (s / c) / std)


def probability_of_overfitting(
    sums: np.ndarray, squares: np.ndarray, counts: np.ndarray, blocks: int | None = None
) -> Overfitting:
    """The probability of backtest overfitting by CSCV; the formulas are in the module documentation."""
    total_s, total_q, bars = _floats(sums, "sums", 2), _floats(squares, "squares", 2), _floats(counts, "counts", 1)
    n, columns = total_s.shape
    if n < 2:
        raise DataError(f"sums has {n} trial(s) (rows): overfitting needs at least 2 trials")
    if total_q.shape != total_s.shape:
        raise DataError(f"squares has shape {total_q.shape} but sums has {total_s.shape}: they must agree")
    if bars.shape != (columns,):
        raise DataError(f"counts has {bars.size} value(s) but sums has {columns} block columns: they must agree")
    for array, name in ((total_s, "sums"), (total_q, "squares"), (bars, "counts")):
        _require_finite(array, name)
    if bool((total_q < 0).any()):
        raise DataError("squares holds a negative value: a sum of squares cannot be negative")
    if bool((bars != np.round(bars)).any()):
        raise DataError("counts holds a value that is not a whole number of bars")
    s = columns if blocks is None else _whole(blocks, "blocks", 2)
    if s < 2 or s % 2:
        raise DataError(f"blocks {s} is not valid: the number of blocks must be even and at least 2")
    if columns % s:
        raise DataError(f"blocks {s} is not valid: the {columns} columns of sums do not split into {s} equal runs")
    if s != columns:
        total_s = total_s.reshape(n, s, -1).sum(axis=2)
        total_q = total_q.reshape(n, s, -1).sum(axis=2)
        bars = bars.reshape(s, -1).sum(axis=1)
    if bool((bars < 2).any()):
        short = int(np.flatnonzero(bars < 2)[0])
        raise DataError(f"counts gives block {short} {bars[short]:g} bar(s): every block needs at least 2")

    masks, sampled = _combinations(s)
    weights = masks.astype(np.float64)
    logits, best_is, best_oos = np.empty(len(masks)), np.empty(len(masks)), np.empty(len(masks))
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, len(masks), chunk):
        w = weights[start : start + chunk]
        is_sharpe = _pooled_sharpe(w @ total_s.T, w @ total_q.T, (w @ bars)[:, None])
        oos_sharpe = _pooled_sharpe((1 - w) @ total_s.T, (1 - w) @ total_q.T, ((1 - w) @ bars)[:, None])
        rows = np.arange(len(w))
        winner = np.argmax(is_sharpe, axis=1)
        star = oos_sharpe[rows, winner][:, None]
        rank = (oos_sharpe < star).sum(axis=1) + ((oos_sharpe == star).sum(axis=1) + 1) / 2
        omega = rank / (n + 1)
        logits[start : start + len(w)] = np.log(omega / (1 - omega))
        best_is[start : start + len(w)] = is_sharpe[rows, winner]
        best_oos[start : start + len(w)] = star[:, 0]
    spread = float(np.mean((best_is - best_is.mean()) ** 2))
    covariance = float(np.mean((best_is - best_is.mean()) * (best_oos - best_oos.mean())))
    slope = None if spread <= _ZERO_VARIANCE * float(np.mean(best_is**2)) else covariance / spread
    logits.setflags(write=False)
    return Overfitting(probability=float(np.mean(logits <= 0)), combinations=len(masks), sampled=sampled, logits=logits,
                       median_logit=float(np.median(logits)), degradation_slope=slope, trials=n, blocks=s)


def _shown(p: float, up: bool) -> str:
    """``p`` to two decimals, cut towards the side of its verdict so the figure never crosses a threshold."""
    cents = math.ceil(p * 100 - 1e-9) if up else math.floor(p * 100 + 1e-9)
    return f"{cents / 100:.2f}"


def verdict(dsr: DeflatedSharpe | None, pbo: Overfitting | None) -> str:
    """One or two plain sentences on whether the study's best result is genuine or overfit."""
    sentences: list[str] = []
    if dsr is not None:
        p = dsr.probability
        measured = f"the deflated Sharpe ratio is {_shown(p, up=False)} after {dsr.trials:,} trial"
        measured += "" if dsr.trials == 1 else "s"
        if p >= 0.95:
            sentences.append(f"The best trial's Sharpe is likely genuine: {measured}.")
        elif p >= 0.5:
            sentences.append(f"The best trial's Sharpe is not distinguishable from luck at 95 %: {measured}.")
        else:
            sentences.append(f"The best trial's Sharpe is likely luck: {measured}.")
    if pbo is not None:
        p = pbo.probability
        over = f"{pbo.combinations:,}{' sampled' if pbo.sampled else ''} train/test splits"
        figure = f"the probability of backtest overfitting is {_shown(p, up=True)} over {over}"
        if p <= 0.1:
            sentences.append(f"Low risk of overfitting: {figure}.")
        elif p <= 0.5:
            sentences.append(f"Moderate risk of overfitting: {figure}.")
        else:
            sentences.append(f"Likely overfit: {figure}, so the in-sample winner usually underperforms out of sample.")
    if not sentences:
        return "No overfitting measure was computed."
    return " ".join(sentences)
