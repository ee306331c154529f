"""The strategy tests' setup: real bars with a model score, the cases to run and the decision comparisons."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest

from pipeline.strategies import REGISTRY, Strategy, Targets
from tests.conftest import shared_file

BTC_H1 = "binance_BTC-USDT_1h.parquet"
AAPL_D1 = "quandlwiki_AAPL_1d.parquet"
SLICE = 3_000
SMALL_SLICE = 600
TAIL = 300
STRIDE = 7

# Every registered strategy with its defaults, plus hybrids over each kind of rule.
CASES: list[tuple[str, dict[str, str]]] = [(name, {}) for name in REGISTRY.names()] + [
    ("hybrid", {"base": "sma_cross", "fast": "5", "slow": "20"}),
    ("hybrid", {"base": "rsi_reversion", "threshold": "0.3"}),
    ("hybrid", {"base": "buy_and_hold", "threshold": "0.5"}),
]


def with_model_score(bars: pd.DataFrame) -> pd.DataFrame:
    """Bars plus a deterministic, causal ``model_score``: the rank of the latest return among the last 50."""
    frame = bars.copy()
    frame["model_score"] = frame["close"].pct_change().rolling(50).rank(pct=True)
    return frame


def real_bars(name: str, rows: int) -> pd.DataFrame:
    return with_model_score(pd.read_parquet(shared_file(name)).iloc[-rows:].reset_index(drop=True))


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return real_bars(BTC_H1, SLICE)


@pytest.fixture(scope="module")
def aapl() -> pd.DataFrame:
    return real_bars(AAPL_D1, SLICE)


@pytest.fixture(scope="module")
def btc_full() -> pd.DataFrame:
    return pd.read_parquet(shared_file(BTC_H1))


def same_decision(left: Targets, i: int, right: Targets, j: int) -> bool:
    a, b = left.exposure[i], right.exposure[j]
    same_exposure = bool(np.isnan(a) and np.isnan(b)) or a == b
    return same_exposure and left.reason_text(int(left.reason[i])) == right.reason_text(int(right.reason[j]))


def truncation_mismatches(strategy: Strategy, features: pd.DataFrame, lengths: Iterable[int]) -> list[int]:
    """Prefix lengths whose last decision (exposure and reason) differs from the full run's at the same bar."""
    full = strategy.targets(features)
    mismatches = []
    for length in lengths:
        prefix = strategy.targets(features.iloc[:length])
        assert prefix.exposure.shape == prefix.reason.shape == (length,)
        if not same_decision(prefix, length - 1, full, length - 1):
            mismatches.append(length)
    return mismatches


def sampled_lengths(rows: int, warmup: int) -> list[int]:
    """Every prefix length over the last ``TAIL`` bars, and every ``STRIDE``-th one from the warmup on."""
    start = max(warmup, 1)
    return sorted(set(range(start, rows - TAIL, STRIDE)) | set(range(max(start, rows - TAIL), rows + 1)))


def decisions(targets: Targets) -> list[tuple[int, float, str]]:
    rows = np.flatnonzero(~np.isnan(targets.exposure))
    return [(int(i), float(targets.exposure[i]), targets.reason_text(int(targets.reason[i]))) for i in rows]
