"""What a websocket has said about each series' candles, and which of them are closed (``CandleCache``).

A stream sends a candle many times while it is open (each update the whole candle so far) and does not always
say when it closed (ccxt drops Binance's ``x`` flag). A candle is taken as closed once a later candle of the same
series has started on the same connection: the venue only starts the next one after the last update of the
previous one. Connections are numbered (``epoch``); after a reconnect the candle that was open when the old
connection went down is not trusted (its last update may not be its last), until the new connection sends it
again or a REST answer replaces it.

Updates may come twice or out of order. Within one connection, of two updates of the same candle the one with
more volume is the later one (a candle's volume only grows while it is open), so an old update arriving late
never replaces a newer one. A candle at or before the last one forgotten (delivered, or settled by REST) is not
news: the stream's own cache repeats recent candles long after they were handed over. Everything here is
guarded by one lock: the stream's thread writes, the feed's worker reads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pipeline.data.sources.ccxt_source import Candle


class CandleCache:
    """Candles per series key as the stream last gave them, each with the connection it came on."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._candles: dict[str, dict[int, tuple[Candle, int]]] = {key: {} for key in keys}
        self._newest: dict[str, dict[int, int]] = {key: {} for key in self._candles}
        """Per key, the newest candle open time each connection has sent."""
        self._through: dict[str, int] = {key: -1 for key in self._candles}
        """Per key, the open time of the last candle forgotten: older ones are settled."""
        self.epoch = 0
        """The number of the connection open now (0: none yet)."""

    def connected(self) -> int:
        """A new connection begins; returns its number."""
        with self._lock:
            self.epoch += 1
            return self.epoch

    def note(self, key: str, candles: Iterable[Candle], epoch: int) -> bool:
        """Candles of ``key`` as connection ``epoch`` sent them (any order, repeats allowed); whether any of them
        was news (a candle, or values, not held before)."""
        news = False
        with self._lock:
            stored = self._candles[key]
            newest = self._newest[key]
            for candle in candles:
                opened = candle[0]
                if opened <= self._through[key]:  # delivered or settled already: nothing new
                    continue
                if opened > newest.get(epoch, -1):
                    newest[epoch] = opened
                held = stored.get(opened)
                if held is None or held[1] < epoch or (held[1] == epoch and candle[5] >= held[0][5]):
                    news = news or held is None or held != (candle, epoch)
                    stored[opened] = (candle, epoch)
        return news

    def closed_after(self, key: str, after_ms: int) -> list[Candle]:
        """The candles of ``key`` opened after ``after_ms`` that are closed (a later candle started on the same
        connection), oldest first."""
        with self._lock:
            newest = self._newest[key]
            return [candle for opened, (candle, epoch) in sorted(self._candles[key].items())
                    if opened > after_ms and newest.get(epoch, -1) > opened]

    def forget_through(self, key: str, ms: int) -> None:
        """Drop the candles of ``key`` opened at or before ``ms`` (delivered, or settled by REST)."""
        with self._lock:
            self._through[key] = max(self._through[key], ms)
            stored = self._candles[key]
            for opened in [opened for opened in stored if opened <= ms]:
                del stored[opened]
            live = {epoch for _, epoch in stored.values()} | {self.epoch}
            newest = self._newest[key]
            for epoch in [epoch for epoch in newest if epoch not in live]:
                del newest[epoch]

    def latest(self, key: str, opened: int) -> Candle | None:
        """The candle of ``key`` opened at ``opened`` as last kept (None when none is held)."""
        with self._lock:
            held = self._candles[key].get(opened)
            return None if held is None else held[0]

    def size(self, key: str) -> int:
        """How many candles of ``key`` are held (bounded: delivered ones are forgotten)."""
        with self._lock:
            return len(self._candles[key])
