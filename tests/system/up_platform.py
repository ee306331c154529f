"""A `tradeforge up` on a temporary home, for the system tests: its own data dir, MLflow store, Prefect home and
free ports; waiting until every service answers, and stopping it as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx

from pipeline.services import credential
from pipeline.services.prefect_api import PrefectAPI
from pipeline.settings import Settings
from tests.conftest import REPO
from tests.waiting import wait_until
from tradeforge_cli.up import heartbeat_age, pid_file
from tradeforge_cli.up_guard import alive as running
from tradeforge_cli.up_guard import stat_fields

PROC = Path("/proc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def ok(url: str, token: str = "") -> bool:
    """``url`` answers 200 (with the bearer ``token`` when given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


class Platform:
    """A platform on a temporary home: its own data dir, MLflow store, Prefect home and free ports; ``extra`` adds
    to (or, with None, removes from) the environment `up` starts with."""

    def __init__(self, tmp_path: Path, extra: dict[str, str | None] | None = None) -> None:
        self.home = tmp_path
        self.prefect, self.mlflow, self.dashboard, self.api = free_port(), free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "TRADEFORGE_DATA_DIR": str(tmp_path / "data"),
            "TRADEFORGE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
            "TRADEFORGE_PREFECT_API_URL": f"http://127.0.0.1:{self.prefect}/api",
            "TRADEFORGE_MLFLOW_UI_URL": f"http://127.0.0.1:{self.mlflow}",
            "TRADEFORGE_DASHBOARD_URL": f"http://127.0.0.1:{self.dashboard}",
            "TRADEFORGE_API_URL": f"http://127.0.0.1:{self.api}",
            "TRADEFORGE_HEARTBEAT_SECONDS": "1",
            "TRADEFORGE_DASHBOARD_PASSWORD": "",  # the credential `up` creates (the environment beats `.env`)
            "PREFECT_HOME": str(tmp_path / ".prefect"),
        }
        for name in ("PREFECT_API_URL", "TRADEFORGE_DATABASE_URL", credential.CLIENT_VARIABLE):
            self.env.pop(name, None)
        for name, value in (extra or {}).items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.settings = Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]

    @property
    def ports(self) -> list[int]:
        return [self.prefect, self.mlflow, self.dashboard, self.api]

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect}/api"

    def credential(self) -> str:
        """The operator credential `up` stored for this home."""
        stored = credential.stored(self.settings)
        assert stored is not None, f"no credential in {credential.credential_file(self.settings)}"
        return stored

    def prefect_client(self) -> PrefectAPI:
        """tradeforge's client of this platform's Prefect server, with the stored credential."""
        return PrefectAPI(self.prefect_api, self.credential(), timeout_s=10.0)

    def start(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as output:
            return subprocess.Popen(command, cwd=REPO, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def answers(self) -> bool:
        """Every service answers its health endpoint and the runtime's heartbeat is fresh."""
        age = heartbeat_age(self.settings)
        return (ok(f"{self.prefect_api}/health") and ok(f"http://127.0.0.1:{self.mlflow}/health")
                and ok(f"http://127.0.0.1:{self.dashboard}/_stcore/health")
                and ok(f"http://127.0.0.1:{self.api}/api/status", self.env.get("TRADEFORGE_API_TOKEN", ""))
                and age is not None and age < 10)

    def wait_up(self, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
        wait_until(lambda: "tradeforge is up" in log.read_text(errors="replace"), what, process=process, log=log)
        wait_until(self.answers, f"{what}: every service answering, a fresh runtime heartbeat", process=process,
                   log=log)

    def stop(self, process: subprocess.Popen[bytes], log: Path) -> None:
        """Ctrl-C, as in the terminal; every child stops without being killed and every port closes."""
        os.killpg(process.pid, signal.SIGINT)
        wait_until(lambda: process.poll() is not None, "`up` to end after Ctrl-C")
        text = log.read_text(errors="replace")
        logs = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}"
                         for f in sorted((self.home / "data" / "logs").glob("*.log")))
        assert "stopped" in text, text[-3000:] + logs
        assert "did not stop" not in text, text[-3000:] + logs  # no child had to be killed
        wait_until(lambda: not any(listening(p) for p in self.ports), "every port closed after the stop")
        assert not pid_file(self.settings).exists(), "the pid file outlived its up"


def descendants(root: int) -> set[int]:
    """Every running process below ``root`` in the process tree."""
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {pid for pid in found if running(pid)}
