"""The ``/ws`` websocket: the runtime's fills, breaker events and heartbeat, pushed as JSON messages.

One poller serves every connection: while at least one client is connected it reads, every ``poll_s``, only
the rows stored after the last ones it saw (fills and breaker events by id, the heartbeat from the bot's row),
at most ``batch`` of each per poll; nothing is re-read. A connection first gets ``hello`` (the heartbeat then);
from then on every fill, breaker event and heartbeat move the runtime stores is pushed, in the order stored:

* ``{"type": "fill", "id", "fill_id", "client_order_id", "sleeve", "symbol", "side", "qty", "price", "fee",
  "at", "reason"}``
* ``{"type": "breaker", "id", "sleeve", "at", "rule", "value", "threshold", "action"}``
* ``{"type": "heartbeat", "at", "status", "mode"}``

Money is an exact decimal string, times ISO 8601 UTC. A client that falls more than ``queue_size`` messages
behind is disconnected (close code 1013) rather than holding the server's memory; a server shutting down
closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from pipeline.reports import api as queries
from runtime.api.auth import REFUSED
from runtime.api.context import context_of
from runtime.api.schemas import BreakerMessage, FillMessage, HeartbeatMessage, HelloMessage
from runtime.api.state import StateAccess

log = logging.getLogger(__name__)
Message = dict[str, Any]
TOO_SLOW: Final = 1013
GOING_AWAY: Final = 1001
POLICY: Final = 1008


@dataclass(frozen=True)
class Cursor:
    """What the poller has seen: the last fill and breaker event ids, and the heartbeat."""

    fill_id: int
    breaker_id: int
    heartbeat: datetime | None
    status: str


class Subscriber:
    """One connection's queue of messages; ``None`` in it ends the connection with ``code``."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=size + 1)
        self.size = size
        self.code = GOING_AWAY
        self.reason = "the server is shutting down"
        self.closed = False

    def offer(self, message: Message) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.size:
            self.close(TOO_SLOW, "too slow: messages were dropped; reconnect")
            return
        self.queue.put_nowait(message)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed, self.code, self.reason = True, code, reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Pusher:
    """Polls the state for new rows while clients are connected, and hands each new row to every one of them."""

    def __init__(self, access: StateAccess, poll_s: float = 1.0, batch: int = 500, queue_size: int = 10_000) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        self.access = access
        self.poll_s = poll_s
        self.batch = batch
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self._cursor: Cursor | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ws pusher")

    async def stop(self) -> None:
        """Stop polling and close every connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for subscriber in list(self._subscribers):
            subscriber.close(GOING_AWAY, "the server is shutting down")

    async def subscribe(self) -> tuple[Subscriber, HelloMessage]:
        """A new connection's queue: every row stored after this call reaches it."""
        async with self._lock:
            if self._cursor is None:
                self._cursor = await asyncio.to_thread(self._baseline)
            subscriber = Subscriber(self.queue_size)
            self._subscribers.add(subscriber)
            hello = HelloMessage(heartbeat_at=self._cursor.heartbeat, status=self._cursor.status)
        self._wake.set()
        return subscriber, hello

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def _run(self) -> None:
        while True:
            if not self._subscribers:
                self._wake.clear()
                self._cursor = None  # the next first client starts from what is stored then
                await self._wake.wait()
                continue
            await asyncio.sleep(self.poll_s)
            try:
                async with self._lock:
                    if self._cursor is None:
                        continue
                    messages, self._cursor = await asyncio.to_thread(self._poll, self._cursor)
            except Exception as exc:  # a state that cannot be read now may be readable at the next poll
                log.warning("the websocket pusher could not read the state: %s", type(exc).__name__)
                continue
            for message in messages:
                for subscriber in list(self._subscribers):
                    subscriber.offer(message)

    def _baseline(self) -> Cursor:
        store = self.access.reader()
        if store is None:
            return Cursor(0, 0, None, "no runtime state")
        fill_id, breaker_id = queries.last_ids(store)
        state = store.bot_state()
        return Cursor(fill_id, breaker_id, None if state is None else state.heartbeat_at,
                      "no runtime state" if state is None else state.status)

    def _poll(self, cursor: Cursor) -> tuple[list[Message], Cursor]:
        store = self.access.reader()
        if store is None:
            return [], cursor
        fills = queries.fills_after(store, cursor.fill_id, self.batch)
        breakers = queries.breaker_events_after(store, cursor.breaker_id, self.batch)
        state = store.bot_state()
        messages: list[Message] = [FillMessage.of(row).model_dump(mode="json") for row in fills]
        messages += [BreakerMessage.of(row).model_dump(mode="json") for row in breakers]
        if fills:
            cursor = replace(cursor, fill_id=max(row.id or 0 for row in fills))
        if breakers:
            cursor = replace(cursor, breaker_id=max(row.id or 0 for row in breakers))
        if state is not None and state.heartbeat_at is not None and state.heartbeat_at != cursor.heartbeat:
            messages.append(HeartbeatMessage.of(state).model_dump(mode="json"))
            cursor = replace(cursor, heartbeat=state.heartbeat_at, status=state.status)
        return messages, cursor


router = APIRouter()


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """Push fills, breaker events and heartbeats (see the module documentation)."""
    context = context_of(websocket)
    if not context.gate.may_read(context.gate.connection_token(websocket)):
        await _deny(websocket)
        return
    subscriber, hello = await context.pusher.subscribe()
    try:
        await websocket.accept()
        await websocket.send_json(hello.model_dump(mode="json"))
        await _pump(websocket, subscriber)
    except WebSocketDisconnect:
        pass
    finally:
        context.pusher.unsubscribe(subscriber)


async def _deny(websocket: WebSocket) -> None:
    """Refuse the handshake: 401 where the server can answer it with HTTP, else close with 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": REFUSED}, status_code=401,
                                                          headers={"WWW-Authenticate": "Bearer"}))
    else:
        await websocket.close(code=POLICY, reason="missing or wrong API token")


async def _pump(websocket: WebSocket, subscriber: Subscriber) -> None:
    """Send the subscriber's messages until the client leaves or the queue ends the connection."""

    async def listen() -> None:  # clients send nothing: this only notices when one leaves
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def push() -> None:
        while (message := await subscriber.queue.get()) is not None:
            await websocket.send_json(message)
        await websocket.close(code=subscriber.code, reason=subscriber.reason)

    tasks = [asyncio.create_task(listen()), asyncio.create_task(push())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect | OSError | RuntimeError):
            raise result
