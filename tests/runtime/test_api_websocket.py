"""The bot's ``/ws`` websocket: the token (header or ``token`` query parameter) when one is set, rows stored
after a client connects (also when the runtime creates its state only then, and never rows stored before it
joins while others are connected), fills and breaker events in the order they happened, and a clean shutdown.

The ordering and joining cases drive the pusher itself (``runtime.api.pusher.Pusher``) poll by poll over a real
state store, so that what is stored between two polls is chosen by the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.domain.trading import Fill, Side
from pipeline.state import BreakerRecord, StateStore, StepRecord
from runtime.api.pusher import Pusher, Subscriber
from runtime.api.state import StateAccess
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node
from tests.runtime.api_helpers import (
    FEED,
    M1,
    PORTFOLIO,
    SLEEVES,
    TOKEN,
    ApiServer,
    api_settings,
    minutes,
    receive_until,
    serving,
)


def _replay(state_url: str, rows: int) -> None:
    """A paper runtime replayed over ``rows`` minute bars, to the end."""
    store = StateStore(state_url)
    node = Node(store, PortfolioConfig.model_validate(PORTFOLIO), ReplayFeed({FEED: minutes(rows)}, M1, batch_size=50),
                SLEEVES, PaperBroker())
    node.start(fresh=True)
    node.run()
    store.close()


@pytest.mark.parametrize("token", [None, "wrong", TOKEN[:-1]])
def test_with_a_token_set_the_websocket_refuses_a_missing_or_wrong_one(tmp_path: Path, token: str | None) -> None:
    with serving(api_settings(tmp_path, TOKEN)) as api:
        for header, query in ((token, None), (None, token)):
            with pytest.raises(InvalidStatus) as refused:
                api.websocket(token=header, query_token=query)
            assert refused.value.response.status_code == 401
            assert TOKEN not in refused.value.response.body.decode()


def test_the_websocket_takes_the_token_as_a_header_or_a_query_parameter(tmp_path: Path) -> None:
    with serving(api_settings(tmp_path, TOKEN)) as api:
        for ws in (api.websocket(token=TOKEN), api.websocket(query_token=TOKEN)):
            with ws:
                assert receive_until(ws, lambda r: len(r) == 1, [])[0]["type"] == "hello"
    with serving(api_settings(tmp_path / "open")) as api, api.websocket() as unlocked:  # no token set: served
        assert receive_until(unlocked, lambda r: len(r) == 1, [])[0]["type"] == "hello"


def test_a_client_connected_before_the_state_exists_gets_every_row_stored_after(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    received: list[dict[str, Any]] = []
    with serving(settings) as api, api.websocket() as ws:
        hello = receive_until(ws, lambda r: len(r) == 1, received)[0]
        assert hello == {"type": "hello", "heartbeat_at": None, "status": "no runtime state"}
        _replay(settings.state_url, 400)
        store = StateStore.read_only(settings.state_url)
        fills = [f.fill_id for f in store.fills()]
        events = len(store.breaker_events())
        store.close()
        assert len(fills) > 10 and events

        def everything(r: list[dict[str, Any]]) -> bool:
            return ([m["fill_id"] for m in r if m["type"] == "fill"] == fills
                    and sum(m["type"] == "breaker" for m in r) == events)

        receive_until(ws, everything, received)
    assert received[-1]["type"] in ("fill", "breaker", "heartbeat")


def test_stopping_the_server_closes_its_websockets_cleanly(tmp_path: Path) -> None:
    api = ApiServer(api_settings(tmp_path)).start()
    ws = api.websocket()
    assert receive_until(ws, lambda r: len(r) == 1, [])[0]["type"] == "hello"
    api.stop()  # returns once the server, its connections and the pusher have ended
    assert not api.thread.is_alive()
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
    ws.close()


T0 = datetime.fromisoformat("2030-01-02T03:00:00+00:00")


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _fill(number: int, minutes: float) -> Fill:
    return Fill(fill_id=f"f{number}", client_order_id=f"o{number}", sleeve="fast:BTC/USDT", symbol="BTC/USDT",
                side=Side.BUY, qty=Decimal("0.5"), price=Decimal("100.25"), fee=Decimal("0.01"), at=_at(minutes),
                reason="entry")


def _trip(minutes: float) -> BreakerRecord:
    return BreakerRecord(sleeve="fast:BTC/USDT", at=_at(minutes), rule="max_consecutive_losses", value=1.0,
                         threshold=1.0, action="trip")


def _drain(subscriber: Subscriber) -> list[tuple[str, str]]:
    """The (type, time) of every message queued for ``subscriber``."""
    taken = []
    while not subscriber.queue.empty():
        message = subscriber.queue.get_nowait()
        assert message is not None
        taken.append((message["type"], message["at"]))
    return taken


def _z(minutes: float) -> str:
    return _at(minutes).isoformat().replace("+00:00", "Z")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(api_settings(tmp_path).state_url)
    store.set_status("running", "started", mode="paper")
    yield store
    store.close()


def test_one_poll_pushes_fills_and_breaker_events_in_the_order_they_happened(state: StateStore) -> None:
    async def scenario() -> list[tuple[str, str]]:
        access = StateAccess(state.url)
        pusher = Pusher(access)
        try:
            subscriber, _hello = await pusher.subscribe()
            state.apply_step(StepRecord(fills=[_fill(1, 0)]))  # three runtime steps between two polls
            state.apply_step(StepRecord(breakers=[_trip(1)]))
            state.apply_step(StepRecord(fills=[_fill(2, 2)], breakers=[_trip(2)], heartbeat_at=_at(3)))
            await pusher.poll()
            return _drain(subscriber)
        finally:
            access.close()

    assert asyncio.run(scenario()) == [("fill", _z(0)), ("breaker", _z(1)), ("fill", _z(2)), ("breaker", _z(2)),
                                       ("heartbeat", _z(3))]


def test_a_full_batch_holds_back_later_rows_so_the_order_holds_across_polls(state: StateStore) -> None:
    async def scenario() -> list[list[tuple[str, str]]]:
        access = StateAccess(state.url)
        pusher = Pusher(access, batch=2)
        try:
            subscriber, _hello = await pusher.subscribe()
            state.apply_step(StepRecord(fills=[_fill(1, 0), _fill(2, 1), _fill(3, 2), _fill(4, 3)],
                                        breakers=[_trip(2.5)], heartbeat_at=_at(4)))
            polls = []
            for _ in range(3):
                await pusher.poll()
                polls.append(_drain(subscriber))
            return polls
        finally:
            access.close()

    assert asyncio.run(scenario()) == [
        [("fill", _z(0)), ("fill", _z(1))],  # more fills may follow: the later breaker event waits
        [("fill", _z(2)), ("breaker", _z(2.5)), ("fill", _z(3))],
        [("heartbeat", _z(4))],  # every row is out: the heartbeat comes
    ]


def test_a_client_joining_while_others_are_connected_gets_nothing_stored_before_its_hello(
        state: StateStore) -> None:
    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]], Any]:
        access = StateAccess(state.url)
        pusher = Pusher(access)
        try:
            first, _hello = await pusher.subscribe()
            state.apply_step(StepRecord(fills=[_fill(1, 0)], breakers=[_trip(0)], heartbeat_at=_at(1)))
            late, hello = await pusher.subscribe()  # joins before the poller has read those rows
            await pusher.poll()
            before = _drain(late)
            state.apply_step(StepRecord(fills=[_fill(2, 2)], heartbeat_at=_at(3)))
            await pusher.poll()
            return _drain(first), before + _drain(late), hello
        finally:
            access.close()

    first, late, hello = asyncio.run(scenario())
    assert first == [("fill", _z(0)), ("breaker", _z(0)), ("heartbeat", _z(1)), ("fill", _z(2)), ("heartbeat", _z(3))]
    assert (hello.heartbeat_at, hello.status) == (_at(1), "running")  # its hello: what was stored when it joined
    assert late == [("fill", _z(2)), ("heartbeat", _z(3))]
