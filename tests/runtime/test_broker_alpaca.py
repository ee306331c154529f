"""The runtime trading US stocks through the real alpaca-py TradingClient against a local fake Alpaca.

Real AAPL daily bars are replayed one at a time; the fake's price follows each bar's close. Through 429s, 5xx,
slow answers, lost responses, partial fills and rejections the runtime must stay up, never send an order twice,
and end with fills and positions on record that match the venue's own ledger.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import requests
from alpaca.common.enums import BaseURL

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.data.sources.alpaca_source import BoundedTradingClient
from pipeline.domain import Timeframe
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.brokers.alpaca import AlpacaBroker, make_trading_client
from runtime.brokers.submission import VenueUnavailable
from runtime.feeds import ReplayFeed
from runtime.node import Node
from tests.conftest import shared_file
from tests.fakes.alpaca_server import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, AlpacaServer

KEY = "alpaca:AAPL:1d"
SLEEVE = "main:AAPL"
CASH = 50_000


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.read_parquet(shared_file("quandlwiki_AAPL_1d.parquet")).iloc[-320:].reset_index(drop=True)


def _settings(tmp_path: Path, venue: AlpacaServer, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": tmp_path, "alpaca_api_key": DEFAULT_KEY_ID,
                                 "alpaca_api_secret": DEFAULT_SECRET_KEY, "alpaca_trading_url": venue.url,
                                 "http_timeout_s": 0.5}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def _broker(tmp_path: Path, venue: AlpacaServer, sleeps: list[float] | None = None) -> AlpacaBroker:
    record = sleeps if sleeps is not None else []
    return AlpacaBroker(make_trading_client(_settings(tmp_path, venue)), max_retries=3, backoff_s=0.01,
                        sleep=record.append)


def _config() -> PortfolioConfig:
    return PortfolioConfig.model_validate({"cash": CASH, "strategies": [
        {"id": "main", "strategy": "sma_cross", "symbols": ["AAPL"], "timeframe": "1d", "allocation": 1.0,
         "params": {"fast": 5, "slow": 15},
         "engine": {"max_position": 0.5, "fee_bps": 0, "max_drawdown": None, "daily_loss": None,
                    "max_consecutive_losses": None, "max_trades_per_day": None}}]})


def _node(store: StateStore, bars: pd.DataFrame, broker: AlpacaBroker) -> tuple[Node, ReplayFeed]:
    feed = ReplayFeed({KEY: bars}, Timeframe.parse("1d"), speed=1e12, sleep=lambda _s: None)  # one bar a batch
    return Node(store, _config(), feed, {SLEEVE: KEY}, broker, mode="live"), feed


def _arm(venue: AlpacaServer, fault: str | None) -> None:
    if fault == "429":
        venue.fail_next(429, endpoint="orders", method="POST")
    elif fault == "500":
        venue.fail_next(500, endpoint="orders", method="POST", times=2)
    elif fault == "slow":
        venue.delay_next(1.0, endpoint="orders", method="POST")  # placed, but the client gives up after 0.5 s
    elif fault == "lost":
        venue.lose_response_next()
    elif fault == "partial":
        venue.partial_fill_next("0.4")
    elif fault == "reject":
        venue.reject_next(403, "insufficient buying power")
    elif fault == "invalid":
        venue.reject_next(422, "qty must be > 0")
    elif fault == "down":  # every order request fails: the order's fate stays unknown until the next bar
        venue.fail_next(503, endpoint="orders", times=4)


def _run(tmp_path: Path, venue: AlpacaServer, bars: pd.DataFrame, faults: dict[int, str],
         sleeps: list[float] | None = None) -> tuple[Node, StateStore]:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    node, feed = _node(store, bars, _broker(tmp_path, venue, sleeps))
    node.start(fresh=True)
    closes = bars["close"].to_numpy()
    for number, batch in enumerate(feed.batches(node.cursors)):
        venue.set_price("AAPL", Decimal(repr(float(closes[int(batch.rows[KEY][0])]))))
        _arm(venue, faults.get(number))
        node._process(batch)
    return node, store


def _assert_state_matches_the_venue(node: Node, store: StateStore, venue: AlpacaServer) -> None:
    client_ids = [order.client_order_id for order in venue.orders]
    assert len(client_ids) == len(set(client_ids))  # no order was ever sent twice
    stored_orders = {o.client_order_id: o for o in store.orders()}
    stored_fills = store.fills()
    assert {f.client_order_id for f in stored_fills} <= set(stored_orders)
    assert len({f.fill_id for f in stored_fills}) == len(stored_fills)
    for order in venue.orders:  # every venue order is on record, with exactly what it filled
        assert order.client_order_id in stored_orders
        own = [f for f in stored_fills if f.client_order_id == order.client_order_id]
        assert sum((f.qty for f in own), Decimal(0)) == order.filled_qty
        notional = sum((f.qty * f.price for f in own), Decimal(0))
        assert float(notional) == pytest.approx(float(order.filled_notional), rel=1e-15, abs=1e-9)
        assert stored_orders[order.client_order_id].venue_order_id == order.id
        if not order.is_open:
            assert stored_orders[order.client_order_id].status == order.status
    held = venue.positions.get("AAPL", Decimal(0))
    engine = node.stepper.engines[SLEEVE]
    assert engine.ledger.units == pytest.approx(float(held), abs=1e-9)
    assert engine.ledger.cash == pytest.approx(float(venue.cash), rel=1e-12)
    stored_position = {p.sleeve: p.qty for p in store.positions()}
    assert float(stored_position[SLEEVE]) == pytest.approx(float(held), abs=1e-9)
    assert node.broker.holdings(["AAPL"]) == {"AAPL": held}


def test_clean_run_matches_the_venue(tmp_path: Path, bars: pd.DataFrame) -> None:
    with AlpacaServer(cash=CASH) as venue:
        node, store = _run(tmp_path, venue, bars, {})
        assert len(venue.executions) > 10
        assert all(o.status == "filled" for o in venue.orders)
        assert all(r.body["time_in_force"] == "day" and r.body["type"] == "market"
                   for r in venue.requests_to("orders", "POST"))
        _assert_state_matches_the_venue(node, store, venue)
        assert not any(r.endpoint == "bars" for r in venue.requests)


@pytest.mark.slow
def test_faults_never_kill_the_runtime_nor_duplicate_an_order(tmp_path: Path, bars: pd.DataFrame) -> None:
    with AlpacaServer(cash=CASH) as venue:
        # find the bars where orders go out in a clean run, then put a fault on each of them
        _, clean_store = _run(tmp_path / "clean", venue, bars, {})
    stamps = list(bars["timestamp"])
    positions = sorted({stamps.index(pd.Timestamp(o.bar)) for o in clean_store.orders()})
    kinds = ["429", "500", "lost", "partial", "slow", "reject", "down", "429", "lost", "invalid"]
    faults = {position: kind for position, kind in zip(positions[1:], kinds, strict=False)}
    assert len(positions) > len(kinds)  # every fault kind meets an order bar of the clean run
    sleeps: list[float] = []
    with AlpacaServer(cash=CASH) as venue:
        node, store = _run(tmp_path / "faults", venue, bars, faults, sleeps)
        _assert_state_matches_the_venue(node, store, venue)
        rejected = {o.reason.partition(": ")[2] for o in store.orders() if o.status == "rejected"}
        assert rejected == {"HTTP 403: insufficient buying power", "HTTP 422: qty must be > 0",
                            "never reached the venue"}
        assert len(venue.executions) > 10
        partial = [o for o in venue.orders if len([e for e in venue.executions if e.order_id == o.id]) == 2]
        assert len(partial) == 1  # filled in two parts, booked as two fills
        assert len([f for f in store.fills() if f.client_order_id == partial[0].client_order_id]) == 2
        posted = [r.body["client_order_id"] for r in venue.requests_to("orders", "POST")]
        # an order is posted again only after an answer that says it was not placed (429 twice, 500 twice in a
        # row); a lost or late answer is followed by a look-up that finds the order, never by a second post
        assert sorted(posted.count(cid) for cid in set(posted) if posted.count(cid) > 1) == [2, 2, 3]
        assert len(posted) == len(venue.orders) + 4 + 2  # + the posts answered 429 / 500, + the 2 refused
        assert len(venue.requests_to("orders", "GET")) > len(venue.orders)  # looked up before sending
        assert node.broker.open == {}
        engine = node.stepper.engines[SLEEVE]
        assert engine.ledger.inflight == 0.0
    assert sleeps and all(s > 0 for s in sleeps)  # the backoff went through the injected sleep


def test_an_exit_cancels_the_unfilled_rest_of_a_buy_and_sells_only_what_is_held(tmp_path: Path) -> None:
    from pipeline.engine import Engine, EngineConfig

    with AlpacaServer(cash=CASH) as venue:
        broker = _broker(tmp_path, venue)
        engine = Engine(EngineConfig(cash=CASH, fee_bps=0, max_position=0.5), ("enter", "leave"), external=True)
        venue.set_price("AAPL", Decimal(500))
        venue.partial_fill_next("0.4")
        engine.step(1_700_000_000_000, 500, 500, 500, 500, 1.0, 0)  # decide to buy
        broker.route(SLEEVE, "AAPL", engine, 1_700_000_000_000)
        held = engine.ledger.units
        assert held == pytest.approx(0.4 * 50, rel=1e-6)  # 40 % of the 50 units filled
        engine.step(1_700_086_400_000, 500, 500, 500, 500, 0.0, 1)  # decide to get out
        broker.route(SLEEVE, "AAPL", engine, 1_700_086_400_000)
        assert sorted(order.status for order in venue.orders) == ["canceled", "filled"]
        sold = [e for e in venue.executions if e.side == "sell"]
        assert float(sum(e.qty for e in sold)) == pytest.approx(held, abs=1e-9)
        assert venue.positions == {}
        assert engine.ledger.units == 0.0
        assert engine.ledger.inflight == 0.0
        assert venue.cash == CASH  # bought and sold at the same price, no commission
        assert broker.open == {}


def _restart(store: StateStore, bars: pd.DataFrame, broker: AlpacaBroker) -> tuple[Node, ReplayFeed]:
    """A new process on the same store: a new node and broker; the broker takes over the open orders."""
    node, feed = _node(store, bars, broker)
    node.start(fresh=False)
    still_open = store.orders({"new", "partially_filled"})
    if still_open and not {o.client_order_id for o in still_open} <= set(broker.open):
        broker.resume(still_open, store.fills())  # a node that does not take them over itself
    return node, feed


def test_an_order_of_unknown_fate_at_a_crash_is_found_after_the_restart(tmp_path: Path,
                                                                         bars: pd.DataFrame) -> None:
    with AlpacaServer(cash=CASH) as venue:
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        node, feed = _node(store, bars, _broker(tmp_path, venue))
        node.start(fresh=True)
        closes = bars["close"].to_numpy()
        # the first order: the look-up before it answers, the order is placed but its answer is lost, and
        # every look-up after it fails (4 attempts after the lost answer, 4 after the resend's "not unique")
        venue.delay_next(0.0, endpoint="orders", method="GET")
        venue.lose_response_next()
        venue.fail_next(503, endpoint="orders", method="GET", times=8)
        for batch in feed.batches(node.cursors):
            venue.set_price("AAPL", Decimal(repr(float(closes[int(batch.rows[KEY][0])]))))
            node._process(batch)
            if venue.orders:
                break
        assert venue.pending_faults == 0
        unknown = store.orders({"new"})
        assert [o.client_order_id for o in unknown] == [venue.orders[0].client_order_id]
        assert unknown[0].venue_order_id is None
        assert venue.orders[0].status == "filled"  # the venue filled what the runtime could not confirm
        assert store.fills() == []
        del node, feed  # the crash: the process and its broker are gone; the store and the venue remain

        restarted, feed = _restart(store, bars, _broker(tmp_path, venue))
        for batch in feed.batches(restarted.cursors):
            venue.set_price("AAPL", Decimal(repr(float(closes[int(batch.rows[KEY][0])]))))
            restarted._process(batch)
        _assert_state_matches_the_venue(restarted, store, venue)
        first = store.orders()[0]
        assert (first.client_order_id, first.status) == (venue.orders[0].client_order_id, "filled")
        assert len(venue.requests_to("orders", "POST")) == len(venue.orders) + 1  # + the resend refused as a repeat


def test_an_order_that_never_reached_the_venue_is_released(tmp_path: Path, bars: pd.DataFrame) -> None:
    with AlpacaServer(cash=CASH) as venue:
        store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        node, feed = _node(store, bars, _broker(tmp_path, venue))
        node.start(fresh=True)
        closes = bars["close"].to_numpy()
        venue.fail_next(503, endpoint="orders", times=4)  # the look-up before the first order fails throughout
        for batch in feed.batches(node.cursors):
            venue.set_price("AAPL", Decimal(repr(float(closes[int(batch.rows[KEY][0])]))))
            node._process(batch)
            if store.orders():
                break
        engine = node.stepper.engines[SLEEVE]
        assert engine.ledger.inflight != 0.0  # the order is still counted in flight ...
        assert [o.status for o in store.orders()] == ["new"]
        assert venue.orders == []
        restarted, feed = _restart(store, bars, _broker(tmp_path, venue))
        batch = next(iter(feed.batches(restarted.cursors)))
        restarted._process(batch)
        first = store.orders()[0]
        assert (first.status, first.reason.partition(": ")[2]) == ("rejected", "never reached the venue")
        engine = restarted.stepper.engines[SLEEVE]
        assert engine.ledger.inflight == 0.0  # ... until the next look-up finds nothing
        assert venue.orders == []


def test_holdings_reads_positions_and_reports_an_unreachable_venue(tmp_path: Path) -> None:
    with AlpacaServer(cash=CASH) as venue:
        broker = _broker(tmp_path, venue)
        assert broker.holdings(["AAPL", "MSFT"]) == {"AAPL": Decimal(0), "MSFT": Decimal(0)}
        venue.set_price("AAPL", Decimal("512.5"))
        from pipeline.engine import Engine, EngineConfig

        engine = Engine(EngineConfig(cash=CASH, fee_bps=0, max_position=0.5), ("enter",), external=True)
        engine.step(1_700_000_000_000, 512.5, 512.5, 512.5, 512.5, 0.5, 0)
        broker.route(SLEEVE, "AAPL", engine, 1_700_000_000_000)
        assert broker.holdings(["AAPL", "MSFT"]) == {"AAPL": venue.positions["AAPL"], "MSFT": Decimal(0)}
        assert venue.positions["AAPL"] > 0
        venue.fail_next(503, endpoint="positions", times=4)
        with pytest.raises(VenueUnavailable, match="positions could not be read"):
            broker.holdings(["AAPL"])


def test_the_fake_speaks_the_trading_api_to_the_real_client(tmp_path: Path) -> None:
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
    from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

    with AlpacaServer(cash=CASH) as venue:
        client = make_trading_client(_settings(tmp_path, venue))
        venue.set_price("AAPL", Decimal("100.5"))
        assert Decimal(str(client.get_account().cash)) == CASH
        bought = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=2.5, side=OrderSide.BUY,
                                                        time_in_force=TimeInForce.DAY, client_order_id="m-1"))
        assert (bought.status.value, bought.filled_qty, bought.filled_avg_price) == ("filled", "2.5", "100.5")
        resting = client.submit_order(LimitOrderRequest(symbol="AAPL", qty=1, limit_price=99, side=OrderSide.BUY,
                                                        time_in_force=TimeInForce.DAY, client_order_id="l-1"))
        assert resting.status.value == "new"
        assert [o.client_order_id for o in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))] == [
            "l-1"]
        venue.set_price("AAPL", Decimal("98"))  # reaches the limit: filled at it
        assert client.get_order_by_id(resting.id).filled_avg_price == "99"
        assert len(client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))) == 2
        position = client.get_open_position("AAPL")
        assert (position.qty, position.avg_entry_price) == ("3.5", str((Decimal("251.25") + 99) / Decimal("3.5")))
        assert venue.cash == CASH - Decimal("251.25") - 99
        with pytest.raises(APIError) as unique:
            client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY,
                                                   time_in_force=TimeInForce.DAY, client_order_id="m-1"))
        assert (unique.value.status_code, unique.value.message) == (422, "client_order_id must be unique")
        with pytest.raises(APIError) as too_much:
            client.submit_order(MarketOrderRequest(symbol="AAPL", qty=4, side=OrderSide.SELL,
                                                   time_in_force=TimeInForce.DAY))
        assert too_much.value.status_code == 403
        assert "insufficient qty available" in too_much.value.message
        with pytest.raises(APIError) as cancelled:
            client.cancel_order_by_id(bought.id)
        assert cancelled.value.status_code == 422  # filled: no longer cancellable
        with pytest.raises(APIError) as none:
            client.get_open_position("MSFT")
        assert none.value.status_code == 404
        with pytest.raises(APIError) as refused:
            TradingClient(DEFAULT_KEY_ID, "wrong", url_override=venue.url).get_account()
        assert refused.value.status_code == 403
        assert requests.get(f"{venue.url}/v2/account", timeout=5).status_code == 401  # no key headers at all
        assert len(venue.orders) == 2


@pytest.mark.parametrize(("live_confirm", "paper", "url"), [
    ("", None, BaseURL.TRADING_PAPER.value),
    ("yes", None, BaseURL.TRADING_LIVE.value),
    ("yes", True, BaseURL.TRADING_PAPER.value),
    ("", False, BaseURL.TRADING_LIVE.value),
])
def test_the_client_trades_on_paper_unless_live_is_confirmed_with_the_settings_timeout(
        tmp_path: Path, live_confirm: str, paper: bool | None, url: str) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, alpaca_api_key="k", alpaca_api_secret="s",  # type: ignore[call-arg]
                        live_confirm=live_confirm, http_timeout_s=0.25)

    client = make_trading_client(settings, paper=paper)

    assert isinstance(client, BoundedTradingClient)
    assert (client.http.base_url, client.http.timeout_s) == (url, 0.25)


def test_the_trading_url_overrides_the_endpoint_either_way(tmp_path: Path) -> None:
    with AlpacaServer(cash=CASH) as venue:
        for paper in (True, False):
            client = make_trading_client(_settings(tmp_path, venue, alpaca_trading_url=venue.url + "/"), paper=paper)
            assert client.http.base_url == venue.url
            assert Decimal(str(client.get_account().cash)) == CASH
        assert [r.had_key_headers for r in venue.requests_to("account")] == [True, True]


def test_a_client_needs_both_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TRADEFORGE_ALPACA_API_SECRET"):
        make_trading_client(Settings(_env_file=None, data_dir=tmp_path, alpaca_api_key="k"))  # type: ignore[call-arg]
