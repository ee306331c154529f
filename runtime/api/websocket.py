"""The ``/ws`` route: a connection is checked (origin, then token), greeted with ``hello`` and then pushed every
fill, breaker event and heartbeat the runtime stores (:mod:`runtime.api.pusher` says what and in which order).

A browser page of a foreign origin is refused (403, :mod:`runtime.api.binding`), so is a missing or wrong token
(401); where the server cannot answer a handshake with HTTP, the connection is closed with 1008 instead. Clients
send nothing: what they send is read only to notice when they leave.
"""

from __future__ import annotations

import asyncio
from typing import Final

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from runtime.api.auth import REFUSED
from runtime.api.binding import origin_allowed
from runtime.api.context import context_of
from runtime.api.pusher import Subscriber

POLICY: Final = 1008
FOREIGN_ORIGIN: Final = ("this origin may not open the API's websocket: only pages of the API itself or of the "
                         "dashboard (dashboard_url) may")

router = APIRouter()


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """Push fills, breaker events and heartbeats (see the module documentation)."""
    context = context_of(websocket)
    if not origin_allowed(websocket.headers.get("origin"), context.origins):
        await _deny(websocket, 403, FOREIGN_ORIGIN, "foreign origin")
        return
    if not context.gate.may_read(context.gate.connection_token(websocket)):
        await _deny(websocket, 401, REFUSED, "missing or wrong API token", {"WWW-Authenticate": "Bearer"})
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


async def _deny(websocket: WebSocket, status_code: int, detail: str, reason: str,
                headers: dict[str, str] | None = None) -> None:
    """Refuse the handshake: ``status_code`` where the server can answer it with HTTP, else close with 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status_code=status_code,
                                                          headers=headers))
    else:
        await websocket.close(code=POLICY, reason=reason)


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
