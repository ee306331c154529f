"""A live feed of the built-in sample market: synthetic bars delivered as they close on the wall clock.

The sample market (``pipeline.data.sources.sample``) is deterministic per day, so the bar a symbol shows at 12:34
is the same whenever it is generated: this feed behaves like a venue that never fails, which makes it the
runtime's feed for demos (``tradeforge up``) and for paper trading without keys or network. Its bars are
those ``tradeforge ingest --source sample`` stores under the venue ``sample``.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import pandas as pd

from pipeline.clock import Clock
from pipeline.data.sources.sample import SampleSource
from pipeline.domain import SAMPLE_VENUE, AssetClass, Instrument, Timeframe, empty_bars, epoch_ms
from runtime.feeds.base import LiveFeed, Monotonic, Sleep
from runtime.feeds.frames import floor_ms


class SampleFeed(LiveFeed):
    """Closed sample bars of ``symbols_by_key`` (feed key → symbol) as the clock passes their close."""

    venue = SAMPLE_VENUE

    def __init__(
        self,
        symbols_by_key: dict[str, str],
        timeframe: Timeframe,
        clock: Clock,
        seed: int,
        poll_s: float = 1.0,
        warmup: int = 1000,
        *,
        tick_s: float = 1.0,
        sleep: Sleep | None = None,
        max_rows: int | None = None,
        monotonic: Monotonic = time.monotonic,
        series: Collection[str] = (),
    ) -> None:
        super().__init__(
            list(symbols_by_key), timeframe, clock, poll_s=poll_s, warmup=warmup, tick_s=tick_s, backoff_cap_s=30.0,
            sleep=sleep, max_rows=max_rows, warmup_attempts=1, monotonic=monotonic, series=series,
        )
        self.source = SampleSource(clock, seed)
        self.instruments: dict[str, Instrument] = {
            key: self.source.instrument(symbol) for key, symbol in symbols_by_key.items()
        }
        self._warm_up()

    def _warm_up_start(self, key: str, now: int) -> int:
        step = self.timeframe_of(key).millis
        # stocks trade about a quarter of the day: reach back far enough to find ``warmup`` bars in session
        reach = 5 if self.instruments[key].asset_class is AssetClass.STOCK else 1
        return floor_ms(now, step) - reach * self.warmup * step

    def _fetch(self, key: str, start_ms: int, end_ms: int) -> pd.DataFrame:
        since = pd.Timestamp(max(start_ms, 0), unit="ms", tz="UTC")
        bars = self.source.fetch(self.instruments[key], self.timeframe_of(key), since)
        if bars.empty:
            return empty_bars()
        return bars.loc[epoch_ms(bars["timestamp"]) < end_ms].reset_index(drop=True)
