"""A local stand-in for Binance's spot market streams (``wss://stream.binance.com:9443/ws``): the kline streams.

It speaks the raw-stream protocol closely enough for ccxt.pro's ``binance.watch_ohlcv``:

* a client connects to ``/ws`` or ``/ws/<n>`` (ccxt appends a stream number) and sends
  ``{"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", ...], "id": N}``, answered ``{"result": null, "id": N}``;
  ``UNSUBSCRIBE`` likewise; any other method gets Binance's ``{"error": {"code": 2, "msg": ...}, "id": N}``;
* ``kline`` sends a kline event (``{"e": "kline", "E", "s", "k": {"t", "T", "s", "i", "o", "c", "h", "l", "v",
  "x", ...}}``, prices and amounts as strings, as Binance writes them) to every connection subscribed to that
  stream.

Candles are scripted as Binance sends them: ``open_candle`` sends a candle's first update (only its open trade),
``update_candle`` a later one with part of the bar, ``close_candle`` the final update (``"x": true``) with the
whole bar. Tests script trouble with ``drop_connections`` (every connection closed at once, code 1011, as a server
fault), ``refuse_connections`` (new handshakes answered with HTTP 503, or 429 with a ``Retry-After``) and simply
by sending nothing (a silent stream); they read back the ``connections`` accepted and the ``subscriptions``
received.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pandas as pd
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.fakes.binance_market import INTERVAL_MS, price_text
from tests.fakes.local_ws import LocalWsServer
from tests.waiting import wait_until


@dataclass
class _Client:
    connection: ServerConnection
    streams: set[str] = field(default_factory=set)


def stream_name(symbol: str, interval: str) -> str:
    """Binance's name of a kline stream: ``btcusdt@kline_1m`` for ``BTC/USDT`` and ``1m``."""
    return f"{symbol.replace('/', '').lower()}@kline_{interval}"


def _text(value: float) -> str:
    return price_text(float(value))


class FakeBinanceStream(LocalWsServer):
    """Binance's kline streams on 127.0.0.1; start it (or enter it as a context), point ccxt.pro at ``url``."""

    thread_name = "fake-binance-stream"

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        """Connections accepted (each reconnect adds one)."""
        self.refused = 0
        """Handshakes refused while ``refuse_connections`` was on."""
        self.subscriptions: list[tuple[int, str]] = []
        """Every stream subscribed, with the number of the connection that asked."""
        self.messages_sent = 0
        self.sent: list[tuple[str, int, tuple[float, ...]]] = []
        """Every kline sent: the stream, the candle's open time (epoch ms) and its values as a client reads them."""
        self._clients: list[_Client] = []
        self._refusing: tuple[int, float | None] | None = None

    @property
    def url(self) -> str:
        """The websocket base URL to give ccxt.pro (``urls['api']['ws']['spot']``)."""
        return f"ws://127.0.0.1:{self.port}/ws"

    # -- scripting --------------------------------------------------------------------------------------------

    def open_candle(self, symbol: str, interval: str, bar: Any) -> int:
        """The first update of ``bar``'s candle: only its open trade (open = high = low = close, a sliver of volume)."""
        first = float(bar.open)
        return self.kline(symbol, interval, bar.timestamp, (first, first, first, first, float(bar.volume) / 10),
                          closed=False)

    def update_candle(self, symbol: str, interval: str, bar: Any) -> int:
        """An update of ``bar``'s candle while it is open: part of its range and half of its volume."""
        o, c = float(bar.open), float(bar.close)
        return self.kline(symbol, interval, bar.timestamp, (o, max(o, c), min(o, c), c, float(bar.volume) / 2),
                          closed=False)

    def update_then_drop(self, symbol: str, interval: str, bar: Any) -> int:
        """``update_candle``, and every connection closed right behind it (the two frames back to back, so the
        client reads the close before it can ask for the next update)."""
        o, c = float(bar.open), float(bar.close)
        return self.kline(symbol, interval, bar.timestamp, (o, max(o, c), min(o, c), c, float(bar.volume) / 2),
                          closed=False, drop=True)

    def close_candle(self, symbol: str, interval: str, bar: Any) -> int:
        """The final update of ``bar``'s candle (``"x": true``): the whole bar."""
        values = (float(bar.open), float(bar.high), float(bar.low), float(bar.close), float(bar.volume))
        return self.kline(symbol, interval, bar.timestamp, values, closed=True)

    def kline(self, symbol: str, interval: str, opened: pd.Timestamp, values: tuple[float, ...], *,
              closed: bool, drop: bool = False) -> int:
        """Send one kline event with ``values`` (open, high, low, close, volume), and with ``drop`` close every
        connection at once after it; how many connections got it."""
        start = int(pd.Timestamp(opened).value // 1_000_000)
        market = symbol.replace("/", "")
        o, h, low, c, v = values
        event = {
            "e": "kline", "E": start + INTERVAL_MS[interval] - 1 if closed else start + 1, "s": market,
            "k": {"t": start, "T": start + INTERVAL_MS[interval] - 1, "s": market, "i": interval, "f": 1, "L": 2,
                  "o": _text(o), "c": _text(c), "h": _text(h), "l": _text(low), "v": _text(v), "n": 2,
                  "x": closed, "q": f"{v * c:.8f}", "V": "0.00000000", "Q": "0.00000000", "B": "0"},
        }
        with self._lock:
            self.sent.append((stream_name(symbol, interval), start, tuple(float(_text(x)) for x in values)))
        return int(self._call(self._publish(stream_name(symbol, interval), json.dumps(event), drop=drop)))

    def drop_connections(self) -> int:
        """Close every open connection at once (code 1011, as a server fault); how many were closed."""
        return int(self._call(self._drop()))

    def refuse_connections(self, refuse: bool = True, *, status: int = 503, retry_after: float | None = None) -> None:
        """While on, new handshakes are answered with HTTP ``status`` (and ``Retry-After`` when given)."""
        with self._lock:
            self._refusing = (status, retry_after) if refuse else None

    def subscribers(self, symbol: str, interval: str) -> int:
        """Open connections subscribed to the kline stream of ``symbol`` and ``interval`` now."""
        name = stream_name(symbol, interval)
        with self._lock:
            return sum(1 for c in self._clients if name in c.streams)

    def wait_for_subscriber(self, symbol: str, interval: str, connections: int = 1) -> None:
        """Block until the ``connections``-th connection (counting every one accepted) subscribes to the stream."""
        name = stream_name(symbol, interval)

        def subscribed() -> bool:
            with self._lock:
                asked = any(number >= connections and stream == name for number, stream in self.subscriptions)
                return asked and any(name in c.streams for c in self._clients)

        wait_until(subscribed, f"connection {connections} subscribed to {name}")

    # -- the websocket side -----------------------------------------------------------------------------------

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            refusing = self._refusing
            if refusing is not None:
                self.refused += 1
        if refusing is not None:
            status, retry_after = refusing
            response = connection.respond(HTTPStatus(status), "refused\n")
            if retry_after is not None:
                response.headers = Headers(response.headers)
                response.headers["Retry-After"] = str(retry_after)
            return response
        if request.path != "/ws" and not request.path.startswith("/ws/"):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        client = _Client(connection)
        with self._lock:
            self.connections += 1
            number = self.connections
            self._clients.append(client)
        try:
            async for raw in connection:
                await self._handle(client, number, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.remove(client)

    async def _handle(self, client: _Client, number: int, message: dict[str, Any]) -> None:
        method, ident = message.get("method"), message.get("id")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            names = {str(name) for name in message.get("params", [])}
            with self._lock:
                if method == "SUBSCRIBE":
                    client.streams |= names
                    self.subscriptions += [(number, name) for name in sorted(names)]
                else:
                    client.streams -= names
            await client.connection.send(json.dumps({"result": None, "id": ident}))
            return
        await client.connection.send(json.dumps({"error": {"code": 2, "msg": f"Invalid request: {method}"},
                                                 "id": ident}))

    async def _publish(self, name: str, payload: str, drop: bool = False) -> int:
        with self._lock:
            targets = [c for c in self._clients if name in c.streams]
        sent = 0
        for client in targets:
            with contextlib.suppress(ConnectionClosed):
                await client.connection.send(payload)
                sent += 1
        with self._lock:
            self.messages_sent += sent
        if drop:
            await self._drop()
        return sent

    async def _drop(self) -> int:
        with self._lock:
            targets = [client.connection for client in self._clients]
        return await self._close_all(targets)
