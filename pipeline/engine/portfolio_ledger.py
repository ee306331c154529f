"""The portfolio's own ledger around the compiled portfolio step: its peak, its breaker and its marks.

``PortfolioLedger`` owns what ``portfolio_kernel.run_times`` works on besides the sleeves' ledgers: the caps,
the portfolio's peak and breaker state, its event buffer and the sleeves' latest equity and position value.
``run`` steps a batch of bar times (growing the buffers between compiled calls) and hands back the portfolio's
marks per time and the breaker's events; the properties name the state, so a driver (``pipeline.backtest.portfolio``)
never reads a slot by number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.domain.orders import market_rows
from pipeline.engine import portfolio_kernel as pk
from pipeline.engine.core import MS_PER_DAY, Engine

RELEASED_BY = {pk.RELEASED_BY_OPERATOR: "operator", pk.RELEASED_BY_COOLDOWN: "cooldown"}
Arrays = tuple[np.ndarray, ...]


@dataclass(frozen=True)
class PortfolioMarks:
    """The portfolio per stepped bar time (arrays of one value per time)."""

    equity: np.ndarray
    cash: np.ndarray
    position_value: np.ndarray
    gross_exposure: np.ndarray
    paused: np.ndarray
    """Whether any sleeve's entries were blocked at that close."""

    def at(self, t: int) -> dict[str, float]:
        """The marks of time ``t`` as floats (``paused`` 1.0 or 0.0)."""
        return {"equity": float(self.equity[t]), "cash": float(self.cash[t]),
                "position_value": float(self.position_value[t]), "gross_exposure": float(self.gross_exposure[t]),
                "paused": 1.0 if self.paused[t] else 0.0}


@dataclass(frozen=True)
class PortfolioEvent:
    """A trip or release of the portfolio breaker at bar time ``time_index`` of the batch."""

    time_index: int
    action: str
    """``trip`` or ``release``."""
    released_by: str
    """``operator``, ``cooldown``, or empty for a trip."""
    value: float
    bars_tripped: int


class PortfolioLedger:
    """The portfolio-level state stepped with its sleeves' engines (in the sleeves' order)."""

    def __init__(self, engines: Sequence[Engine], day_boundary_hours: Sequence[int], cash: float, reserve: float,
                 max_gross_exposure: float, max_drawdown: float, cooldown_bars: int) -> None:
        self.engines = list(engines)
        self.reserve = reserve
        self._hours = np.array(day_boundary_hours, dtype=np.int64)
        self._caps = np.zeros(pk.N_CAPS)
        self._caps[pk.CAP_GROSS] = max_gross_exposure
        self._caps[pk.CAP_DRAWDOWN] = max_drawdown
        self._caps[pk.CAP_COOLDOWN] = float(cooldown_bars)
        self._caps[pk.CAP_RESERVE] = reserve
        self._pf = np.zeros(pk.N_PF)
        self._pf[pk.PF_PEAK] = cash
        self._pi = np.zeros(pk.N_PI, dtype=np.int64)
        self._pevents = np.zeros((16, pk.PE_COLUMNS))
        self._equity = np.array([e.ledger.config.cash for e in self.engines], dtype=np.float64)
        self._value = np.zeros(len(self.engines))
        self._base_position = np.array([e.ledger.config.max_position for e in self.engines], dtype=np.float64)
        self._lists: tuple[Arrays, ...] | None = None
        self._list_ids: tuple[int, ...] = ()

    @property
    def peak(self) -> float:
        return float(self._pf[pk.PF_PEAK])

    @peak.setter
    def peak(self, value: float) -> None:
        self._pf[pk.PF_PEAK] = value

    @property
    def steps(self) -> int:
        """Bar times stepped so far."""
        return int(self._pi[pk.PI_STEPS])

    @property
    def tripped(self) -> bool:
        """Whether the portfolio drawdown breaker is tripped.

        Setting it to false is an operator's reset: recorded as a release at the next bar time (set the new
        ``peak`` with it). Setting it to true restores a tripped breaker (its cool-down counts from now).
        """
        return bool(self._pi[pk.PI_TRIPPED])

    @tripped.setter
    def tripped(self, value: bool) -> None:
        if value and not self.tripped:
            self._pi[pk.PI_TRIPPED_AT] = self._pi[pk.PI_STEPS]
            for engine in self.engines:
                engine.ledger.portfolio_paused = True
        if not value and self.tripped:
            self._pi[pk.PI_RESET_PENDING] = 1
        self._pi[pk.PI_TRIPPED] = 1 if value else 0

    def restore_sleeve(self, index: int) -> None:
        """Take sleeve ``index``'s marks from its (restored) ledger."""
        ledger = self.engines[index].ledger
        self._equity[index] = ledger.equity
        self._value[index] = ledger.position_value

    @property
    def equity(self) -> float:
        return float(sum(self._equity.tolist()) + self.reserve)

    @property
    def cash(self) -> float:
        return float(sum(e.ledger.cash for e in self.engines) + self.reserve)

    @property
    def position_value(self) -> float:
        return float(sum(self._value.tolist()))

    def _kernel_lists(self) -> tuple[Arrays, ...]:
        """The sleeves' ledger arrays, one tuple per kind (rebuilt when a buffer was replaced by a larger one)."""
        ledgers = [engine.ledger for engine in self.engines]
        arrays = [[getattr(ledger, name) for ledger in ledgers]
                  for name in ("params", "fstate", "istate", "fills", "trades", "events", "rejects", "intents")]
        ids = tuple(id(a) for group in arrays for a in group)
        if self._lists is None or ids != self._list_ids:
            self._lists = tuple(tuple(group) for group in arrays)
            self._list_ids = ids
        return self._lists

    def run(self, times: np.ndarray, present: np.ndarray, opens: np.ndarray, highs: np.ndarray, lows: np.ndarray,
            closes: np.ndarray, aims: np.ndarray, reasons: np.ndarray,
            orders: np.ndarray | None = None) -> tuple[PortfolioMarks, list[PortfolioEvent]]:
        """Step the bar times ``times`` (epoch ms, ascending) in one compiled call per buffer fill.

        The other arrays are (sleeves, times) in the engines' order; ``present[s, t]`` says whether sleeve ``s``
        has a bar at ``times[t]``; ``orders`` (sleeves, times, order columns) their order tables (None: market
        orders). Every engine records the marks of its bars.
        """
        if orders is None:
            orders = market_rows(present.shape[0], 1)
        orders = np.ascontiguousarray(orders, dtype=np.float64)
        n_sleeves, n_times = present.shape
        days = ((times[np.newaxis, :] - self._hours[:, np.newaxis] * 3_600_000) // MS_PER_DAY).astype(np.int64)
        bar_index = np.array([engine.bars_seen for engine in self.engines], dtype=np.int64)
        out_equity = np.zeros((n_sleeves, n_times))
        out_cash = np.zeros((n_sleeves, n_times))
        out_units = np.zeros((n_sleeves, n_times))
        out_paused = np.zeros((n_sleeves, n_times), dtype=np.bool_)
        marks = np.zeros((n_times, pk.N_MARKS))
        reasons = reasons.astype(np.int64, copy=False)
        start = 0
        while start < n_times:
            for engine in self.engines:
                engine.ledger.ensure_room()
            if self._pi[pk.PI_N_EVENTS] + 2 > self._pevents.shape[0]:
                grown = np.zeros((self._pevents.shape[0] * 2, pk.PE_COLUMNS))
                grown[: self._pevents.shape[0]] = self._pevents
                self._pevents = grown
            params, fstates, istates, fills, trades, events, rejects, intents = self._kernel_lists()
            start = pk.run_times(start, n_times, present, days, opens, highs, lows, closes, aims, reasons, orders,
                                 bar_index, params, fstates, istates, fills, trades, events, rejects, intents,
                                 self._base_position, self._caps, self._pf, self._pi, self._pevents, self._equity,
                                 self._value, out_equity, out_cash, out_units, out_paused, marks)
        for s, engine in enumerate(self.engines):
            mask = present[s]
            engine.record(times[mask], out_equity[s, mask], out_cash[s, mask], out_units[s, mask], closes[s, mask],
                          out_paused[s, mask])
        found = [PortfolioEvent(int(row[0]), "trip" if row[1] == 0 else "release", RELEASED_BY.get(int(row[2]), ""),
                                float(row[3]), int(row[4]))
                 for row in self._pevents[: int(self._pi[pk.PI_N_EVENTS])]]
        self._pi[pk.PI_N_EVENTS] = 0
        return PortfolioMarks(marks[:, pk.M_EQUITY], marks[:, pk.M_CASH], marks[:, pk.M_VALUE],
                              marks[:, pk.M_GROSS], marks[:, pk.M_PAUSED] > 0), found
