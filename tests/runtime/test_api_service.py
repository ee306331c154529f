"""``tradeforge up`` serves the bot's API: ``up.services()`` holds it, bound to 127.0.0.1 at ``api_url``, started as
``python -m runtime.api``, ready when ``/api/status`` answers; its log never shows the token, and SIGINT stops it
cleanly (as does SIGTERM)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pipeline.settings import load_settings
from tests.conftest import REPO
from tests.runtime.api_helpers import TOKEN, receive_until
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
    monkeypatch.setenv("TRADEFORGE_API_URL", "127.0.0.1")
    settings = load_settings()
    with pytest.raises(up.UpError, match=re.escape("'127.0.0.1' has no host and port")):
        up.services(settings, REPO, up.demo_runtime(settings))
    env = up.base_env(settings, REPO, "api-test")
    done = subprocess.run([sys.executable, "-m", "runtime.api"], cwd=REPO, env=env, capture_output=True, check=False)
    assert done.returncode == 1
    assert "api_url '127.0.0.1' is not valid: give http://HOST:PORT" in done.stderr.decode()
