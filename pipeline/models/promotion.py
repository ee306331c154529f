"""The promotion gate: when a newly trained model (the challenger) may carry the ``production`` alias.

Rule, on out-of-sample, net-of-cost results of the walk-forward evaluation:

* the challenger's Sharpe must be **strictly higher** than the rule-only baseline's (the same strategy without
  the model) and, when a production version exists, strictly higher than the production version's;
* its max drawdown must not be *materially* worse than either reference: at most ``drawdown_slack``
  (default 0.05, i.e. five percentage points) above it;
* it must have traded out of sample (at least ``min_trades`` round trips, default 1): a model that never
  confirms an entry has shown nothing, whatever its Sharpe of 0 compares with.

The decision, the numbers and the reason are returned for the registry to write as tags on the version.
``force`` promotes regardless and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PromoteMode = Literal["auto", "never", "force"]


@dataclass(frozen=True)
class Scores:
    """Out-of-sample trading results that the gate compares."""

    sharpe: float
    max_drawdown: float
    trades: int = 0


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def decide(
    challenger: Scores,
    baseline: Scores,
    production: Scores | None,
    mode: PromoteMode = "auto",
    drawdown_slack: float = 0.05,
    min_trades: int = 1,
) -> Decision:
    """Whether ``challenger`` gets the ``production`` alias, and why."""
    numbers = {
        "challenger_sharpe": challenger.sharpe,
        "challenger_max_drawdown": challenger.max_drawdown,
        "challenger_trades": float(challenger.trades),
        "baseline_sharpe": baseline.sharpe,
        "baseline_max_drawdown": baseline.max_drawdown,
    }
    if production is not None:
        numbers["production_sharpe"] = production.sharpe
        numbers["production_max_drawdown"] = production.max_drawdown
    if mode == "never":
        return Decision(False, "promotion not requested (--promote never)", numbers)
    if mode == "force":
        return Decision(True, "forced (--promote force): the gate was not applied", numbers)
    if challenger.trades < min_trades:
        return Decision(
            False, f"only {challenger.trades} out-of-sample trades (at least {min_trades} needed)", numbers
        )
    references = [("rule-only baseline", baseline)]
    if production is not None:
        references.append(("production", production))
    for label, reference in references:
        if not challenger.sharpe > reference.sharpe:
            return Decision(
                False,
                f"out-of-sample Sharpe {challenger.sharpe:.3f} does not beat the {label}'s {reference.sharpe:.3f}",
                numbers,
            )
        if challenger.max_drawdown > reference.max_drawdown + drawdown_slack:
            return Decision(
                False,
                f"max drawdown {challenger.max_drawdown:.3f} is materially worse than the {label}'s "
                f"{reference.max_drawdown:.3f} (slack {drawdown_slack:.3f})",
                numbers,
            )
    against = "the baseline and production" if production is not None else "the baseline (no production yet)"
    return Decision(True, f"beats {against} on out-of-sample Sharpe without a materially worse drawdown", numbers)
