"""The live sample feed: the built-in sample market delivered bar by bar as the clock passes each close, equal to
what `tradeforge ingest --source sample` stores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.clock import FixedClock
from pipeline.data.sources.sample import SampleSource
from pipeline.domain import Instrument, Timeframe, epoch_ms
from runtime.feeds.sample_feed import SampleFeed

KEY = "sample:BTC/USDT:1m"
M1 = Timeframe.parse("1m")


def test_sample_feed_warms_up_then_delivers_each_bar_once_it_has_closed() -> None:
    clock = FixedClock(pd.Timestamp("2025-03-03 12:00:30", tz="UTC"))
    feed = SampleFeed({KEY: "BTC/USDT"}, M1, clock, seed=7, poll_s=0.01, warmup=120, tick_s=0.02)
    warm = feed.frames[KEY]
    assert len(warm) == 120
    assert warm["timestamp"].iloc[-1] == pd.Timestamp("2025-03-03 11:59", tz="UTC")  # 12:00 is still open

    batches = feed.batches({KEY: int(epoch_ms(warm["timestamp"])[-1])})
    delivered: list[int] = []
    empty = 0
    for minute in (1, 2, 5):  # the clock passes one close, then one more, then three at once
        clock.set(pd.Timestamp("2025-03-03 12:00:30", tz="UTC") + pd.Timedelta(minutes=minute))
        want = minute
        while len(delivered) < want:  # the feed ticks (empty batches) until the clock's closes are delivered
            batch = next(batches)
            if len(batch.times) == 0:
                empty += 1
            delivered += [int(t) for t in batch.times]
    feed.stop()
    stamps = pd.to_datetime(delivered, unit="ms", utc=True)
    assert list(stamps) == list(pd.date_range("2025-03-03 12:00", periods=5, freq="1min", tz="UTC"))
    assert empty > 0  # ticks while waiting

    source = SampleSource(clock, seed=7)
    stored = source.fetch(Instrument.of("sample", "BTC/USDT"), M1, pd.Timestamp("2025-03-03 12:00", tz="UTC"))
    columns = ["open", "high", "low", "close"]
    live = feed.frames[KEY].set_index("timestamp").loc[stamps, columns].to_numpy()
    np.testing.assert_array_equal(live, stored.set_index("timestamp").loc[stamps, columns].to_numpy())
