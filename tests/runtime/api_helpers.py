"""The bot's HTTP API under test: a real uvicorn server on 127.0.0.1 (in a thread, on a socket bound to a free
port), real clients (httpx, websockets), and a real runtime driven one bar at a time on the replay feed.

Nothing here waits for a length of time: the server's start, the runtime's bars and the websocket's messages
are waited on as events (``tests.waiting.wait_until``, or a blocking receive), with no bound of their own.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection
from websockets.typing import Origin

from pipeline.backtest.portfolio import PortfolioConfig
from pipeline.clock import Clock
from pipeline.domain import Timeframe
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.api.server import server
from runtime.brokers import PaperBroker
from runtime.feeds import ReplayFeed
from runtime.node import Node, RunSummary
from tests.conftest import shared_file
from tests.waiting import wait_until

M1 = Timeframe.parse("1m")
FEED = "binance:BTC/USDT:1m"
TOKEN = "api-test-token-5f1c9e"
POLL_S = 0.05
PORTFOLIO: dict[str, Any] = {"cash": 100_000, "strategies": [
    {"id": "fast", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 0.5,
     "params": {"fast": 2, "slow": 5}, "engine": {"max_position": 1.0, "max_consecutive_losses": 1}},
    {"id": "trend", "strategy": "sma_cross", "symbols": ["BTC/USDT"], "timeframe": "1m", "allocation": 0.5,
     "params": {"fast": 10, "slow": 30}, "engine": {"max_position": 1.0}},
]}
"""Two sleeves on one replayed series: ``fast`` trades every few bars and trips its loss-streak breaker at its
first losing trade; ``trend`` trades now and then."""
SLEEVES = {"fast:BTC/USDT": FEED, "trend:BTC/USDT": FEED}


def minutes(rows: int) -> pd.DataFrame:
    """``rows`` real BTC/USDT minute bars."""
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[200_000:200_000 + rows]
    return frame.reset_index(drop=True)


def api_settings(root: Path, token: str | None = None) -> Settings:
    return Settings(data_dir=root / "data", api_token=token, _env_file=None)


class ApiServer:
    """The API of ``settings`` served by uvicorn in a thread on 127.0.0.1 (a free port)."""

    def __init__(self, settings: Settings, poll_s: float = POLL_S, clock: Clock | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = settings.model_copy(update={"api_url": self.url})
        self.server = server(self.settings, poll_s=poll_s, clock=clock)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "the API server to start")
        assert self.server.started, "the API server did not start"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, trust_env=False)

    def websocket(self, token: str | None = None, query_token: str | None = None,
                  origin: str | None = None) -> ClientConnection:
        """A websocket client of ``/ws``; ``origin`` is the ``Origin`` header a browser page would send."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        query = f"?token={query_token}" if query_token else ""
        return connect(f"ws://127.0.0.1:{self.port}/ws{query}", additional_headers=headers, open_timeout=None,
                       proxy=None, close_timeout=None, origin=None if origin is None else Origin(origin))


@contextmanager
def serving(settings: Settings, poll_s: float = POLL_S, clock: Clock | None = None) -> Iterator[ApiServer]:
    api = ApiServer(settings, poll_s, clock).start()
    try:
        yield api
    finally:
        api.stop()


def receive_until(ws: Connection, done: Callable[[list[dict[str, Any]]], bool],
                  received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Receive messages (appended to ``received``) until ``done(received)`` holds; blocks on each message."""
    while not done(received):
        received.append(json.loads(ws.recv()))
    return received


class BarGate:
    """The replay feed's ``sleep``: the runtime takes the next bar only when the test steps it.

    A paced replay calls its ``sleep`` before handing over each bar, so a call for bar ``n + 1`` means bar
    ``n`` has been processed and committed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._go = threading.Semaphore(0)
        self.asked = 0
        self.allowed = 0

    def __call__(self, _seconds: float) -> None:
        with self._lock:
            self.asked += 1
        self._go.acquire()

    def release(self) -> int:
        """Let one more bar through; returns how many bars have been let through."""
        self.allowed += 1
        self._go.release()
        return self.allowed

    def open(self) -> None:
        """Let every waiting and later bar through (the run is ending)."""
        for _ in range(2):
            self._go.release()


class GatedRuntime:
    """A paper runtime (``runtime.node.Node``) on replayed bars in a thread, one bar per :meth:`step`."""

    def __init__(self, settings: Settings, bars: pd.DataFrame) -> None:
        self.store = StateStore(settings.state_url)
        self.gate = BarGate()
        feed = ReplayFeed({FEED: bars}, M1, speed=1.0, sleep=self.gate)
        self.node = Node(self.store, PortfolioConfig.model_validate(PORTFOLIO), feed, SLEEVES, PaperBroker())
        self.summary: RunSummary | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.summary = self.node.run()

    def start(self) -> GatedRuntime:
        self.node.start(fresh=True)
        self.thread.start()
        wait_until(lambda: self.gate.asked >= 1, "the runtime to ask for its first bar")
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def step(self) -> None:
        """Let the runtime take one bar, and wait until it has processed and committed it (or has stopped)."""
        target = self.gate.release()
        wait_until(lambda: self.gate.asked > target or not self.running, "the runtime to process one more bar")

    def finish(self) -> None:
        """Stop the runtime (if it still runs) and wait for its thread."""
        if self.running:
            self.node.request_stop("the test is over")
            self.gate.open()
        self.thread.join()
        self.store.close()
