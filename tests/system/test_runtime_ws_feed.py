"""The runtime as a subprocess on the ccxt websocket feed (``--feed ccxt --ws``): closed 1m candles come from a
local fake of Binance's kline stream through the real ccxt.pro client, REST history (warm-up) from a local fake of
Binance's REST API. One connection is dropped mid-candle; the runtime reconnects and goes on. Stopped with
``python -m runtime ctl stop``, it exits cleanly, and its state store holds exactly the closed candles, in order,
each once, with their closed values (the candle still open is never processed), and the reconnect as an event.

The live feed reads the wall clock, so the candles are real BTC/USDT minute bars re-stamped onto the minutes just
before now: REST serves the history before the first streamed candle, the stream the rest; the candle streamed
last is the one open now. The test waits on what the runtime stores (bars processed, events), never on time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.state import StateStore
from runtime.feeds.ccxt_ws import RECONNECT
from tests.conftest import shared_file
from tests.fakes.binance_server import FakeBinance
from tests.fakes.binance_stream import FakeBinanceStream
from tests.waiting import ProcessedBars, wait_until

pytestmark = pytest.mark.slow

SYMBOL, INTERVAL, KEY = "BTC/USDT", "1m", "binance:BTC/USDT:1m"
HISTORY = 150
"""Bars REST serves before the first streamed candle (the runtime's warm-up reads the last 100 minutes)."""
CLOSED = 6
"""Candles closed over the stream; one more is left open."""
DROP_AT = 3
"""The candle during which the connection is dropped: opened on the first connection, closed on the second."""


def _bars() -> pd.DataFrame:
    """Real BTC/USDT minute bars, the last one stamped on the minute open now, the others on the minutes before."""
    start = pd.Timestamp("2024-07-29", tz="UTC")
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"),
                            filters=[("timestamp", ">=", start)]).head(HISTORY + CLOSED + 1).reset_index(drop=True)
    frame["timestamp"] = pd.date_range(end=pd.Timestamp.now(tz="UTC").floor("min"), periods=len(frame), freq="min")
    return frame


def _environment(tmp_path: Path, venue: FakeBinance, stream: FakeBinanceStream) -> dict[str, str]:
    env = {**os.environ, "TRADEFORGE_DATA_DIR": str(tmp_path / "data"), "TRADEFORGE_CCXT_REST_URL": venue.url,
           "TRADEFORGE_CCXT_WS_URL": stream.url, "TRADEFORGE_WARMUP_BARS": "100",
           "TRADEFORGE_RETRY_BACKOFF_S": "0.05", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           # the streamed candles opened up to 7 minutes before now: no stale-data pause while they come
           "TRADEFORGE_STALE_AFTER_BARS": "60"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    return env


def _reconnects(db: Path) -> list[str]:
    """What the runtime recorded of each websocket torn down and rebuilt."""
    store = StateStore.read_only(f"sqlite:///{db}")
    try:
        return [event.detail for event in store.events(RECONNECT)]
    finally:
        store.close()


def test_the_runtime_trades_closed_websocket_candles_through_a_dropped_connection(tmp_path: Path) -> None:
    bars = _bars()
    streamed = bars.iloc[HISTORY:].reset_index(drop=True)
    db = tmp_path / "data" / "state" / "tradeforge.db"
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with FakeBinance() as venue, FakeBinanceStream() as stream:
        venue.serve_bars(SYMBOL, INTERVAL, bars.iloc[:HISTORY])
        env = _environment(tmp_path, venue, stream)
        command = [sys.executable, "-m", "runtime", "--mode", "paper", "--feed", "ccxt", "--ws",
                   "--strategy", "buy_and_hold", "--symbol", SYMBOL, "--timeframe", INTERVAL, "--fresh", "--json"]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
        processed = ProcessedBars(db, KEY, streamed["timestamp"])

        def wait(condition: Callable[[], object], what: str) -> None:
            wait_until(condition, what, process=process, log=err)

        def subscribed(connection: int) -> bool:
            asked = any(number >= connection for number, _ in stream.subscriptions)
            return asked and stream.subscribers(SYMBOL, INTERVAL) > 0

        try:
            wait(lambda: subscribed(1), "the runtime subscribed to the kline stream")
            stream.open_candle(SYMBOL, INTERVAL, streamed.iloc[0])
            for row in range(CLOSED):
                if row == DROP_AT:  # mid-candle, while the runtime waits for the stream's next message
                    assert stream.drop_connections() == 1
                    wait(lambda: _reconnects(db), "a feed_reconnect event in the state store")
                    wait(lambda: subscribed(2), "the runtime subscribed again on a new connection")
                stream.update_candle(SYMBOL, INTERVAL, streamed.iloc[row])
                stream.close_candle(SYMBOL, INTERVAL, streamed.iloc[row])
                stream.open_candle(SYMBOL, INTERVAL, streamed.iloc[row + 1])  # closes the candle before it
                wait(processed.reached(row + 1), f"{row + 1} streamed candles processed")
            stop = subprocess.run([sys.executable, "-m", "runtime", "ctl", "stop"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True)
            assert stop.returncode == 0, stop.stderr
            process.wait()
        finally:
            processed.close()
            if process.poll() is None:
                process.kill()
                process.wait()

    errors = err.read_text()
    assert process.returncode == 0, errors[-3000:]
    assert "Traceback" not in errors, errors[-3000:]
    summary = json.loads(out.read_text())
    assert summary["bars"] == CLOSED, summary  # each closed candle processed once, the open one never
    assert summary["stopped_by"] == "stop command from cli", summary

    store = StateStore.read_only(f"sqlite:///{db}")
    try:
        closed = list(streamed["timestamp"].iloc[:CLOSED])
        cursor = store.cursor(KEY)
        assert cursor is not None and pd.Timestamp(cursor) == closed[-1]
        marks = store.equity("portfolio")
        assert [pd.Timestamp(m.at) for m in marks] == closed  # one batch per candle, in order
        # bought at the first candle's decision, held since: each later mark is the position at that candle's close
        held = store.equity("main:BTC/USDT")[1:]
        units = float(store.ledgers()["main:BTC/USDT"].units)
        assert units > 0 and [pd.Timestamp(m.at) for m in held] == closed[1:]
        assert [float(m.position_value) / units for m in held] == pytest.approx(
            list(streamed["close"].iloc[1:CLOSED]), rel=1e-9)
        reconnects = _reconnects(db)
        assert any("connection lost" in text for text in reconnects), reconnects
        state = store.bot_state()
        assert state is not None and state.status == "stopped", state
    finally:
        store.close()
