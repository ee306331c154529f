"""What the ``/ws`` websocket pushes (:mod:`runtime.api.websocket`): the runtime's fills, breaker events and
heartbeat, read from the state as JSON messages, and each connection's queue of them.

One poller serves every connection: while at least one client is connected it reads, every ``poll_s``, only
the rows stored after the last ones it saw (fills and breaker events by id, the heartbeat from the bot's row),
at most ``batch`` of each per poll; nothing is re-read. A connection first gets ``hello`` (the heartbeat then);
from then on every fill, breaker event and heartbeat move the runtime stores is pushed, and nothing stored
before its ``hello`` (a client that joins while others are connected starts from what is stored when it joins):

* ``{"type": "fill", "id", "fill_id", "client_order_id", "sleeve", "symbol", "side", "qty", "price", "fee",
  "at", "reason"}``
* ``{"type": "breaker", "id", "sleeve", "at", "rule", "value", "threshold", "action"}``
* ``{"type": "heartbeat", "at", "status", "mode"}``

Fills and breaker events come in the order they happened: by their time ``at``, a fill before a breaker event
of the same time (the loss that trips a breaker is booked first), then in the order stored. When a poll reads a
full ``batch`` of one kind, rows of the other kind later than the last one read wait for the next poll with the
rest, so the order holds across polls too. The heartbeat, when it moved, comes after the rows of its poll: it
says the runtime was alive with everything before it stored (so it waits while a poll leaves rows unread).

Money is an exact decimal string, times ISO 8601 UTC. A client that falls more than ``queue_size`` messages
behind is disconnected (close code 1013) rather than holding the server's memory; a server shutting down
closes every connection (1001). This module knows nothing of the routes: the websocket route hands each
connection a ``Subscriber`` of the application's ``Pusher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

from pipeline.reports import api as queries
from pipeline.state import BreakerEventRow, FillRow
from runtime.api.schemas import BreakerMessage, FillMessage, HeartbeatMessage, HelloMessage
from runtime.api.state import StateAccess

log = logging.getLogger(__name__)
Message = dict[str, Any]
Kind = Literal["fill", "breaker", "heartbeat"]
RANK: Final[dict[Kind, int]] = {"fill": 0, "breaker": 1, "heartbeat": 2}
"""The order of kinds at the same time."""
TOO_SLOW: Final = 1013
GOING_AWAY: Final = 1001


@dataclass(frozen=True)
class Cursor:
    """What has been seen: the last fill and breaker event ids, and the heartbeat."""

    fill_id: int
    breaker_id: int
    heartbeat: datetime | None
    status: str


@dataclass(frozen=True)
class Outgoing:
    """One message and what orders and filters it: its kind, row id (0 for the heartbeat) and time."""

    kind: Kind
    row_id: int
    at: datetime
    message: Message

    @property
    def order(self) -> tuple[datetime, int, int]:
        return self.at, RANK[self.kind], self.row_id


class Subscriber:
    """One connection's queue of messages; ``None`` in it ends the connection with ``code``.

    ``floor`` is what was stored when it joined (its ``hello``): messages of rows up to it are not queued.
    """

    def __init__(self, size: int, floor: Cursor) -> None:
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=size + 1)
        self.size = size
        self.floor = floor
        self.code = GOING_AWAY
        self.reason = "the server is shutting down"
        self.closed = False

    def seen(self, outgoing: Outgoing) -> bool:
        """``outgoing`` was stored before this connection's ``hello``."""
        if outgoing.kind == "fill":
            return outgoing.row_id <= self.floor.fill_id
        if outgoing.kind == "breaker":
            return outgoing.row_id <= self.floor.breaker_id
        return self.floor.heartbeat is not None and outgoing.at <= self.floor.heartbeat

    def offer(self, outgoing: Outgoing) -> None:
        if self.closed or self.seen(outgoing):
            return
        if self.queue.qsize() >= self.size:
            self.close(TOO_SLOW, "too slow: messages were dropped; reconnect")
            return
        self.queue.put_nowait(outgoing.message)

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed, self.code, self.reason = True, code, reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


_Row = TypeVar("_Row", FillRow, BreakerEventRow)


def _up_to(rows: Sequence[_Row], kind: Kind, horizon: tuple[datetime, int]) -> list[_Row]:
    """The rows (in the order stored) before the first one later than ``horizon`` (time, kind rank)."""
    kept = []
    for row in rows:
        if (row.at, RANK[kind]) > horizon:
            break
        kept.append(row)
    return kept


def in_time_order(fills: Sequence[FillRow], breakers: Sequence[BreakerEventRow],
                  batch: int) -> tuple[list[FillRow], list[BreakerEventRow]]:
    """The fills and breaker events of one poll that may be pushed now.

    A kind that filled its ``batch`` may have more rows stored, not read yet: rows of any kind later than its
    last one read are held back for the next poll. The kind whose last row is the earliest keeps every row read,
    so each poll makes progress.
    """
    horizons = []
    if len(fills) >= batch:
        horizons.append(max((row.at, RANK["fill"]) for row in fills))
    if len(breakers) >= batch:
        horizons.append(max((row.at, RANK["breaker"]) for row in breakers))
    if not horizons:
        return list(fills), list(breakers)
    horizon = min(horizons)
    return _up_to(fills, "fill", horizon), _up_to(breakers, "breaker", horizon)


class Pusher:
    """Polls the state for new rows while clients are connected, and hands each new row to every one of them."""

    def __init__(self, access: StateAccess, poll_s: float = 1.0, batch: int = 500, queue_size: int = 10_000) -> None:
        if poll_s <= 0:
            raise ValueError(f"poll_s must be positive, got {poll_s}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
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
        """A new connection's queue: every row stored after this call reaches it, none stored before."""
        async with self._lock:
            floor = await asyncio.to_thread(self._baseline)
            if self._cursor is None:  # the first client: the poller starts from here
                self._cursor = floor
            subscriber = Subscriber(self.queue_size, floor)
            self._subscribers.add(subscriber)
        self._wake.set()
        return subscriber, HelloMessage(heartbeat_at=floor.heartbeat, status=floor.status)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def poll(self) -> None:
        """Read the rows stored since the last poll and hand them, in order, to every connection."""
        async with self._lock:
            if self._cursor is None:
                return
            messages, self._cursor = await asyncio.to_thread(self._read, self._cursor)
            for message in messages:
                for subscriber in list(self._subscribers):
                    subscriber.offer(message)

    async def _run(self) -> None:
        while True:
            if not self._subscribers:
                self._wake.clear()
                self._cursor = None  # the next first client starts from what is stored then
                await self._wake.wait()
                continue
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll()
            except Exception as exc:  # a state that cannot be read now may be readable at the next poll
                log.warning("the websocket pusher could not read the state: %s", type(exc).__name__)

    def _baseline(self) -> Cursor:
        store = self.access.reader()
        if store is None:
            return Cursor(0, 0, None, "no runtime state")
        fill_id, breaker_id = queries.last_ids(store)
        state = store.bot_state()
        return Cursor(fill_id, breaker_id, None if state is None else state.heartbeat_at,
                      "no runtime state" if state is None else state.status)

    def _read(self, cursor: Cursor) -> tuple[list[Outgoing], Cursor]:
        store = self.access.reader()
        if store is None:
            return [], cursor
        read_fills = queries.fills_after(store, cursor.fill_id, self.batch)
        read_breakers = queries.breaker_events_after(store, cursor.breaker_id, self.batch)
        caught_up = len(read_fills) < self.batch and len(read_breakers) < self.batch
        fills, breakers = in_time_order(read_fills, read_breakers, self.batch)
        state = store.bot_state()
        rows = [Outgoing("fill", row.id or 0, row.at, FillMessage.of(row).model_dump(mode="json")) for row in fills]
        rows += [Outgoing("breaker", row.id or 0, row.at, BreakerMessage.of(row).model_dump(mode="json"))
                 for row in breakers]
        rows.sort(key=lambda outgoing: outgoing.order)
        if fills:
            cursor = replace(cursor, fill_id=max(row.id or 0 for row in fills))
        if breakers:
            cursor = replace(cursor, breaker_id=max(row.id or 0 for row in breakers))
        if (caught_up and state is not None and state.heartbeat_at is not None
                and state.heartbeat_at != cursor.heartbeat):
            beat = HeartbeatMessage.of(state).model_dump(mode="json")
            rows.append(Outgoing("heartbeat", 0, state.heartbeat_at, beat))
            cursor = replace(cursor, heartbeat=state.heartbeat_at, status=state.status)
        return rows, cursor
