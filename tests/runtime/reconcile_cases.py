"""A runtime trading on a fake venue (``tests.runtime.venue_cases``: Binance through ccxt, Alpaca through alpaca-py)
with a settable clock, for the reconciliation tests: real bars replayed one a batch, buy-and-hold with a stop-loss
(so the venue holds a position and the runtime's protective stop rests there), and what an operator does at the
venue behind the runtime's back: an order placed by hand, cash deposited or withdrawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import Timeframe
from pipeline.state import RuntimeEvent, StateStore
from runtime.brokers.alpaca import make_trading_client
from runtime.feeds import ReplayFeed
from runtime.node import Node
from runtime.reconcile import FINDING, VERDICT
from tests.conftest import shared_file
from tests.runtime.venue_cases import Alpaca, Binance, Venue

SERIES = {  # the bars each venue replays: file, rows, feed key, timeframe
    "ccxt": ("binance_BTC-USDT_1m.parquet", slice(400_000, 400_040), "binance:BTC/USDT:1m", "1m"),
    "alpaca": ("quandlwiki_AAPL_1d.parquet", slice(-300, -260), "alpaca:AAPL:1d", "1d"),
}
FIRST = 20
"""Bars the runtime trades before a test acts behind its back."""
EVERY_S = 60.0
START = pd.Timestamp("2024-03-01 12:00", tz="UTC")
"""The runtime's clock at start (its bars are older: a replay)."""


def bars_of(venue: Venue) -> tuple[pd.DataFrame, str, str]:
    name, rows, key, timeframe = SERIES[venue.name]
    return pd.read_parquet(shared_file(name)).iloc[rows].reset_index(drop=True), key, timeframe


def portfolio(venue: Venue, timeframe: str, stop_loss: float = 0.1, strategy: str = "buy_and_hold",
              params: dict[str, object] | None = None) -> PortfolioConfig:
    """One sleeve on the venue's symbol: ``strategy`` (buy and hold by default) with ``params``, a stop-loss."""
    return PortfolioConfig.model_validate({"cash": venue.cash, "strategies": [
        {"id": "main", "strategy": strategy, "params": params or {}, "symbols": [venue.symbol],
         "timeframe": timeframe, "allocation": 1.0,
         "engine": {"max_position": 0.5, "fee_bps": venue.fee_bps, "stop_loss": stop_loss, "max_drawdown": None,
                    "daily_loss": None, "max_consecutive_losses": None, "max_trades_per_day": None}}]})


@dataclass
class Running:
    """A node on ``venue`` with its store, feed, clock and the alerts it raised (kind, text)."""

    venue: Venue
    node: Node
    store: StateStore
    feed: ReplayFeed
    clock: FixedClock
    key: str
    alerts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sleeve(self) -> str:
        return f"main:{self.venue.symbol}"

    def replay(self, upto: int | None = None) -> None:
        """The feed's bars after the node's cursor (up to row ``upto``), one a batch, the venue's price at each
        bar's close."""
        frame = self.feed.frames[self.key]
        for batch in self.feed.batches(self.node.cursors):
            row = int(batch.rows[self.key][0])
            if upto is not None and row >= upto:
                break
            self.venue.set_price(float(frame["close"].iloc[row]))
            self.node._process(batch)

    def later(self, seconds: float) -> None:
        """The runtime's clock moves on by ``seconds``."""
        self.clock.set(self.clock.now() + pd.Timedelta(seconds=seconds))

    def idle(self) -> None:
        """One idle tick of the loop (an empty batch: the live feed waits for its next bar)."""
        self.node._idle()

    def paused(self) -> bool:
        return "paused" in self.store.ledgers()[self.sleeve].tripped.split(",")

    def findings(self) -> list[str]:
        return [e.detail for e in self.store.events(FINDING)]

    def verdicts(self) -> list[RuntimeEvent]:
        return self.store.events(VERDICT)

    def errors(self) -> list[str]:
        return [text for kind, text in self.alerts if kind == "error"]


def start(venue: Venue, tmp_path: Path, *, fresh: bool = True, bars: int | None = None, stop_loss: float = 0.1,
          tolerance: float = 0.001, strategy: str = "buy_and_hold", params: dict[str, object] | None = None
          ) -> Running:
    """A node on ``venue`` (a new store at ``tmp_path`` when ``fresh``, else restored from it), started; its sleeve
    trades ``strategy`` with ``params`` (buy and hold by default)."""
    frame, key, timeframe = bars_of(venue)
    feed = ReplayFeed({key: frame.iloc[:bars]}, Timeframe.parse(timeframe), speed=1e12, sleep=lambda _s: None)
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    clock = FixedClock(START)
    alerts: list[tuple[str, str]] = []
    node = Node(store, portfolio(venue, timeframe, stop_loss, strategy, params), feed, {f"main:{venue.symbol}": key},
                venue.broker(), mode="live", clock=clock, on_event=lambda kind, text: alerts.append((kind, text)),
                reconcile_seconds=EVERY_S, reconcile_tolerance=tolerance)
    running = Running(venue, node, store, feed, clock, key, alerts)
    node.start(fresh=fresh)
    return running


def hand_limit_buy(venue: Venue, price: float, qty: str) -> tuple[str, Decimal]:
    """An order placed at the venue by hand (its own client, its own client id), resting below the market at
    ``price`` on a cent; returns its venue id and its limit."""
    limit = Decimal(f"{price:.2f}")
    if isinstance(venue, Binance):
        exchange = build_exchange(venue.settings, "binance")
        placed = exchange.create_order(venue.symbol, "limit", "buy", float(qty), float(limit))
        return str(placed["id"]), limit
    assert isinstance(venue, Alpaca)
    order = make_trading_client(venue.settings).submit_order(LimitOrderRequest(
        symbol=venue.symbol, qty=float(qty), side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        limit_price=float(limit)))
    return str(order.id), limit  # type: ignore[union-attr]


def hand_market_buy(venue: Venue, qty: str) -> str:
    """A market order placed at the venue by hand (it fills at once); returns its venue id."""
    if isinstance(venue, Binance):
        return str(build_exchange(venue.settings, "binance").create_order(venue.symbol, "market", "buy",
                                                                         float(qty))["id"])
    assert isinstance(venue, Alpaca)
    order = make_trading_client(venue.settings).submit_order(MarketOrderRequest(
        symbol=venue.symbol, qty=float(qty), side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    return str(order.id)  # type: ignore[union-attr]


def move_cash(venue: Venue, amount: Decimal) -> None:
    """Cash deposited into (withdrawn from, when negative) the account at the venue, outside the runtime."""
    if isinstance(venue, Binance):
        free = venue.server.balances()["USDT"].free
        venue.server.set_balance("USDT", free + amount)
    else:
        assert isinstance(venue, Alpaca)
        venue.server.transfer(amount)


def cash_at(venue: Venue) -> Decimal:
    """The venue's cash in the quote currency (free and locked)."""
    if isinstance(venue, Binance):
        return venue.server.balances()["USDT"].total
    assert isinstance(venue, Alpaca)
    return venue.server.cash
