"""Kill drill against a venue: the runtime as a subprocess routing orders through the real ccxt client to a
local fake Binance, killed with SIGKILL twenty times and restarted each time. Each kill comes once the state
store shows a random (seeded) number of further bars processed, so the drill kills mid-run, while bars are
processed and orders are in flight, as often on a slow machine as on a fast one.

Afterwards: no order was ever sent twice (every client order id reached the venue in exactly one request),
no fill is lost or duplicated (the stored fills are exactly the venue's trades), the sleeves' units add up to
the venue's balance, and a breaker latched before a kill is still latched (and recorded once).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pandas as pd

from pipeline.state import StateStore
from tests.conftest import REPO, shared_file
from tests.fakes.binance_server import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance
from tests.waiting import ProcessedBars, wait_until

KILLS = 20
FEED = "file:BTC/USDT:1m"

PORTFOLIO = """
cash = 100000

[[strategies]]
id = "capped"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1m"
allocation = 0.3
params = { fast = 3, slow = 8 }
engine = { max_position = 0.5, max_trades_per_day = 4, max_drawdown = 0.9, daily_loss = 0.9 }

[[strategies]]
id = "free"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1m"
allocation = 0.5
params = { fast = 3, slow = 8 }
[strategies.engine]
max_position = 0.5
max_drawdown = 0.9
daily_loss = 0.9
max_consecutive_losses = 1000
max_trades_per_day = 100000
"""


def _start(tmp_path: Path, venue: FakeBinance, data: Path, fresh: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TRADEFORGE_DATA_DIR": str(tmp_path / "data"),
        "TRADEFORGE_CCXT_REST_URL": venue.url,
        "TRADEFORGE_CCXT_API_KEY": DEFAULT_API_KEY,
        "TRADEFORGE_CCXT_API_SECRET": DEFAULT_API_SECRET,
        "TRADEFORGE_LIVE_CONFIRM": "yes",
        "TRADEFORGE_RETRY_BACKOFF_S": "0.05",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    # as fast as it goes, eight bars a transaction: a kill lands while bars are decided, orders are in flight at
    # the venue or the batch is being stored
    command = [sys.executable, "-m", "runtime", "--mode", "live", "--broker", "ccxt", "--feed", "replay",
               "--data", str(data), "--speed", "max", "--batch", "8", "--portfolio", str(tmp_path / "p.toml"),
               "--json", *(["--fresh"] if fresh else [])]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate()


def test_kill_drill_against_the_fake_exchange(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(PORTFOLIO)
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1m.parquet")).iloc[300_000:302_500].reset_index(drop=True)
    data = tmp_path / "bars.parquet"
    bars.to_parquet(data)
    db = tmp_path / "data" / "state" / "tradeforge.db"
    closes = [Decimal(repr(float(c))) for c in bars["close"]]
    stop = threading.Event()

    with FakeBinance(balances={"USDT": Decimal(100_000), "BTC": Decimal(0)}) as venue:
        venue.set_price("BTC/USDT", closes[0])

        def move_the_market() -> None:  # the venue's price walks along the same real closes
            position = 0
            while not stop.wait(0.02):
                position = (position + 1) % len(closes)
                venue.set_price("BTC/USDT", closes[position])

        mover = threading.Thread(target=move_the_market, daemon=True)
        mover.start()
        rng = random.Random(11)
        processed = ProcessedBars(db, FEED, bars["timestamp"])
        # at most half of the bars are spent on kills (each kill at most 2x the mean), the rest end the run
        most = len(bars) // (2 * KILLS)
        process = _start(tmp_path, venue, data, fresh=True)
        try:
            for kill in range(1, KILLS + 1):
                target = processed() + rng.randint(1, most)
                wait_until(processed.reached(target), f"{target} bars processed, for kill {kill} of {KILLS}",
                           process=process)
                _kill(process)
                process = _start(tmp_path, venue, data, fresh=False)  # restores what the killed run saved
            _, err = process.communicate()
        finally:
            stop.set()
            processed.close()
            if process.poll() is None:
                _kill(process)
        assert process.returncode == 0, err.decode()[-3000:]

        posts = Counter(r.params.get("newClientOrderId") for r in venue.requests_to("order", "POST"))
        assert posts, "no order reached the venue"
        assert max(posts.values()) == 1, f"an order was sent twice: {posts.most_common(3)}"

        store = StateStore(f"sqlite:///{db}")
        stored = {f.fill_id: f for f in store.fills()}
        venue_trades = {f"binance:{t.trade_id}": t for t in venue.trades}
        assert set(stored) == set(venue_trades), "a fill was lost or invented"
        for fill_id, trade in venue_trades.items():
            assert (stored[fill_id].qty, stored[fill_id].price) == (trade.qty, trade.price)
        assert len(venue.trades) >= 20

        ledgers = store.ledgers()
        units = sum(float(ledgers[key].units) for key in ("capped:BTC/USDT", "free:BTC/USDT"))
        btc = venue.balances()["BTC"]
        assert abs(units - float(btc.free + btc.locked)) < 1e-9
        assert not store.orders({"new", "partially_filled"}), "an order was left open"

        assert "trades_per_day" in ledgers["capped:BTC/USDT"].tripped.split(",")
        trips = [e for e in store.breaker_events() if e.sleeve == "capped:BTC/USDT" and e.rule == "trades_per_day"]
        assert len(trips) >= 1
        assert len({e.at for e in trips}) == len(trips), "a breaker event was recorded twice"
        recovered = [e.detail for e in store.events("recovery")]
        assert any("reconciled" in d for d in recovered), recovered
        store.close()
