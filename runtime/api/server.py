"""Serving the API with uvicorn at the host and port of the setting ``api_url`` (default 127.0.0.1:8000); it
refuses to serve a non-loopback address without a token (:mod:`runtime.api.binding`).

The server's log never shows the API token: a ``token=`` query parameter (the websocket's) is masked in every
line uvicorn writes.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import threading
from typing import Final

import uvicorn

from pipeline.clock import Clock
from pipeline.settings import Settings
from runtime.api.app import create_app
from runtime.api.binding import bind_address

_TOKEN: Final = re.compile(r"((?:^|[?&])token=)[^&\s\"']*", re.IGNORECASE)
LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")
MASK: Final = "***"
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def mask_tokens(text: str) -> str:
    """``text`` with the value of every ``token=`` query parameter masked."""
    return _TOKEN.sub(lambda match: match.group(1) + MASK, text)


class MaskTokens(logging.Filter):
    """Masks ``token=`` values in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_tokens(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: mask_tokens(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def server(settings: Settings, *, poll_s: float = 1.0, clock: Clock | None = None) -> uvicorn.Server:
    """A uvicorn server of the API at ``api_url`` (not started); see ``create_app`` for ``poll_s`` and ``clock``.

    Raises :class:`pipeline.domain.DataError` for an ``api_url`` that is not valid, or one that binds a
    non-loopback address while no ``api_token`` is set (``create_app``)."""
    host, port = bind_address(settings)
    config = uvicorn.Config(create_app(settings, poll_s=poll_s, clock=clock), host=host, port=port, log_level="info",
                            server_header=False, proxy_headers=False)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskTokens) for f in logger.filters):
            logger.addFilter(MaskTokens())
    return uvicorn.Server(config)


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve the API until SIGINT or SIGTERM, then shut down cleanly and return (on ``sock``, a socket already
    bound, when given).

    uvicorn passes the signal that stopped it on to the handler in place before it started: here, one that does
    nothing more, so that either signal ends in a normal return.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = {number: signal.signal(number, _stopped) for number in STOP_SIGNALS} if main else {}
    try:
        server(settings).run(sockets=None if sock is None else [sock])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _stopped(_number: int, _frame: object) -> None:
    """The server has already shut down when this runs."""
