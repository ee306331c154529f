"""What a reconciliation reads, on a fake Binance through the real ccxt client: every fill, however many share a
millisecond; each symbol's fills from where its own reading got to (a symbol read only up to the page limit is not
skipped because another symbol's reading went further); and of the state store only what can matter to a pass,
so a pass reads no more after many round trips than after a few."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import Timeframe
from pipeline.state import StateStore
from runtime.brokers import ccxt as ccxt_broker
from runtime.feeds import ReplayFeed
from runtime.node import Node
from runtime.reconcile import FINDING, SETTLED_MS
from tests.fakes.binance_server import FakeBinance
from tests.runtime.reconcile_cases import EVERY_S, START, bars_of, start
from tests.runtime.venue_cases import Binance

MINUTE = pd.Timedelta(minutes=1)


@pytest.fixture
def binance(tmp_path: Path) -> Iterator[Binance]:
    with FakeBinance(balances={"USDT": Decimal(Binance.cash)}) as server:
        case = Binance(tmp_path, server)
        case.set_price(case.base)
        yield case


def _buy_by_hand(case: Binance, symbol: str, qty: float, times: list[pd.Timestamp]) -> None:
    """Market buys placed at the venue by hand, one at each venue time of ``times``."""
    exchange = build_exchange(case.settings, "binance")
    for at in times:
        case.server.set_now(at)
        exchange.create_order(symbol, "market", "buy", qty)
    case.server.set_now(None)


def test_more_than_a_page_of_trades_in_one_millisecond_are_all_read(binance: Binance) -> None:
    count = ccxt_broker.TRADES_PAGE + 7
    _buy_by_hand(binance, binance.symbol, 0.001, [START] * count)
    view = binance.broker().venue_view([binance.symbol], {binance.symbol: 0}, {})
    assert len({f.fill_id for f in view.fills}) == count
    assert {f.at_ms for f in view.fills} == {_ms(START)}
    pages = binance.server.requests_to("myTrades")
    assert len(pages) == 2 and pages[1].params.get("fromId") and "startTime" not in pages[1].params


def _two_symbol_node(case: Binance, tmp_path: Path) -> tuple[Node, StateStore]:
    """A runtime with a sleeve on BTC/USDT and one on ETH/USDT (no bar replayed: it only reconciles)."""
    frame, _, _ = bars_of(case)
    keys = {"main:BTC/USDT": "binance:BTC/USDT:1m", "main:ETH/USDT": "binance:ETH/USDT:1m"}
    feed = ReplayFeed({key: frame for key in keys.values()}, Timeframe.parse("1m"), speed=1e12,
                      sleep=lambda _s: None)
    config = PortfolioConfig.model_validate({"cash": case.cash, "strategies": [
        {"id": "main", "strategy": "buy_and_hold", "symbols": ["BTC/USDT", "ETH/USDT"], "timeframe": "1m",
         "allocation": 1.0, "engine": {"max_position": 0.5, "fee_bps": case.fee_bps}}]})
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    node = Node(store, config, feed, keys, case.broker(), mode="live", clock=FixedClock(START),
                reconcile_seconds=EVERY_S)
    node.start(fresh=True)
    return node, store


def test_a_symbol_read_up_to_the_page_limit_goes_on_from_there_whatever_another_symbol_read(
        binance: Binance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ccxt_broker, "TRADES_PAGE", 2)
    monkeypatch.setattr(ccxt_broker, "MAX_PAGES", 1)  # a pass reads two trades of a symbol at most
    binance.server.set_price("ETH/USDT", Decimal(2000))
    node, store = _two_symbol_node(binance, tmp_path)
    _buy_by_hand(binance, "BTC/USDT", 0.001, [START + n * MINUTE for n in (1, 2, 3)])
    _buy_by_hand(binance, "ETH/USDT", 0.01, [START + 9 * MINUTE])  # later than every BTC/USDT trade

    def found() -> set[int]:  # the venue orders of the fills found by hand
        return {t.order_id for t in binance.server.trades
                if any(f"(order {t.order_id}, " in e.detail for e in store.events(FINDING))}

    node.reconciler.run("periodic")
    assert len(found()) == 3  # two of BTC/USDT (the page limit), the one of ETH/USDT
    node.reconciler.run("periodic")
    assert found() == {t.order_id for t in binance.server.trades}  # the third BTC/USDT one too
    assert all("fill of an order not placed by the runtime" in e.detail for e in store.events(FINDING)
               if "(order " in e.detail)
    assert node.reconciler.since_ms == {"BTC/USDT": _ms(START + 3 * MINUTE), "ETH/USDT": _ms(START + 9 * MINUTE)}

    clock = node.clock
    assert isinstance(clock, FixedClock)
    clock.set(START + 60 * MINUTE)  # an hour without a trade: each symbol, read to the end, moves on by itself
    node.reconciler.run("periodic")
    settled = _ms(START + 60 * MINUTE) - SETTLED_MS
    assert node.reconciler.since_ms == {"BTC/USDT": settled, "ETH/USDT": settled}
    assert [r.int_param("startTime") for r in binance.server.requests_to("myTrades")[-2:]] == [
        _ms(START + 3 * MINUTE), _ms(START + 9 * MINUTE)]


def _ms(at: pd.Timestamp) -> int:
    return int(at.value // 1_000_000)


class RowsRead:
    """Rows the state store hands out (every ORM row loaded), counted while it is on."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _session: Session, _instance: object) -> None:
        self.count += 1

    def __enter__(self) -> RowsRead:
        self.count = 0
        event.listen(Session, "loaded_as_persistent", self)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(Session, "loaded_as_persistent", self)


def test_a_pass_reads_of_the_state_store_only_what_can_matter_to_it(binance: Binance, tmp_path: Path) -> None:
    run = start(binance, tmp_path, strategy="sma_cross", params={"fast": 2, "slow": 5})
    reads = []
    for row in range(1, 41):  # a pass after each bar: the history on record grows, a pass's reads do not
        run.replay(upto=row)
        run.later(EVERY_S)
        with RowsRead() as rows:
            run.idle()
        reads.append(rows.count)
        assert run.verdicts()[-1].detail.startswith("ok: "), run.verdicts()[-1].detail
    history = len(run.store.orders()) + len(run.store.fills())
    assert history >= 20 and len([t for t in binance.server.trades if t.side == "SELL"]) >= 3
    assert max(reads) <= 6, reads  # the orders open, those of the last fills, and their fills
    assert max(reads[len(reads) // 2:]) <= max(reads[:len(reads) // 2]), reads  # no more as the history grows
