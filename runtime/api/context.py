"""What every route of the API shares: the settings, the state, the token gate, the clock, the pusher and the
origins the websocket accepts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from pipeline.clock import Clock
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.api.auth import Gate
from runtime.api.pusher import Pusher
from runtime.api.state import StateAccess


@dataclass
class ApiContext:
    settings: Settings
    access: StateAccess
    gate: Gate
    clock: Clock
    pusher: Pusher
    origins: frozenset[str]
    """The ``Origin`` values the websocket accepts (:func:`runtime.api.binding.allowed_origins`)."""

    def store(self) -> StateStore | None:
        """The read-only state store, None while the runtime has not created its state."""
        return self.access.reader()

    def now(self) -> datetime:
        return self.clock.now().to_pydatetime()


def context_of(connection: HTTPConnection) -> ApiContext:
    context = connection.app.state.context
    if not isinstance(context, ApiContext):
        raise TypeError(f"the application's state holds no ApiContext but {type(context).__name__}: build it with "
                        "runtime.api.app.create_app")
    return context


Context = Annotated[ApiContext, Depends(context_of)]
