"""What a strategy is: a causal, streaming function from a feature frame to per-bar *decisions*.

A strategy returns ``Targets``: for every bar, either NaN (no decision on this bar) or the desired exposure as
a fraction of the strategy's equity (``1.0`` all in long, ``0.0`` flat, ``-1.0`` all in short), with a reason
code. Decisions are events, not levels: the engine acts when a decision differs from the exposure it is
currently aiming for. ``Targets.with_orders`` says how they are executed: market (the default), limit or stop
orders with a time in force, and the stop-loss, take-profit and trailing stop of the positions they open
(``pipeline.domain.orders``; the engine's intrabar conventions are in ``pipeline.engine.kernel``).

Decisions are a stream (DESIGN.md, section 2): ``strategy.stream()`` is a ``DecisionStream`` from the first bar;
its ``update(rows)`` takes the next rows of the feature frame and returns the decisions for exactly those rows,
with constant work per row, carrying only what the rule needs (window values, recursion states, the previous
bar's indicator). ``state()`` is an exact JSON-serialisable snapshot and ``restore(state)`` continues from it.
``targets(frame)``, the batch form, is ``stream().update(frame)``: the backtest and the runtime (bar by bar)
make the same decisions by construction (``tests/pipeline/features/test_streaming.py`` checks it bit for bit on
real data).

Every strategy is causal: its decision at bar i uses rows ``<= i`` only.
``tests/pipeline/strategies/test_strategy_causality.py`` checks this on every shipped strategy by recomputing on
truncated prefixes of real data.

The feature frame is a canonical bar frame (``pipeline.domain``) plus optional extra columns; a strategy that
needs one (for example ``model_score``, the probability an ML model assigns to an up-move) names it in
``requires``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.domain import DataError
from pipeline.domain.orders import KINDS, MARKET, ORDER_COLUMNS, Column, OrderKind, TimeInForce, order_table


@dataclass(frozen=True)
class Targets:
    """Per-bar decisions of a strategy: ``exposure[i]`` (NaN = none) and ``reason[i]`` (index into ``reasons``)."""

    exposure: np.ndarray  # float64, one per bar
    reason: np.ndarray  # int64, one per bar; -1 where exposure is NaN
    reasons: tuple[str, ...]
    orders: np.ndarray | None = None
    """How each decision is executed (``pipeline.domain.orders``): one row per bar, or one row for all; None:
    market orders with the engine's configured protections."""

    def __post_init__(self) -> None:
        if self.exposure.shape != self.reason.shape:
            raise ValueError("exposure and reason must have one entry per bar")
        if self.orders is not None and (self.orders.ndim != 2 or self.orders.shape[1] != ORDER_COLUMNS
                                        or self.orders.shape[0] not in (1, len(self.exposure))):
            raise ValueError(f"an order table has one row per bar ({len(self.exposure)}) or one row, and "
                             f"{ORDER_COLUMNS} columns; got shape {self.orders.shape}")

    def with_orders(
        self,
        *,
        kind: OrderKind | np.ndarray = "market",
        price: Column = None,
        tif: TimeInForce = "gtc",
        stop_loss: Column = None,
        take_profit: Column = None,
        trailing_stop: Column = None,
    ) -> Targets:
        """These decisions executed as ``kind`` orders (``market``, ``limit`` or ``stop`` at ``price``, one per
        bar or one for all) with a time in force, giving the positions they open a stop-loss, a take-profit
        and a trailing stop (fractions of the entry price; None: the engine's configured ones; 0: none).

        Only the rows with a decision are validated: a limit or stop order needs a price where it decides."""
        n = len(self.exposure)
        decided = ~np.isnan(self.exposure)
        if isinstance(price, np.ndarray) and price.shape == (n,):
            price = np.where(decided, price, np.nan)
        if isinstance(kind, np.ndarray) and kind.shape == (n,):
            kind = np.where(decided, kind, MARKET)
        if isinstance(price, np.ndarray) and not isinstance(kind, np.ndarray) and kind != "market":
            kind = np.where(decided, KINDS[kind], MARKET)
        table = order_table(n, kind=kind, price=price, tif=tif, stop_loss=stop_loss, take_profit=take_profit,
                            trailing_stop=trailing_stop)
        return replace(self, orders=table)

    def slice(self, start: int, stop: int) -> Targets:
        """The decisions of rows ``start..stop-1`` (with their orders)."""
        orders = self.orders
        if orders is not None and orders.shape[0] > 1:
            orders = orders[start:stop]
        return Targets(self.exposure[start:stop], self.reason[start:stop], self.reasons, orders)

    @classmethod
    def from_signals(cls, enter: np.ndarray, leave: np.ndarray, reasons: tuple[str, ...]) -> Targets:
        """Long-only decisions: ``1.0`` where ``enter`` (reason 0), ``0.0`` where ``leave`` (reason 1), else none."""
        exposure = np.full(len(enter), np.nan)
        reason = np.full(len(enter), -1, dtype=np.int64)
        exposure[enter], reason[enter] = 1.0, 0
        exposure[leave], reason[leave] = 0.0, 1
        return cls(exposure, reason, reasons)

    def reason_text(self, code: int) -> str:
        return self.reasons[code] if 0 <= code < len(self.reasons) else ""


class DecisionStream(Protocol):
    """A strategy's decisions, advanced by the next rows of its feature frame."""

    def update(self, features: pd.DataFrame) -> Targets:
        """Decisions for these rows only, continuing the rows given before (constant work per row)."""
        ...

    def state(self) -> dict[str, Any]:
        """The exact state, JSON-serialisable; its size does not depend on how many rows were seen."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Continue exactly where the stream that saved ``state`` stopped (all or nothing)."""
        ...


class Strategy(Protocol):
    """A named, parameterised decision function."""

    name: str
    requires: tuple[str, ...]
    warmup: int
    """Bars of history needed before the first decision can be made."""

    def targets(self, features: pd.DataFrame) -> Targets:
        """Decisions for every row of ``features``: ``self.stream().update(features)``."""
        ...

    def stream(self) -> DecisionStream:
        """A fresh decision stream, starting at the first bar it is given."""
        ...


def check_owner(state: dict[str, Any], owner: object) -> None:
    """Refuse a saved decision stream state that another strategy (or other parameters) saved."""
    if state.get("strategy") != repr(owner):
        raise DataError(f"saved decision stream belongs to {state.get('strategy')!r}, not to {owner!r}")


def check_features(strategy: Strategy, features: pd.DataFrame) -> None:
    """Refuse a feature frame that lacks a column the strategy reads."""
    missing = [c for c in ("close", *strategy.requires) if c not in features.columns]
    if missing:
        raise DataError(f"strategy {strategy.name!r} needs column(s) {', '.join(missing)} in its features")
