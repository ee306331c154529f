"""Before a runtime trades a strategy of a trader's own, it checks it (``pipeline.strategies.checks``): no
look-ahead, no dependence on more history than a live feed loads (``warmup_bars``), a stream that continues
exactly. A shipped strategy is checked by the test suite and is not checked again.

A strategy that fails is refused with the check's report; ``--allow-unchecked`` trades it anyway, and the
runtime records that as a runtime event (kind ``unchecked``) with the report, so the decision is on record.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.backtest.portfolio_config import PortfolioConfig, sleeves_of
from pipeline.domain import DataError, Timeframe
from pipeline.strategies import REGISTRY
from pipeline.strategies.catalog import BUILT_IN
from pipeline.strategies.checks import check_strategy, sample_bars

UNCHECKED = "unchecked"
"""The kind of the runtime event that records a strategy traded although it failed its check."""


@dataclass(frozen=True)
class Unchecked:
    """A strategy that failed its check and trades because the operator allowed it."""

    sleeve: str
    report: str


def vet(portfolio: PortfolioConfig, history: int, allow_unchecked: bool) -> list[Unchecked]:
    """Check every strategy of the trader's own in ``portfolio`` once (on the sample market, with ``history``
    bars of history); a ``DataError`` with the reports when one fails, unless ``allow_unchecked``, which returns
    the failures to record instead."""
    failed: list[Unchecked] = []
    checked: set[str] = set()
    for sleeve in sleeves_of(portfolio):
        spec = REGISTRY.spec(sleeve.spec.strategy)
        if spec.source == BUILT_IN or repr(sleeve.strategy) in checked:
            continue
        checked.add(repr(sleeve.strategy))
        bars = sample_bars(max(3 * history, 3000), timeframe=sleeve.spec.timeframe if _short(sleeve.spec.timeframe)
                           else "1h")
        report = check_strategy(sleeve.strategy, bars, history)
        if not report.passed:
            failed.append(Unchecked(sleeve.key, report.text()))
    if failed and not allow_unchecked:
        reports = "\n".join(f.report for f in failed)
        raise DataError(f"a strategy of your own failed its check, so it does not trade:\n{reports}\n"
                        "fix it (see `tradeforge strategies check`), or start with --allow-unchecked to trade it "
                        "anyway (recorded as a runtime event)")
    return failed


def _short(timeframe: str) -> bool:
    """Whether the sample market is checked at the sleeve's own timeframe (up to 1h; longer ones at 1h, which
    spares generating years of minutes)."""
    return Timeframe.parse(timeframe).seconds <= 3600
