"""The bot's ``/ws`` websocket: the token (header or ``token`` query parameter) when one is set, rows stored
after a client connects (also when the runtime creates its state only then), and a clean shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.state import StateStore
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
