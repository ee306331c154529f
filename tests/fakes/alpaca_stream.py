"""A local stand-in for Alpaca's stock market-data stream (``wss://stream.data.alpaca.markets/v2/iex``).

It speaks the stream's protocol closely enough for alpaca-py's ``StockDataStream``: msgpack frames, each a
list of messages.

* on connect: ``[{"T": "success", "msg": "connected"}]``;
* ``{"action": "auth", "key", "secret"}`` → ``[{"T": "success", "msg": "authenticated"}]``, or
  ``[{"T": "error", "code": 402, "msg": "auth failed"}]`` and the connection closed;
* ``{"action": "subscribe", "bars": [...], ...}`` → ``[{"T": "subscription", "trades": [], "quotes": [],
  "bars": [...], ...}]`` (``"*"`` subscribes to every symbol); ``unsubscribe`` likewise;
* ``publish_bar`` sends ``[{"T": "b", "S", "o", "h", "l", "c", "v", "t", "n", "vw"}]`` to every authenticated
  connection subscribed to the symbol, ``t`` as a msgpack timestamp like Alpaca's.

Tests script trouble with ``drop_connections`` (every connection closed at once, with code 1011),
``refuse_connections`` (new handshakes answered with HTTP 503, or another status such as 429 with an optional
``Retry-After``, until allowed again), ``go_silent`` (connections stay open and subscribed, but no bar reaches
them: the stream Alpaca users see go mute; ``speak`` ends it) and ``limit_connections`` (Alpaca's limit of
authenticated connections per account: a login beyond it is answered ``[{"T": "error", "code": 406, "msg":
"connection limit exceeded"}]`` and the connection closed), ``refuse_logins`` (a login with the right keys
answered with another of Alpaca's error frames, such as 409 "insufficient subscription", and the connection
closed) and ``refuse_subscriptions`` (every subscribe answered with an error frame instead of the subscription:
405 "symbol limit exceeded", 406, 409, 410 "invalid subscribe action for this feed"..., the connection left open
or closed), and read back the ``connections`` accepted, the ``subscriptions`` received (refused ones too), the
handshakes ``refused``, the logins ``limited`` or ``rejected_logins``, the subscriptions ``rejected`` and whether
each connection sent the right keys.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import msgpack
import pandas as pd
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from tests.fakes.local_ws import LocalWsServer
from tests.waiting import wait_until

DEFAULT_API_KEY = "k"
DEFAULT_API_SECRET = "s"
ERRORS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
          404: "auth timeout", 405: "symbol limit exceeded", 406: "connection limit exceeded", 407: "slow client",
          409: "insufficient subscription", 410: "invalid subscribe action for this feed", 500: "internal error"}
"""Alpaca's stream error codes and their texts."""
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
            "cancelErrors")


@dataclass
class _Client:
    connection: ServerConnection
    authenticated: bool = False
    bars: set[str] = field(default_factory=set)
    silent: bool = False


class FakeAlpacaStream(LocalWsServer):
    """Alpaca's stock data stream on 127.0.0.1; start it (or enter it as a context), point alpaca-py at ``url``."""

    thread_name = "fake-alpaca-stream"

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, api_secret: str = DEFAULT_API_SECRET, feed: str = "iex"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.api_secret = api_secret
        self.feed = feed
        self.connections = 0
        """Connections that authenticated."""
        self.refused = 0
        """Handshakes refused while ``refuse_connections`` was on."""
        self.subscriptions: list[dict[str, Any]] = []
        self.bad_auth = 0
        self.limited = 0
        """Logins answered 406 "connection limit exceeded"."""
        self.rejected_logins = 0
        """Logins answered with the error frame of ``refuse_logins``."""
        self.rejected = 0
        """Subscriptions answered with the error frame of ``refuse_subscriptions``."""
        self._clients: list[_Client] = []
        self._refusing = False
        self._refuse_status = HTTPStatus.SERVICE_UNAVAILABLE
        self._retry_after: str | None = None
        self._silent_new = False
        self._limit: int | None = None
        self._ghosts = 0
        self._login_error: int | None = None
        self._subscribe_error: int | None = None
        self._close_on_subscribe_error = False

    @property
    def url(self) -> str:
        """The full websocket URL to give alpaca-py's ``StockDataStream`` as ``url_override``."""
        return f"ws://127.0.0.1:{self.port}/v2/{self.feed}"

    # -- scripting --------------------------------------------------------------------------------------------

    def publish_bar(self, symbol: str, bar: Any) -> int:
        """Send one bar (a row with timestamp, open, high, low, close, volume) to its subscribers; how many."""
        when = pd.Timestamp(bar.timestamp).tz_convert("UTC")
        message = {
            "T": "b",
            "S": symbol,
            "o": float(bar.open),
            "h": float(bar.high),
            "l": float(bar.low),
            "c": float(bar.close),
            "v": float(bar.volume),
            "t": msgpack.Timestamp.from_unix_nano(int(when.value)),
            "n": 1 if float(bar.volume) > 0 else 0,
            "vw": round((float(bar.high) + float(bar.low) + float(bar.close)) / 3, 4),
        }
        return int(self._call(self._publish(symbol, message)))

    def drop_connections(self) -> int:
        """Close every open connection at once (code 1011, as a server fault); how many were closed."""
        return int(self._call(self._drop()))

    def refuse_connections(self, refuse: bool = True, *, status: int = 503, retry_after: float | None = None
                           ) -> None:
        """While on, new handshakes are answered with HTTP ``status`` (503: a venue that is down; 429: too many
        connection attempts), with a ``Retry-After`` header of ``retry_after`` seconds when given."""
        with self._lock:
            self._refusing = refuse
            self._refuse_status = HTTPStatus(status)
            self._retry_after = None if retry_after is None else f"{retry_after:g}"

    def go_silent(self, *, new_connections: bool = False) -> None:
        """Every open connection stays open and subscribed but gets no bar any more; with ``new_connections``,
        so does every connection made from now on (until ``speak``)."""
        with self._lock:
            for client in self._clients:
                client.silent = True
            self._silent_new = new_connections

    def speak(self) -> None:
        """Bars reach every subscribed connection again, and new connections are not silent."""
        with self._lock:
            for client in self._clients:
                client.silent = False
            self._silent_new = False

    def limit_connections(self, limit: int | None = 1, *, unreaped: int = 0) -> None:
        """Allow at most ``limit`` authenticated open connections at once (None: no limit), counting ``unreaped``
        connections the venue still holds for the account (closed on the client's side, not yet reaped, or
        another client's); a login beyond the limit is answered with Alpaca's 406 and the connection closed."""
        with self._lock:
            self._limit = limit
            self._ghosts = unreaped

    def refuse_logins(self, code: int | None = 409) -> None:
        """While ``code`` is set (None: no more), a login with the right keys is answered with Alpaca's error frame
        of ``code`` and the connection closed (Alpaca answers so a feed the account's plan does not include)."""
        with self._lock:
            self._login_error = code

    def refuse_subscriptions(self, code: int | None = 409, *, close: bool = False) -> None:
        """While ``code`` is set (None: no more), every subscribe is answered with Alpaca's error frame of ``code``
        instead of the subscription; the connection stays open (nothing is subscribed) unless ``close``."""
        with self._lock:
            self._subscribe_error = code
            self._close_on_subscribe_error = close

    def subscribers(self, symbol: str) -> int:
        """Authenticated connections subscribed to ``symbol``'s bars now."""
        with self._lock:
            return sum(1 for c in self._clients if c.authenticated and (symbol in c.bars or "*" in c.bars))

    def open_connections(self) -> int:
        """Authenticated connections open now (silent or not)."""
        with self._lock:
            return sum(1 for c in self._clients if c.authenticated and c.connection.state is State.OPEN)

    def wait_for_subscriber(self, symbol: str) -> None:
        """Block until a connection subscribes to ``symbol``'s bars (the suite's per-test timeout ends a wait for
        a subscription that never comes)."""
        wait_until(lambda: self.subscribers(symbol) > 0, f"a stream client subscribed to {symbol} bars")

    # -- the websocket side -----------------------------------------------------------------------------------

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            refusing, status, retry_after = self._refusing, self._refuse_status, self._retry_after
            if refusing:
                self.refused += 1
        if refusing:
            response = connection.respond(status, f"{status.phrase}\n")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
            return response
        if request.path != f"/v2/{self.feed}":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        with self._lock:
            client = _Client(connection, silent=self._silent_new)
            self._clients.append(client)
        try:
            await connection.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
            async for raw in connection:
                message = msgpack.unpackb(raw if isinstance(raw, bytes) else raw.encode())
                await self._handle(client, message)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.remove(client)

    async def _handle(self, client: _Client, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == "auth":
            if message.get("key") == self.api_key and message.get("secret") == self.api_secret:
                with self._lock:
                    held = self._ghosts + sum(1 for c in self._clients
                                              if c.authenticated and c.connection.state is State.OPEN)
                    over = self._limit is not None and held >= self._limit
                    refusal = 406 if over else self._login_error
                    if over:
                        self.limited += 1
                    elif refusal is not None:
                        self.rejected_logins += 1
                    else:
                        client.authenticated = True
                        self.connections += 1
                if refusal is not None:
                    await self._refuse(client, refusal, close=True)
                    return
                await client.connection.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
            else:
                with self._lock:
                    self.bad_auth += 1
                await self._refuse(client, 402, close=True)
            return
        if not client.authenticated:
            await client.connection.send(msgpack.packb([{"T": "error", "code": 401, "msg": "not authenticated"}]))
            return
        if action in ("subscribe", "unsubscribe"):
            symbols = {str(s) for s in message.get("bars", [])}
            with self._lock:
                self.subscriptions.append({k: v for k, v in message.items() if k != "action"} | {"action": action})
                refusal, close = self._subscribe_error, self._close_on_subscribe_error
                if action == "subscribe" and refusal is not None:
                    self.rejected += 1
                else:
                    refusal = None
                    client.bars = client.bars | symbols if action == "subscribe" else client.bars - symbols
                bars = sorted(client.bars)
            if refusal is not None:
                await self._refuse(client, refusal, close=close)
                return
            reply = {"T": "subscription", **{channel: [] for channel in CHANNELS}, "bars": bars}
            await client.connection.send(msgpack.packb([reply]))
            return
        await client.connection.send(msgpack.packb([{"T": "error", "code": 400, "msg": "invalid syntax"}]))

    @staticmethod
    async def _refuse(client: _Client, code: int, *, close: bool) -> None:
        """Answer with Alpaca's error frame of ``code``, then close the connection when ``close``."""
        await client.connection.send(msgpack.packb([{"T": "error", "code": code, "msg": ERRORS[code]}]))
        if close:
            await client.connection.close()

    async def _publish(self, symbol: str, message: dict[str, Any]) -> int:
        with self._lock:
            targets = [c for c in self._clients
                       if c.authenticated and not c.silent and (symbol in c.bars or "*" in c.bars)]
        payload = msgpack.packb([message])
        sent = 0
        for client in targets:
            with contextlib.suppress(ConnectionClosed):
                await client.connection.send(payload)
                sent += 1
        return sent

    async def _drop(self) -> int:
        with self._lock:
            targets = [client.connection for client in self._clients]
        return await self._close_all(targets)
