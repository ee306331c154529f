"""Bearer-token access to the API (the setting ``api_token``, ``TRADEFORGE_API_TOKEN``).

* A token is set: every endpoint and the websocket need ``Authorization: Bearer <token>`` (the websocket may
  pass ``?token=<token>`` instead, as browsers cannot set its headers); a missing or wrong token gets 401.
* No token is set: the read-only endpoints and the websocket are served, and every control command is refused
  with 403 (nobody could be told apart from anybody else).

Tokens are compared in constant time (of their SHA-256 digests, so not even the length shows). The token is
never logged nor returned: errors say only that it is missing or wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.requests import HTTPConnection

SCHEME: Final = HTTPBearer(
    auto_error=False, scheme_name="token",
    description="The API token (setting api_token, TRADEFORGE_API_TOKEN) as a bearer token.",
)
REFUSED: Final = "missing or wrong API token: send the header 'Authorization: Bearer <TRADEFORGE_API_TOKEN>'"
CONTROL_CLOSED: Final = ("control commands are refused: this API has no token configured; set TRADEFORGE_API_TOKEN "
                   "(the setting api_token) and restart it, then send 'Authorization: Bearer <token>'")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Gate:
    """Who may do what, by the configured token."""

    def __init__(self, token: SecretStr | None) -> None:
        secret = "" if token is None else token.get_secret_value()
        self._digest = _digest(secret) if secret else None

    @property
    def locked(self) -> bool:
        """A token is configured."""
        return self._digest is not None

    def matches(self, presented: str | None) -> bool:
        """``presented`` is the configured token (constant time)."""
        if self._digest is None or presented is None:
            return False
        return hmac.compare_digest(_digest(presented), self._digest)

    def may_read(self, presented: str | None) -> bool:
        return not self.locked or self.matches(presented)

    def connection_token(self, connection: HTTPConnection) -> str | None:
        """The bearer token of the ``Authorization`` header, else the ``token`` query parameter."""
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return connection.query_params.get("token")


def gate_of(connection: HTTPConnection) -> Gate:
    gate = connection.app.state.context.gate
    if not isinstance(gate, Gate):
        raise TypeError(f"the application's context holds no token Gate but {type(gate).__name__}: build it with "
                        "runtime.api.app.create_app")
    return gate


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(SCHEME)]


def _unauthorized() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, REFUSED, headers={"WWW-Authenticate": "Bearer"})


def reader(request: Request, credentials: Credentials) -> None:
    """Reads: open without a configured token, else the token is required."""
    if not gate_of(request).may_read(None if credentials is None else credentials.credentials):
        raise _unauthorized()


def operator(request: Request, credentials: Credentials) -> None:
    """Control commands: refused without a configured token, else the token is required."""
    gate = gate_of(request)
    if not gate.locked:
        raise HTTPException(status.HTTP_403_FORBIDDEN, CONTROL_CLOSED)
    if not gate.matches(None if credentials is None else credentials.credentials):
        raise _unauthorized()
