"""Who may reach the bot's API: ``/ws`` refuses a browser page of a foreign origin (browsers do not apply CORS to
websockets), a loopback-bound API refuses a foreign ``Host`` header (DNS rebinding), and the API does not start
on a non-loopback address without a token. Real uvicorn servers, real clients (httpx, websockets)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from websockets.exceptions import InvalidStatus

from pipeline.domain import DataError
from runtime.api.app import create_app
from runtime.api.binding import allowed_hosts, allowed_origins
from tests.conftest import REPO
from tests.runtime.api_helpers import TOKEN, api_settings, receive_until, serving
from tests.waiting import wait_until
from tradeforge_cli import up

FOREIGN = ("http://evil.example", "https://evil.example", "http://evil.example:8501", "null",
           "http://127.0.0.1.evil.example", "http://localhost:1")


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_websocket_refuses_a_page_of_a_foreign_origin(tmp_path: Path, token: str | None) -> None:
    with serving(api_settings(tmp_path, token)) as api:
        for origin in FOREIGN:
            with pytest.raises(InvalidStatus) as refused:
                api.websocket(token=token, origin=origin)
            assert refused.value.response.status_code == 403, origin
            assert "dashboard_url" in refused.value.response.body.decode()


def test_the_websocket_accepts_its_own_and_the_dashboards_origin_and_none(tmp_path: Path) -> None:
    settings = api_settings(tmp_path).model_copy(update={"dashboard_url": "http://127.0.0.1:8501"})
    with serving(settings) as api:
        own = [f"http://127.0.0.1:{api.port}", f"http://localhost:{api.port}", f"HTTP://LOCALHOST:{api.port}/"]
        for origin in [*own, "http://127.0.0.1:8501", "http://localhost:8501", None]:
            with api.websocket(origin=origin) as ws:
                assert receive_until(ws, lambda r: len(r) == 1, [])[0]["type"] == "hello", origin


def _websocket_handshake(port: int, host: str) -> str:
    """The status line the server answers a websocket handshake to, sent with ``Host: host``."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            answer += sock.recv(1024)
    return answer.split(b"\r\n")[0].decode()


def test_a_loopback_api_refuses_a_foreign_host_header(tmp_path: Path) -> None:
    with serving(api_settings(tmp_path)) as api, api.client() as http:
        for host in ("evil.example", f"evil.example:{api.port}", f"127.0.0.1.evil.example:{api.port}"):
            for path in ("/api/status", "/docs", "/openapi.json"):
                answer = http.get(path, headers={"Host": host})
                assert answer.status_code == 400, (host, path, answer.text)
                assert "Invalid host header" in answer.text
            assert _websocket_handshake(api.port, host) == "HTTP/1.1 400 Bad Request"
        for host in (f"127.0.0.1:{api.port}", f"localhost:{api.port}", "localhost", "LOCALHOST"):
            assert http.get("/api/status", headers={"Host": host}).status_code == 200, host
        assert _websocket_handshake(api.port, f"localhost:{api.port}") == "HTTP/1.1 101 Switching Protocols"


def test_the_hosts_and_origins_follow_the_configured_address(tmp_path: Path) -> None:
    base = api_settings(tmp_path)
    assert allowed_hosts(base.model_copy(update={"api_url": "http://localhost:9000"})) == ["127.0.0.1", "localhost"]
    assert allowed_hosts(base.model_copy(update={"api_url": "http://[::1]:9000"})) == ["127.0.0.1", "[::1]",
                                                                                         "localhost"]
    assert allowed_hosts(base.model_copy(update={"api_url": "http://10.1.2.3:9000",
                                                  "api_token": SecretStr(TOKEN)})) is None
    origins = allowed_origins(base.model_copy(update={"api_url": "http://127.0.0.1:80",
                                                      "dashboard_url": "https://dash.example"}))
    assert origins == {"http://127.0.0.1:80", "http://127.0.0.1", "http://localhost:80", "http://localhost",
                       "https://dash.example:443", "https://dash.example"}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port)):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_non_loopback_address_without_a_token_is_refused(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    url = f"http://0.0.0.0:{port}"
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADEFORGE_API_URL", url)
    monkeypatch.setenv("TRADEFORGE_API_TOKEN", "")
    settings = api_settings(tmp_path).model_copy(update={"api_url": url})
    process = subprocess.Popen([sys.executable, "-m", "runtime.api"], cwd=REPO,
                               env=up.base_env(settings, REPO, "api-test"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), "the API to refuse to start (or to serve)")
        served = process.poll() is None
    finally:
        if process.poll() is None:
            process.kill()
        _out, err = process.communicate()
    assert not served, "the API served a non-loopback address without a token"
    assert process.returncode == 1
    message = err.decode()
    assert f"api_url {url!r}" in message and "api_token" in message and "TRADEFORGE_API_TOKEN" in message

    with pytest.raises(DataError, match="no api_token is set"):
        create_app(settings)
    with pytest.raises(up.UpError, match="not a loopback address"):  # tradeforge up refuses before starting anything
        up.services(settings, REPO, up.demo_runtime(settings))
    locked = settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    assert create_app(locked).title == "tradeforge bot API"  # with a token it may serve any address
