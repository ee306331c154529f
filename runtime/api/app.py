"""The API application: ``create_app`` builds it from the settings (state URL, lake, token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.clock import Clock, SystemClock
from pipeline.settings import Settings
from runtime.api import control, pusher, reads, websocket
from runtime.api.auth import Gate
from runtime.api.binding import allowed_hosts, allowed_origins, check_exposure
from runtime.api.context import ApiContext
from runtime.api.state import StateAccess

DESCRIPTION = """\
The trading runtime's state (the same the dashboard shows) and its control commands.

* Reads: status, trades, candles, equity, positions, breaker events, commands.
* Control: pause, resume, flatten, reset-breaker, stop: queued for the runtime, which carries each out within one
  loop and acknowledges it (`GET /api/commands/{id}`).
* `/ws`: a websocket pushing `fill`, `breaker` and `heartbeat` messages as the runtime stores them.

With a token configured (`TRADEFORGE_API_TOKEN`) every endpoint needs `Authorization: Bearer <token>`; without
one, reads are served and control commands are refused. Money is an exact decimal string; times are UTC.

Bound to loopback (the default) the API answers only `Host: 127.0.0.1`, `localhost` or its configured host; it
does not start on another address without a token. `/ws` refuses a browser page of another origin than the
API's own or the dashboard's (403).
"""


def create_app(settings: Settings, *, clock: Clock | None = None, poll_s: float = 1.0) -> FastAPI:
    """The API over the state at ``settings.state_url`` and the lake at ``settings.lake_dir``; ``clock`` dates the
    heartbeat's age and ``poll_s`` is how often the websocket looks for new rows.

    Raises :class:`pipeline.domain.DataError` when ``api_url`` binds a non-loopback address and no token is set
    (:mod:`runtime.api.binding`)."""
    check_exposure(settings)
    access = StateAccess(settings.state_url)
    context = ApiContext(settings=settings, access=access, gate=Gate(settings.api_token), clock=clock or SystemClock(),
                         pusher=pusher.Pusher(access, poll_s), origins=allowed_origins(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await context.pusher.start()
        try:
            yield
        finally:
            await context.pusher.stop()
            access.close()

    app = FastAPI(title="tradeforge bot API", description=DESCRIPTION, version="1", lifespan=lifespan)
    app.state.context = context
    hosts = allowed_hosts(settings)
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    app.include_router(reads.router)
    app.include_router(control.router)
    app.include_router(websocket.router)
    return app
