"""Where the API listens and whom it answers: the address of ``api_url``, the hosts and origins it accepts.

* Bound to a loopback address (127.0.0.1, ::1, localhost) the API answers only requests whose ``Host`` header
  names 127.0.0.1, localhost or the configured host (on any port): a web page cannot reach it through a name of
  its own that resolves to 127.0.0.1 (DNS rebinding).
* Bound to any other address it must have a token (``api_token``): without one it refuses to start.
* The ``/ws`` websocket refuses a connection whose ``Origin`` header is present and is not the API's own origin
  (its configured host, 127.0.0.1 or localhost when bound to loopback, at its port) nor the dashboard's
  (``dashboard_url``): browsers do not apply CORS to websockets, so any page could otherwise read the stream.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

from pipeline.domain import DataError
from pipeline.settings import Settings

LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost")
"""The names a loopback-bound API always answers to, besides its configured host."""


def bind_address(settings: Settings) -> tuple[str, int]:
    """The host and port of ``api_url`` (the scheme's port when it names none)."""
    parts = urlsplit(settings.api_url)
    try:
        port = parts.port
    except ValueError as exc:
        raise DataError(f"api_url {settings.api_url!r} has no valid port: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"api_url {settings.api_url!r} is not valid: give http://HOST:PORT (e.g. "
                        "http://127.0.0.1:8000)")
    return parts.hostname, port or _default_port(parts.scheme)


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address) is this machine's loopback: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def has_token(settings: Settings) -> bool:
    return settings.api_token is not None and bool(settings.api_token.get_secret_value())


def check_exposure(settings: Settings) -> None:
    """Refuse (:class:`DataError`) an API bound to a non-loopback address without a token."""
    host, _port = bind_address(settings)
    if not is_loopback(host) and not has_token(settings):
        raise DataError(f"api_url {settings.api_url!r} binds {host}, which is not a loopback address, and no "
                        "api_token is set: anyone who can reach that address could read the runtime's state. Set "
                        "TRADEFORGE_API_TOKEN (the setting api_token), or bind 127.0.0.1 in api_url.")


def _host_form(host: str) -> str:
    """``host`` as a ``Host`` header or an origin names it (an IPv6 address in brackets), lower case."""
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(settings: Settings) -> list[str] | None:
    """The ``Host`` names a loopback-bound API answers (any port); None (no check) when bound elsewhere."""
    host, _port = bind_address(settings)
    if not is_loopback(host):
        return None
    return sorted({*LOOPBACK_NAMES, _host_form(host)})


def _origins_of(url: str) -> set[str]:
    """The origins a browser sends for pages served at ``url``: with its loopback aliases when it is loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return set()
    try:
        port = parts.port or _default_port(parts.scheme)
    except ValueError:
        return set()
    hosts = {_host_form(parts.hostname)}
    if is_loopback(parts.hostname):
        hosts.update(LOOPBACK_NAMES)
    suffixes = {f":{port}"} | ({""} if port == _default_port(parts.scheme) else set())
    return {f"{parts.scheme}://{host}{suffix}" for host in hosts for suffix in suffixes}


def allowed_origins(settings: Settings) -> frozenset[str]:
    """The ``Origin`` values the websocket accepts: the API's own and the dashboard's."""
    return frozenset(_origins_of(settings.api_url) | _origins_of(settings.dashboard_url))


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """No ``Origin`` (not a browser), or one of ``allowed`` (compared case-insensitively)."""
    return origin is None or origin.strip().rstrip("/").lower() in allowed
