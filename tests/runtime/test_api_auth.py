"""Bearer-token access to the bot's HTTP API: with a token set every endpoint refuses a missing or wrong token
(401); with none set, reads are served and every control command is refused (403, saying what to set). The
token never comes back in an answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import FixedClock
from pipeline.data.ingest import ingest
from pipeline.data.sources.files import FileSource
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node
from tests.runtime.api_helpers import FEED, M1, PORTFOLIO, SLEEVES, TOKEN, ApiServer, api_settings, minutes, serving

CONTROL = ("/api/pause", "/api/resume", "/api/flatten", "/api/reset-breaker", "/api/stop")


def _state(root: Path, token: str | None) -> Settings:
    """Settings over the state of a short paper replay (ledgers, fills, trades, equity) of bars in the lake, and
    one pending command."""
    settings = api_settings(root, token)
    bars = minutes(300)
    path = root / "bars.parquet"
    bars.to_parquet(path)
    clock = FixedClock(bars["timestamp"].iloc[-1] + pd.Timedelta(hours=1))
    ingest(FileSource(path, clock, "binance"), "BTC/USDT", M1, settings, clock)
    store = StateStore(settings.state_url)
    node = Node(store, PortfolioConfig.model_validate(PORTFOLIO), ReplayFeed({FEED: bars}, M1), SLEEVES,
                PaperBroker())
    node.start(fresh=True)
    node.run()
    store.add_command("resume", "dashboard")  # command 1, pending
    store.close()
    return settings


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with serving(_state(tmp_path_factory.mktemp("locked"), TOKEN)) as api:
        yield api


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with serving(_state(tmp_path_factory.mktemp("open"), None)) as api:
        yield api


def _endpoints(api: ApiServer) -> list[tuple[str, str]]:
    """Every (method, path) the API documents, path parameters filled in."""
    with api.client(TOKEN) as http:
        paths = http.get("/openapi.json").json()["paths"]
    return [(method.upper(), path.replace("{command_id}", "1")) for path, item in paths.items() for method in item]


def test_with_a_token_every_endpoint_refuses_a_missing_or_wrong_one(locked: ApiServer) -> None:
    endpoints = _endpoints(locked)
    assert len(endpoints) == 13
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        with locked.client(token) as http:
            for method, path in endpoints:
                answer = http.request(method, path)
                assert answer.status_code == 401, (method, path, token, answer.text)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in answer.json()["detail"]
    with httpx.Client(base_url=locked.url, trust_env=False) as http:  # not the bearer scheme
        assert http.get("/api/status", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert http.get("/api/status", params={"token": TOKEN}).status_code == 401  # only the websocket takes it
        assert http.get("/docs").status_code == 200  # the docs hold no state: a browser opens them as they are
        assert http.get("/openapi.json").status_code == 200


def test_with_the_token_every_endpoint_answers_and_never_shows_it(locked: ApiServer) -> None:
    with locked.client(TOKEN) as http:
        for method, path in _endpoints(locked):
            answer = http.request(method, path)
            assert answer.status_code in (200, 202), (method, path, answer.text)
            assert TOKEN not in answer.text
            assert all(TOKEN not in value for value in answer.headers.values())
        status = http.get("/api/status").json()
    assert status["status"] == "stopped" and len(status["sleeves"]) == 2


def test_without_a_token_reads_are_served_and_control_is_refused(open_api: ApiServer) -> None:
    endpoints = _endpoints(open_api)
    reads = [(m, p) for m, p in endpoints if p not in CONTROL]
    assert {p for m, p in endpoints if m == "POST"} == set(CONTROL)
    for token in (None, TOKEN):
        with open_api.client(token) as http:
            for method, path in reads:
                assert http.request(method, path).status_code == 200, (method, path)
            for path in CONTROL:
                answer = http.post(path, json={})
                assert answer.status_code == 403, (path, answer.text)
                assert "set TRADEFORGE_API_TOKEN" in answer.json()["detail"]
    store = StateStore.read_only(open_api.settings.state_url)
    try:
        assert [c.id for c in store.pending_commands()] == [1]  # nothing was queued
    finally:
        store.close()
