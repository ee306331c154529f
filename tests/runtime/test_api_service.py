"""``tradeforge up`` serves the bot's API: ``up.services()`` holds it, bound to 127.0.0.1 at ``api_url``, started as
``python -m runtime.api``, ready when ``/api/status`` answers; its log never shows the token, and SIGINT stops it
cleanly (as does SIGTERM)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pipeline.settings import load_settings
from tests.conftest import REPO
from tests.runtime.api_helpers import TOKEN, api_settings, receive_until, serving
from tests.waiting import wait_until
from tradeforge_cli import up


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_the_api_on_loopback_as_one_more_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           stop: signal.Signals) -> None:
    from websockets.sync.client import connect

    port = _free_port()
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADEFORGE_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TRADEFORGE_API_TOKEN", TOKEN)
    settings = load_settings()
    services = {s.name: s for s in up.services(settings, REPO, up.demo_runtime(settings))}
    api = services["api"]
    assert list(services)[-1] == "api"
    assert api.command[1:] == ["-m", "runtime.api"]
    assert api.url == f"http://127.0.0.1:{port}/docs"
    assert f"127.0.0.1:{port}" not in up.taken_addresses(settings)
    assert not api.ready()

    process = subprocess.Popen(api.command, cwd=REPO, env=up.base_env(settings, REPO, "api-test"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(api.ready, "the API to answer /api/status with the token", process=process)
        assert f"127.0.0.1:{port}" in up.taken_addresses(settings)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            assert http.get("/api/status").status_code == 401
            status = http.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert status["status"] == "no runtime state"
            assert http.get("/docs").status_code == 200
        with connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}", open_timeout=None, proxy=None) as ws:
            assert receive_until(ws, lambda r: len(r) == 1, [])[0]["type"] == "hello"
        process.send_signal(stop)
        output, _ = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    log = output.decode()
    assert process.returncode == 0, log
    assert f"Uvicorn running on http://127.0.0.1:{port}" in log
    assert '"WebSocket /ws?token=***"' in log  # the websocket's line, its token masked
    assert TOKEN not in log
    assert "Application shutdown complete" in log


def test_a_bad_api_url_is_refused_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    env = up.base_env(load_settings(), REPO, "api-test") | {"TRADEFORGE_API_URL": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-m", "runtime.api"], cwd=REPO, env=env, capture_output=True, check=False)
    assert done.returncode == 1
    refusal = done.stderr.decode()
    assert "api_url" in refusal.lower() and "'127.0.0.1'" in refusal and "Traceback" not in refusal



@dataclass
class Proxy:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)
    """The headers of every request the proxy got (and its target)."""


@contextmanager
def _recording_proxy() -> Iterator[Proxy]:
    """An HTTP proxy on 127.0.0.1 that records every request it gets and answers 502."""
    requests: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append({"target": self.path, **dict(self.headers.items())})
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Proxy(f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_readiness_probe_never_sends_the_token_through_a_proxy(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(api_settings(tmp_path, TOKEN)) as api, _recording_proxy() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        with httpx.Client() as trusting:  # the proxy is live: a client that trusts the environment goes through it
            assert trusting.get(f"{api.url}/api/status").status_code == 502
        assert len(proxy.requests) == 1
        assert up._api_answers(api.settings)()  # the probe reached the API itself, with the token
    assert len(proxy.requests) == 1
    assert all(TOKEN not in value for request in proxy.requests for value in request.values())
