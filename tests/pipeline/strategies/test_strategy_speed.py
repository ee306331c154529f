"""Every shipped strategy's decisions cost in proportion to the bars (absolute speed is bench/'s to report)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.strategies import REGISTRY
from tests.conftest import shared_file
from tests.pipeline.strategies.strategy_helpers import AAPL_D1, BTC_H1, with_model_score
from tests.timing import best_of


@pytest.fixture(scope="module")
def million_bars() -> pd.DataFrame:
    frames = [pd.read_parquet(shared_file(name)) for name in ("binance_BTC-USDT_1m.parquet", BTC_H1, AAPL_D1)]
    bars = pd.concat(frames * 2, ignore_index=True).iloc[:1_000_000]
    assert len(bars) == 1_000_000
    return with_model_score(bars)


@pytest.mark.parametrize("name", sorted(REGISTRY.built_in))
def test_ten_times_the_bars_cost_about_ten_times_as_much(name: str, million_bars: pd.DataFrame) -> None:
    """Constant work per bar on any machine: a step that grows with the history (a rescan, a quadratic window)
    would make a million bars cost far more than ten times a hundred thousand."""
    strategy = REGISTRY.build(name)
    small = million_bars.iloc[:100_000]
    strategy.targets(million_bars)
    ratio = best_of(3, lambda: strategy.targets(million_bars)) / best_of(3, lambda: strategy.targets(small))
    assert ratio < 25, f"{name}: 1M bars cost {ratio:.1f} times 100k bars"
