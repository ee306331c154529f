"""`make run` smoke test: the whole platform comes up on 127.0.0.1 with a temporary home, every service answers
its health endpoint, the paper runtime's heartbeat is fresh, and Ctrl-C stops everything cleanly. A second
start reuses what the first one made (no bootstrap, the runtime restores its state)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from pipeline.settings import Settings
from pipeline.state import StateStore
from tests.conftest import REPO
from tradeforge_cli.up import heartbeat_age


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(predicate: object, timeout_s: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"`make run` exited ({process.returncode}) while waiting for {what}")
        if predicate():  # type: ignore[operator]
            return
        time.sleep(1.0)
    raise AssertionError(f"{what} not within {timeout_s:.0f} s")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _make_run(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(process: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("`make run` did not stop within 90 s of Ctrl-C") from None
    text = log.read_text(errors="replace")
    logs = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}"
                     for f in sorted((log.parent / "data" / "logs").glob("*.log")))
    assert "stopped" in text, text[-3000:] + logs
    assert "did not stop" not in text, text[-3000:] + logs  # no child had to be killed
    deadline = time.monotonic() + 10
    while any(_listening(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in ports if _listening(p)], "a service still listens after the stop"


def test_make_run_brings_up_every_service_and_stops_cleanly(tmp_path: Path) -> None:
    prefect, mlflow, dashboard = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "TRADEFORGE_DATA_DIR": str(tmp_path / "data"),
        "TRADEFORGE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "TRADEFORGE_PREFECT_API_URL": f"http://127.0.0.1:{prefect}/api",
        "TRADEFORGE_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow}",
        "TRADEFORGE_DASHBOARD_URL": f"http://127.0.0.1:{dashboard}",
        "TRADEFORGE_HEARTBEAT_SECONDS": "1",
        "PREFECT_HOME": str(tmp_path / ".prefect"),
    }
    for name in ("PREFECT_API_URL", "TRADEFORGE_DATABASE_URL"):
        env.pop(name, None)
    settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]
    log = tmp_path / "make-run.log"
    process = _make_run(env, log)
    try:
        _wait_for(lambda: "tradeforge is up" in log.read_text(errors="replace"), 600, "the platform", process)
        assert _ok(f"http://127.0.0.1:{prefect}/api/health")
        assert _ok(f"http://127.0.0.1:{mlflow}/health")
        assert _ok(f"http://127.0.0.1:{dashboard}/_stcore/health")
        _wait_for(lambda: (age := heartbeat_age(settings)) is not None and age < 10, 60,
                  "a fresh runtime heartbeat", process)
        served = httpx.post(f"http://127.0.0.1:{prefect}/api/deployments/filter", json={"limit": 50}, timeout=5)
        names = {d["name"] for d in served.json()}
        assert {"ingest", "train", "nightly-backtest", "backup-state", "daily-summary", "adhoc-backtest"} <= names
        flow_runs = httpx.post(f"http://127.0.0.1:{prefect}/api/flow_runs/filter", json={"limit": 50}, timeout=5)
        states = [r["state_type"] for r in flow_runs.json()]
        assert states.count("COMPLETED") >= 4, states  # the bootstrap ran as flow runs
        assert not {"FAILED", "CRASHED"} & set(states), states
        assert any((tmp_path / "data" / "backtests").iterdir())
    finally:
        if process.poll() is None:
            _stop(process, [prefect, mlflow, dashboard], log)
    first = log.read_text(errors="replace")
    assert "bootstrap" in first
    state = StateStore.read_only(settings.state_url)
    bot = state.bot_state()
    assert bot is not None and bot.status == "stopped"
    state.close()

    log2 = tmp_path / "make-run-2.log"
    process = _make_run(env, log2)
    try:
        _wait_for(lambda: "tradeforge is up" in log2.read_text(errors="replace"), 300, "the second start", process)
        _wait_for(lambda: (age := heartbeat_age(settings)) is not None and age < 10, 60,
                  "a fresh heartbeat after the restart", process)
    finally:
        if process.poll() is None:
            _stop(process, [prefect, mlflow, dashboard], log2)
    second = log2.read_text(errors="replace")
    assert "bootstrap" not in second  # the lake and the model were reused
    state = StateStore.read_only(settings.state_url)
    assert any(e.detail.startswith("feed") or "restored" in e.detail for e in state.events("recovery"))
    assert state.bot_state() is not None
    state.close()
