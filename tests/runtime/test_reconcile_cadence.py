"""The periodic reconciliation runs every ``reconcile_seconds`` on the node's clock, and not more often: between
bars (the loop's idle ticks) and after batches, and in the real loop (``Node.run``) on a live ccxt feed from a fake
Binance whose clock and the runtime's are moved by the test; ``wire`` gives the node the settings' period and
tolerance."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import Timeframe
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.brokers.ccxt import CcxtBroker
from runtime.config import RuntimeConfig
from runtime.feeds.ccxt_feed import CcxtFeed
from runtime.node import Node
from runtime.reconcile import VERDICT
from runtime.wiring import wire
from tests.conftest import shared_file
from tests.fakes.binance_server import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance
from tests.runtime.reconcile_cases import EVERY_S, FIRST, START, start
from tests.runtime.venue_cases import Binance
from tests.waiting import wait_until

KEY = "binance:BTC/USDT:1m"
SLEEVE = "main:BTC/USDT"
BARS_FROM = pd.Timestamp("2024-07-29", tz="UTC")
MINUTE = pd.Timedelta(minutes=1)


def _at(store: StateStore) -> list[pd.Timestamp]:
    """When each reconciliation ran (its verdict's time, the node's clock)."""
    return [pd.Timestamp(e.at) for e in store.events(VERDICT)]


def test_a_pass_runs_every_reconcile_seconds_between_bars_and_after_batches(tmp_path: Path) -> None:
    with FakeBinance(balances={"USDT": Decimal(Binance.cash)}) as server:
        case = Binance(tmp_path, server)
        case.set_price(case.base)
        run = start(case, tmp_path)
        second = pd.Timedelta(seconds=1)
        assert _at(run.store) == [START]  # the start-up pass
        run.later(EVERY_S - 1)
        run.idle()
        run.idle()
        assert _at(run.store) == [START]
        run.later(1)
        run.idle()
        run.idle()  # the same moment again: not due
        assert _at(run.store) == [START, START + EVERY_S * second]
        run.later(EVERY_S / 2)
        run.replay(upto=FIRST // 2)  # batches half a period later: not due
        assert _at(run.store) == [START, START + EVERY_S * second]
        run.later(EVERY_S / 2)
        run.replay(upto=FIRST)  # the first batch a period after the last pass runs one, the next ones do not
        assert _at(run.store) == [START, START + EVERY_S * second, START + 2 * EVERY_S * second]
        run.later(10 * EVERY_S)  # a clock that jumps far: one pass, not one per period missed
        run.idle()
        run.idle()
        assert _at(run.store)[-1] == START + 12 * EVERY_S * second and len(_at(run.store)) == 4
        assert all(e.detail.startswith("ok: ") for e in run.store.events(VERDICT))


@pytest.fixture
def binance() -> Iterator[FakeBinance]:
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"),
                            filters=[("timestamp", ">=", BARS_FROM), ("timestamp", "<", BARS_FROM + 400 * MINUTE)])
    with FakeBinance(balances={"USDT": Decimal(100_000)}) as server:
        server.serve_bars("BTC/USDT", "1m", frame.reset_index(drop=True))
        yield server


def test_the_running_loop_reconciles_every_reconcile_seconds_on_its_clock(tmp_path: Path, binance: FakeBinance
                                                                           ) -> None:
    t0 = BARS_FROM + 300 * MINUTE + pd.Timedelta(seconds=5)
    clock = FixedClock(t0)
    binance.set_now(t0 - pd.Timedelta(seconds=5, milliseconds=1))  # no bar after 04:59 until the test says so
    settings = Settings(data_dir=tmp_path, ccxt_rest_url=binance.url, ccxt_api_key=DEFAULT_API_KEY,
                        ccxt_api_secret=DEFAULT_API_SECRET, _env_file=None)  # type: ignore[call-arg]
    feed = CcxtFeed(build_exchange(settings, "binance"), {KEY: "BTC/USDT"}, Timeframe.parse("1m"), clock,
                    poll_s=0.05, warmup=50, tick_s=0.05, backoff_base_s=0.05, backoff_cap_s=0.1)
    broker = CcxtBroker(build_exchange(settings, "binance"), max_retries=2, backoff_s=0.0, sleep=lambda _s: None)
    config = PortfolioConfig.model_validate({"cash": 100_000, "strategies": [
        {"id": "main", "strategy": "buy_and_hold", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 1.0,
         "engine": {"max_position": 0.5, "fee_bps": 10}}]})
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    node = Node(store, config, feed, {SLEEVE: KEY}, broker, mode="live", clock=clock, stale_after_bars=1000,
                heartbeat_s=0.01, reconcile_seconds=EVERY_S)
    node.start(fresh=True)
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()

    def beat() -> pd.Timestamp | None:
        state = store.bot_state()
        return None if state is None or state.heartbeat_at is None else pd.Timestamp(state.heartbeat_at)

    def tick_at(seconds: float) -> None:
        """The runtime's clock moves to ``t0 + seconds``; wait for the loop's idle tick at that time."""
        when = t0 + pd.Timedelta(seconds=seconds)
        clock.set(when)
        wait_until(lambda: beat() == when, f"the idle tick at {when}")

    try:
        for seconds, passes in ((0, 1), (30, 1), (EVERY_S - 1, 1), (EVERY_S, 2), (EVERY_S + 30, 2),
                                (2 * EVERY_S - 1, 2), (2 * EVERY_S, 3)):
            tick_at(seconds)
            assert len(_at(store)) == passes, (seconds, _at(store))
        assert _at(store) == [t0 + pd.Timedelta(seconds=s) for s in (0, EVERY_S, 2 * EVERY_S)]

        binance.set_now(t0 + 3 * MINUTE)  # bars close at the venue: batches (the sleeve buys there), no pass
        clock.set(t0 + pd.Timedelta(seconds=2 * EVERY_S + 5))
        wait_until(lambda: venue_held(binance) > 0 and store.orders(), "the bars traded at the venue")
        tick_at(2 * EVERY_S + 6)
        assert len(_at(store)) == 3
        clock.set(t0 + pd.Timedelta(seconds=3 * EVERY_S))  # a pass is due (after the bar closing now, or idle)
        wait_until(lambda: len(_at(store)) == 4, "the fourth pass")
        verdicts = store.events(VERDICT)
        assert all(e.detail.startswith("ok: ") for e in verdicts), verdicts[-1].detail
        held = float(node.stepper.engines[SLEEVE].ledger.units)
        assert held > 0 and f"BTC/USDT: venue holds {held:g}, the ledgers {held:g}: reconciled" in verdicts[-1].detail
    finally:
        node.request_stop("test over")
        runner.join()
    assert not runner.is_alive()
    store.close()


def venue_held(server: FakeBinance) -> Decimal:
    return server.balances()["BTC"].total


def test_the_wired_runtime_reconciles_as_the_settings_say(tmp_path: Path) -> None:
    data = tmp_path / "bars.parquet"
    pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[:300].to_parquet(data)
    settings = Settings(data_dir=tmp_path, reconcile_seconds=5, reconcile_tolerance=0.02,  # type: ignore[call-arg]
                        _env_file=None)
    wired = wire(RuntimeConfig(strategy="sma_cross", symbol="BTC/USDT", data=data, fresh=True), settings)
    try:
        assert (wired.node.reconciler.every_s, wired.node.reconciler.tolerance) == (5, 0.02)
    finally:
        wired.close()
