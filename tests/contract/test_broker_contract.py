"""The contract every broker keeps, checked on paper, ccxt (a fake Binance) and Alpaca (a fake Alpaca) alike.

One scenario: a sleeve trades the same real bars (AAPL daily closes, replayed one bar at a time; a venue's price
follows each close) through the runtime node, with a partial fill, a rejection and two crashes:

* crash A, between batches, while an order is partly filled: the node and the broker are dropped, new ones are
  built on the same store, started with ``start(fresh=False)`` and the broker takes over the open order;
* crash B, inside a batch that sends an order: the batch's changes are never committed (the store is put back
  as it was before the batch), but its order reached the venue; the restarted node processes the batch again.

What must hold: each order has a unique, deterministic client id and reaches the venue once; every stored fill
belongs to a stored order and is booked once (a partial fill once, its rest once when it completes, also across
a restart); a rejected order leaves no units in flight; the ledger's units equal the stored position, the venue's
own ledger and what ``holdings()`` reports.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig, run_portfolio
from pipeline.data.sources.ccxt_source import build_exchange
from pipeline.domain import Timeframe, epoch_ms
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.brokers import PaperBroker, client_order_id
from runtime.brokers.alpaca import AlpacaBroker, make_trading_client
from runtime.brokers.base import Broker
from runtime.brokers.ccxt import CcxtBroker
from runtime.brokers.submission import OrderRequest, Submission
from runtime.feeds import Batch, ReplayFeed
from runtime.node import Node
from tests.conftest import shared_file
from tests.fakes.alpaca_server import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, AlpacaServer
from tests.fakes.binance_server import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance

CASH = 50_000
PARTIAL_FROM = 60
"""The first order from this bar on fills in part; crash A follows it."""
REJECT_FROM = 120
"""The first order from this bar on is rejected by the venue."""
CRASH_B_FROM = 200
"""The first batch from this bar on that sends an order is lost in flight (crash B)."""


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet")).iloc[-300:].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- the venues


class PaperVenue:
    """No venue: the engine's own fill model. Venue faults do not apply; there are no holdings to read."""

    name = "paper"
    symbol = "AAPL"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def __enter__(self) -> PaperVenue:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def broker(self) -> Broker:
        return PaperBroker()

    def expected_id(self, sleeve: str, bar_ms: int, number: int) -> str:
        return f"{sleeve}-{bar_ms}-{number}"

    def set_price(self, price: Decimal) -> None:
        return None

    def arm_partial(self) -> None:
        return None

    def arm_reject(self) -> None:
        return None

    def client_ids(self) -> list[str]:
        return []

    def posted(self) -> list[str]:
        """The client id of every order placement the venue received (placed or refused)."""
        return []

    def held(self) -> Decimal | None:
        return None

    def filled(self) -> dict[str, Decimal]:
        return {}

    def fail_placements(self) -> None:
        """The next order placement is answered with a 503 (nothing placed)."""

    def lose_next_answer(self) -> None:
        """The next order is placed, but its answer is lost."""

    def fail_look_ups(self, times: int) -> None:
        """The next ``times`` order look-ups are answered with a 503."""

    def quantity(self, client_id: str) -> Decimal:
        """The quantity of the venue's order ``client_id``."""
        raise NotImplementedError


class BinanceVenue(PaperVenue):
    name = "ccxt"
    symbol = "BTC/USDT"  # the fake Binance lists it; the bars are the same AAPL closes as everywhere

    def __enter__(self) -> BinanceVenue:
        self.fake = FakeBinance(balances={"USDT": Decimal(CASH)}).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()

    def broker(self) -> Broker:
        settings = Settings(data_dir=self.tmp_path, ccxt_api_key=DEFAULT_API_KEY, ccxt_api_secret=DEFAULT_API_SECRET,
                            ccxt_rest_url=self.fake.url, http_timeout_s=2.0, _env_file=None)  # type: ignore[call-arg]
        return CcxtBroker(build_exchange(settings, "binance"), max_retries=2, backoff_s=0.0, sleep=lambda _s: None)

    def expected_id(self, sleeve: str, bar_ms: int, number: int) -> str:
        return client_order_id(sleeve, bar_ms, number)

    def set_price(self, price: Decimal) -> None:
        self.fake.set_price(self.symbol, price)

    def arm_partial(self) -> None:
        self.fake.partial_fill_next("0.5")

    def arm_reject(self) -> None:
        self.fake.reject_next(-2010, "Account has insufficient balance for requested action.")

    def client_ids(self) -> list[str]:
        return [order.client_order_id for order in self.fake.orders]

    def posted(self) -> list[str]:
        return [r.params["newClientOrderId"] for r in self.fake.requests_to("order", "POST")]

    def held(self) -> Decimal | None:
        return self.fake.balances()["BTC"].total

    def filled(self) -> dict[str, Decimal]:
        return {order.client_order_id: order.executed_qty for order in self.fake.orders}

    def fail_placements(self) -> None:
        self.fake.fail_next(503, endpoint="order", method="POST")

    def lose_next_answer(self) -> None:
        self.fake.lose_response_next()

    def fail_look_ups(self, times: int) -> None:
        self.fake.fail_next(503, endpoint="order", method="GET", times=times)

    def quantity(self, client_id: str) -> Decimal:
        return next(o.quantity for o in self.fake.orders if o.client_order_id == client_id)


class AlpacaVenue(BinanceVenue):
    name = "alpaca"
    symbol = "AAPL"

    def __enter__(self) -> AlpacaVenue:
        self.server = AlpacaServer(cash=CASH).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    def broker(self) -> Broker:
        settings = Settings(data_dir=self.tmp_path, alpaca_api_key=DEFAULT_KEY_ID,  # type: ignore[call-arg]
                            alpaca_api_secret=DEFAULT_SECRET_KEY, alpaca_trading_url=self.server.url,
                            http_timeout_s=2.0, _env_file=None)
        return AlpacaBroker(make_trading_client(settings), max_retries=2, backoff_s=0.0, sleep=lambda _s: None)

    def set_price(self, price: Decimal) -> None:
        self.server.set_price(self.symbol, price)

    def arm_partial(self) -> None:
        self.server.partial_fill_next("0.5")

    def arm_reject(self) -> None:
        self.server.reject_next(403, "insufficient buying power")

    def client_ids(self) -> list[str]:
        return [order.client_order_id for order in self.server.orders]

    def posted(self) -> list[str]:
        return [r.body["client_order_id"] for r in self.server.requests_to("orders", "POST")]

    def held(self) -> Decimal | None:
        return self.server.positions.get(self.symbol, Decimal(0))

    def filled(self) -> dict[str, Decimal]:
        return {order.client_order_id: order.filled_qty for order in self.server.orders}

    def fail_placements(self) -> None:
        self.server.fail_next(503, endpoint="orders", method="POST")

    def lose_next_answer(self) -> None:
        self.server.lose_response_next()

    def fail_look_ups(self, times: int) -> None:
        self.server.fail_next(503, endpoint="orders", method="GET", times=times)

    def quantity(self, client_id: str) -> Decimal:
        return next(o.qty for o in self.server.orders if o.client_order_id == client_id)


VENUES: dict[str, Callable[[Path], PaperVenue]] = {"paper": PaperVenue, "ccxt": BinanceVenue, "alpaca": AlpacaVenue}


# ---------------------------------------------------------------------------------------------- the runtime


def _config(symbol: str) -> PortfolioConfig:
    return PortfolioConfig.model_validate({"cash": CASH, "strategies": [
        {"id": "main", "strategy": "sma_cross", "symbols": [symbol], "timeframe": "1d", "allocation": 1.0,
         "params": {"fast": 5, "slow": 15},
         "engine": {"max_position": 0.5, "fee_bps": 10, "max_drawdown": None, "daily_loss": None,
                    "max_consecutive_losses": None, "max_trades_per_day": None}}]})


class Process:
    """One runtime process: a node with its own broker on the shared store (dropped whole to simulate a crash)."""

    def __init__(self, venue: PaperVenue, store: StateStore, bars: pd.DataFrame, fresh: bool) -> None:
        self.key = f"replay:{venue.symbol}:1d"
        self.sleeve = f"main:{venue.symbol}"
        self.broker = venue.broker()
        self.feed = ReplayFeed({self.key: bars}, Timeframe.parse("1d"), speed=1e12, sleep=lambda _s: None)
        self.node = Node(store, _config(venue.symbol), self.feed, {self.sleeve: self.key}, self.broker, mode="live")
        self.node.start(fresh=fresh)
        if not fresh:
            still_open = store.orders({"new", "partially_filled"})
            taken = set(getattr(self.broker, "open", {}))
            if still_open and not {o.client_order_id for o in still_open} <= taken:
                self.broker.resume(still_open, store.fills())  # a node that does not take them over itself

    def batches(self) -> Iterator[Batch]:
        return self.feed.batches(self.node.cursors)

    @property
    def engine(self) -> Any:
        return self.node.stepper.engines[self.sleeve]


def _copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.mark.parametrize("kind", ["paper", "ccxt", "alpaca"])
def test_every_broker_keeps_the_contract(kind: str, tmp_path: Path, bars: pd.DataFrame) -> None:
    database = tmp_path / "state.db"
    url = f"sqlite:///{database}"
    closes = bars["close"].to_numpy()
    stamps = list(epoch_ms(bars["timestamp"]))
    with VENUES[kind](tmp_path) as venue:
        store = StateStore(url)
        process = Process(venue, store, bars, fresh=True)
        partial_id: str | None = None
        crash_a = crash_b = False
        rejected_seen = False
        batches = process.batches()
        while (batch := next(batches, None)) is not None:
            row = int(batch.rows[process.key][0])
            venue.set_price(Decimal(repr(float(closes[row]))))
            if row == PARTIAL_FROM:
                venue.arm_partial()
            if row == REJECT_FROM:
                venue.arm_reject()
            before = {o.client_order_id for o in store.orders()}
            if row >= CRASH_B_FROM and not crash_b:
                _copy_database(database, tmp_path / "before-batch.db")
            process.node._process(batch)
            sent = {o.client_order_id for o in store.orders()} - before

            if row >= CRASH_B_FROM and not crash_b and sent:
                # crash B: the batch's orders reached the venue, but nothing of the batch was committed
                crash_b = True
                store.close()
                _copy_database(tmp_path / "before-batch.db", database)
                store = StateStore(url)
                assert not sent & {o.client_order_id for o in store.orders()}
                process = Process(venue, store, bars, fresh=False)
                batches = process.batches()
                continue

            partly = [o for o in store.orders({"partially_filled"}) if o.client_order_id in sent]
            if partly:  # booked once, in part; the rest is booked when it completes, after crash A
                partial_id = partly[0].client_order_id
                own = [f for f in store.fills() if f.client_order_id == partial_id]
                assert len(own) == 1
                assert own[0].qty < partly[0].qty
            if row >= PARTIAL_FROM and sent and not crash_a:
                crash_a = True  # crash A, right after the first order from PARTIAL_FROM on
                del process, batches
                process = Process(venue, store, bars, fresh=False)
                batches = process.batches()
                continue

            rejected = [o for o in store.orders({"rejected"}) if o.client_order_id in sent]
            if rejected:
                rejected_seen = True
                assert process.engine.ledger.inflight == 0.0  # nothing of it is left in flight
                assert rejected[0].client_order_id not in getattr(process.broker, "open", {})

        assert crash_a and crash_b
        node, engine = process.node, process.engine
        orders = {o.client_order_id: o for o in store.orders()}
        fills = store.fills()

        # every order: a unique, deterministic client id, at the venue at most once
        for order in orders.values():
            bar_ms = int(pd.Timestamp(order.bar).value // 1_000_000)
            assert bar_ms in stamps
            assert order.client_order_id in {venue.expected_id(order.sleeve, bar_ms, n) for n in range(3)}
        at_venue = venue.client_ids()
        assert len(at_venue) == len(set(at_venue))
        assert set(at_venue) <= set(orders)
        posted = venue.posted()  # found after crash B by its id, never sent a second time
        assert len(posted) == len(set(posted))
        assert set(posted) == set(at_venue) | {o.client_order_id for o in orders.values() if o.status == "rejected"}

        # every fill belongs to an order and is booked once: per order, the venue's filled quantity exactly
        assert {f.client_order_id for f in fills} <= set(orders)
        assert len({f.fill_id for f in fills}) == len(fills)
        for client_id, filled in venue.filled().items():
            assert sum((f.qty for f in fills if f.client_order_id == client_id), Decimal(0)) == filled

        # the ledger's units = the stored position = the venue's ledger = holdings()
        units = engine.ledger.units
        stored = {(p.sleeve, p.symbol): p.qty for p in store.positions()}
        assert float(stored[(process.sleeve, venue.symbol)]) == pytest.approx(units, abs=1e-12)
        held = venue.held()
        reported = process.broker.holdings([venue.symbol])
        if held is None:
            assert reported is None
            # paper: the run with its two crashes booked exactly the backtest's fills, none twice
            expected = run_portfolio(_config(venue.symbol), lambda _s, _tf: bars).sleeves[process.sleeve].fills
            assert len(fills) == len(expected) > 10
            assert [float(f.qty) for f in fills] == pytest.approx(list(expected["qty"]), rel=1e-12)
        else:
            assert reported == {venue.symbol: held}
            assert units == pytest.approx(float(held), abs=1e-8)
            assert rejected_seen
            assert partial_id is not None
            own = [f for f in fills if f.client_order_id == partial_id]
            assert len(own) == 2  # the part booked before crash A, the rest once after it
            assert orders[partial_id].status == "filled"
            assert sum((f.qty for f in own), Decimal(0)) == orders[partial_id].qty
            assert len(at_venue) > 10
        assert engine.ledger.inflight == 0.0
        assert node.summary.duplicate_fills == 0
        store.close()


# ---------------------------------------------------------------------------------------------- the submission


@pytest.mark.parametrize("kind", ["ccxt", "alpaca"])
def test_every_venue_broker_submits_an_order_once(kind: str, tmp_path: Path) -> None:
    """The shared submission, through each venue broker's own calls: an order is looked up by its client id before
    it is sent and before any resend, a refusal is final, and an exact quantity reaches the venue exactly."""
    attempts = 3  # the brokers above: max_retries=2
    with VENUES[kind](tmp_path) as venue:
        venue.set_price(Decimal(30_000) if kind == "ccxt" else Decimal(100))
        orders: Submission[Any] = venue.broker().orders  # type: ignore[attr-defined]
        qty = Decimal("0.01234") if kind == "ccxt" else Decimal("1.234567891")

        def submit(client_id: str) -> Any:
            return orders.submit(OrderRequest(client_id, venue.symbol, "buy", qty))

        def posts(client_id: str) -> int:
            return venue.posted().count(client_id)

        clean = submit("tf-clean")
        assert (clean.outcome, posts("tf-clean"), venue.quantity("tf-clean")) == ("placed", 1, qty)

        again = submit("tf-clean")  # the same order again (a bar processed twice): found, never sent again
        assert again.outcome == "placed" and posts("tf-clean") == 1

        venue.lose_next_answer()  # placed, answer lost: the look-up finds it
        lost = submit("tf-lost")
        assert (lost.outcome, posts("tf-lost"), venue.client_ids().count("tf-lost")) == ("placed", 1, 1)

        venue.fail_placements()  # a 503: the look-up finds nothing, so it is sent again
        retried = submit("tf-retried")
        assert (retried.outcome, posts("tf-retried"), venue.client_ids().count("tf-retried")) == ("placed", 2, 1)

        venue.arm_reject()  # a refusal is final: not sent again
        refused = submit("tf-refused")
        assert (refused.outcome, posts("tf-refused")) == ("rejected", 1)
        assert "tf-refused" not in venue.client_ids() and refused.reason

        venue.fail_look_ups(attempts)  # the venue cannot be asked before sending: nothing is sent
        unknown = submit("tf-unknown")
        assert (unknown.outcome, unknown.order, posts("tf-unknown")) == ("unknown", None, 0)
        assert orders.find("tf-unknown", venue.symbol) is None  # it never reached the venue

        assert orders.find("tf-clean", venue.symbol) is not None
        assert len(venue.client_ids()) == len(set(venue.client_ids())) == 3
