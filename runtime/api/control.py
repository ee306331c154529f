"""The control endpoints: pause, resume, flatten, reset-breaker and stop, and the commands' acknowledgements.

A command is queued in the state store exactly as the dashboard, Telegram and ``tradeforge runtime ctl`` queue
it (``StateStore.add_command``); the runtime carries it out within one loop and acknowledges it with what it did,
which ``GET /api/commands/{id}`` shows. Commands need the API token (``runtime.api.auth``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, status

from pipeline.reports import api as queries
from runtime.api import schemas
from runtime.api.auth import operator, reader
from runtime.api.context import ApiContext, Context
from runtime.api.sleeves import check_sleeve
from runtime.api.state import NoState

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": schemas.Problem, "description": "The sleeve is not one the runtime trades."},
    401: {"model": schemas.Problem, "description": "Missing or wrong token."},
    403: {"model": schemas.Problem, "description": "No token is configured: control commands are refused."},
    409: {"model": schemas.Problem, "description": "The runtime has not created its state yet."},
}
ACCEPTED: Final = ("Queued: the runtime carries it out within one loop; GET /api/commands/{id} shows its "
                   "acknowledgement.")

router = APIRouter(prefix="/api", tags=["control"])
SleeveBody = Annotated[schemas.SleeveChoice | None, Body()]


def _queue(context: ApiContext, command: str, sleeve: str | None) -> schemas.Command:
    check_sleeve(context.store(), sleeve, portfolio=False, omitted="or omit it for every sleeve")
    try:
        number = context.access.queue(command, sleeve)
    except NoState as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    reread = context.store()
    row = None if reread is None else queries.command(reread, number)
    if row is None:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            f"command {number} was queued but cannot be read back from the state yet; "
                            f"GET /api/commands/{number} shows it and its acknowledgement")
    return schemas.Command.of(row)


def _sleeve(body: schemas.SleeveChoice | None) -> str | None:
    return None if body is None else body.sleeve


@router.post("/pause", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(operator)], responses=_ERRORS,
             summary="Pause new entries (of one sleeve, or every sleeve)", response_description=ACCEPTED)
def pause(context: Context, body: SleeveBody = None) -> schemas.Command:
    return _queue(context, "pause", _sleeve(body))


@router.post("/resume", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(operator)], responses=_ERRORS,
             summary="Allow new entries again (of one sleeve, or every sleeve)", response_description=ACCEPTED)
def resume(context: Context, body: SleeveBody = None) -> schemas.Command:
    return _queue(context, "resume", _sleeve(body))


@router.post("/flatten", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(operator)], responses=_ERRORS,
             summary="Close the open positions at the next fill (of one sleeve, or every sleeve)",
             response_description=ACCEPTED)
def flatten(context: Context, body: SleeveBody = None) -> schemas.Command:
    return _queue(context, "flatten", _sleeve(body))


@router.post("/reset-breaker", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(operator)],
             responses=_ERRORS, summary="Release the latched breakers (of one sleeve, or every sleeve and the "
                                        "portfolio)", response_description=ACCEPTED)
def reset_breaker(context: Context, body: SleeveBody = None) -> schemas.Command:
    return _queue(context, "reset_breaker", _sleeve(body))


@router.post("/stop", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(operator)], responses=_ERRORS,
             summary="Stop the runtime after the batch in flight", response_description=ACCEPTED)
def stop(context: Context) -> schemas.Command:
    return _queue(context, "stop", None)


@router.get("/commands/{command_id}", dependencies=[Depends(reader)], summary="One command and its acknowledgement",
            responses={404: {"model": schemas.Problem, "description": "No command has this id."},
                       401: {"model": schemas.Problem, "description": "Missing or wrong token."}})
def get_command(context: Context, command_id: Annotated[int, Path(ge=1)]) -> schemas.Command:
    store = context.store()
    row = None if store is None else queries.command(store, command_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"command_id: no control command has the id {command_id}")
    return schemas.Command.of(row)


@router.get("/commands", dependencies=[Depends(reader)], summary="The last control commands, newest first",
            responses={401: {"model": schemas.Problem, "description": "Missing or wrong token."}})
def get_commands(context: Context,
                 limit: Annotated[int, Query(ge=1, le=1000, description="How many at most (1 to 1000).")] = 20,
                 ) -> list[schemas.Command]:
    store = context.store()
    return [] if store is None else [schemas.Command.of(row) for row in queries.recent_commands(store, limit)]
