"""Live-feed latency benchmark: bar close at the venue → bar delivered to the node, websocket vs REST polling.

Against the local fakes of Binance (REST klines and the kline websocket stream), driven by the real ccxt and
ccxt.pro clients, the product's feeds (``CcxtWsFeed`` and ``CcxtFeed``, built from settings by
``runtime.wiring.ccxt_live_feed``, as the runtime builds them) deliver real BTC/USDT 1m bars. The venue's clock
and the feed's clock stand at a bar's close + 50 ms while the benchmark closes it: the REST fake then serves the
bar as closed, and the stream sends its final update and the next candle's first one, as Binance does. The
latency of a bar is the wall time from that moment to the moment ``feed.batches`` (what the node iterates)
yields it. Between two bars the benchmark waits a random time (0.1 to 1.1 s), so a REST poll falls anywhere in
its cycle.

    python bench/live_feed.py [--bars 200] [--rest-bars 60] [--poll-s 2.0]

``--poll-s`` is the REST feed's poll interval (the default of ``feed_poll_seconds``); the websocket feed keeps the
same value for its REST fallback.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.clock import FixedClock  # noqa: E402
from pipeline.domain import Timeframe  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from runtime.feeds import Feed  # noqa: E402
from runtime.feeds.ccxt_feed import CcxtFeed  # noqa: E402
from runtime.feeds.ccxt_ws import CcxtWsFeed  # noqa: E402
from runtime.wiring import ccxt_live_feed  # noqa: E402
from tests.conftest import shared_file  # noqa: E402
from tests.fakes.binance_server import FakeBinance  # noqa: E402
from tests.fakes.binance_stream import FakeBinanceStream  # noqa: E402

KEY, SYMBOL, INTERVAL = "binance:BTC/USDT:1m", "BTC/USDT", "1m"
MINUTE = pd.Timedelta(minutes=1)
WARMUP = 200


def load_bars(count: int) -> pd.DataFrame:
    """``count`` contiguous real minute bars after the warm-up, from 2024-07-29 00:00 UTC."""
    start = pd.Timestamp("2024-07-29", tz="UTC")
    end = start + (count + WARMUP + 10) * MINUTE
    frame = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet"),
                            filters=[("timestamp", ">=", start), ("timestamp", "<", end)]).reset_index(drop=True)
    if frame["timestamp"].diff().max() != MINUTE:
        raise SystemExit("the benchmark's bars are not contiguous")
    return frame


class Delivered:
    """Pulls batches like the node and stamps each delivered bar with the wall time it came."""

    def __init__(self, feed: Feed, after: int) -> None:
        self.feed = feed
        self.at: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, args=(after,), daemon=True)
        self.thread.start()

    def _run(self, after: int) -> None:
        for batch in self.feed.batches({KEY: after}):
            now = time.perf_counter()
            rows = batch.rows.get(KEY)
            if rows is None:
                continue
            for when, row in zip(batch.times, rows, strict=True):
                if row >= 0:
                    self.at[int(when)] = now


def run(kind: str, bars: pd.DataFrame, count: int, poll_s: float, seed: int) -> list[float]:
    """Latencies (ms) of ``count`` bars delivered by the ``kind`` feed (``ws`` or ``rest``)."""
    rng = random.Random(seed)
    start_row = WARMUP + 1
    stamps = bars["timestamp"]
    with FakeBinance() as rest, FakeBinanceStream() as stream, tempfile.TemporaryDirectory() as home:
        rest.serve_bars(SYMBOL, INTERVAL, bars)
        clock = FixedClock(stamps.iloc[start_row] + pd.Timedelta(seconds=30))
        rest.set_now(clock.now())
        settings = Settings(_env_file=None, data_dir=Path(home), ccxt_rest_url=rest.url,  # type: ignore[call-arg]
                            ccxt_ws_url=stream.url)
        options: dict[str, Any] = {"poll_s": poll_s, "warmup": WARMUP, "tick_s": 1.0}
        feed = ccxt_live_feed(settings, "binance", {KEY: SYMBOL}, Timeframe.parse(INTERVAL), kind == "ws", options,
                              clock)  # as the runtime builds its ccxt feed
        assert isinstance(feed, CcxtWsFeed if kind == "ws" else CcxtFeed)
        after = int(stamps.iloc[start_row - 1].value // 1_000_000)
        consumer = Delivered(feed, after)
        if kind == "ws":
            while stream.subscribers(SYMBOL, INTERVAL) == 0:
                time.sleep(0.01)
            stream.open_candle(SYMBOL, INTERVAL, bars.iloc[start_row])
        latencies = []
        try:
            for row in range(start_row, start_row + count):
                time.sleep(0.1 + rng.random())  # the bar is open for a while; a poll falls anywhere in its cycle
                if kind == "ws":
                    stream.update_candle(SYMBOL, INTERVAL, bars.iloc[row])
                opened = int(stamps.iloc[row].value // 1_000_000)
                moment = stamps.iloc[row] + MINUTE + pd.Timedelta(milliseconds=50)
                clock.set(moment)
                rest.set_now(moment)
                closed_at = time.perf_counter()
                if kind == "ws":
                    stream.close_candle(SYMBOL, INTERVAL, bars.iloc[row])
                    stream.open_candle(SYMBOL, INTERVAL, bars.iloc[row + 1])
                while opened not in consumer.at:
                    if time.perf_counter() - closed_at > 60:
                        raise SystemExit(f"{kind}: the bar of row {row} was not delivered within 60 s")
                    time.sleep(0.0005)
                latencies.append((consumer.at[opened] - closed_at) * 1000)
                print(f"\r{kind}: {len(latencies)}/{count} bars", end="", file=sys.stderr, flush=True)
        finally:
            print(file=sys.stderr)
            feed.stop()
            consumer.thread.join(10)
        return latencies


def figures(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies)
    return {"bars": len(values), "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2), "max_ms": round(float(values.max()), 2),
            "mean_ms": round(statistics.fmean(latencies), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=200, help="bars delivered over the websocket")
    parser.add_argument("--rest-bars", type=int, default=60, help="bars delivered by REST polling")
    parser.add_argument("--poll-s", type=float, default=Settings.model_fields["feed_poll_seconds"].default)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    bars = load_bars(max(args.bars, args.rest_bars) + 2)
    result = {
        "workload": f"real BTC/USDT 1m bars closed one at a time at local fakes of Binance (REST and kline stream); "
                    f"REST poll every {args.poll_s:g} s",
        "websocket": figures(run("ws", bars, args.bars, args.poll_s, args.seed)),
        "rest_polling": figures(run("rest", bars, args.rest_bars, args.poll_s, args.seed)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
