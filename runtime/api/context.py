"""What every route of the API shares: the settings, the state, the token gate, the clock and the pusher."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from pipeline.clock import Clock
from pipeline.settings import Settings
from pipeline.state import StateStore
from runtime.api.auth import Gate
from runtime.api.state import StateAccess

if TYPE_CHECKING:
    from runtime.api.pusher import Pusher


@dataclass
class ApiContext:
    settings: Settings
    access: StateAccess
    gate: Gate
    clock: Clock
    pusher: Pusher

    def store(self) -> StateStore | None:
        """The read-only state store, None while the runtime has not created its state."""
        return self.access.reader()

    def now(self) -> datetime:
        return self.clock.now().to_pydatetime()


def context_of(connection: HTTPConnection) -> ApiContext:
    context = connection.app.state.context
    assert isinstance(context, ApiContext)
    return context


Context = Annotated[ApiContext, Depends(context_of)]
