"""What every local fake websocket server shares: its own asyncio loop in a daemon thread, a ``websockets`` server
on 127.0.0.1 at a free port, and calls into that loop from the test's thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


class LocalWsServer:
    """Start (or enter as a context) to serve ``_serve`` (each connection) behind ``_gate`` (each handshake);
    ``close`` shuts it down. ``port`` is known once started."""

    thread_name = "fake-ws-server"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.thread_name, daemon=True)
        self.port = 0

    def start(self) -> Self:
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                self._call(self._server.wait_closed(), timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()  # its self-pipe sockets go with it

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Any, timeout: float = 10.0) -> Any:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _listen(self) -> Server:
        server = await serve(self._serve, "127.0.0.1", 0, process_request=self._gate, compression=None)
        self.port = int(next(iter(server.sockets)).getsockname()[1])
        return server

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer a handshake instead of accepting it (None accepts it)."""
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        raise NotImplementedError

    async def _close_all(self, connections: list[ServerConnection]) -> int:
        """Close ``connections`` at once with code 1011, as a server fault; how many."""
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close(code=1011, reason="server fault")
        return len(connections)
