"""``tradeforge up`` (and ``make run``): the whole platform on one machine, on its embedded defaults.

Starts, each as a child process bound to 127.0.0.1 with its log under ``<data_dir>/logs/``:

1. the Prefect server (its own SQLite under ``PREFECT_HOME``), then the process serving every deployment;
2. the MLflow UI over the ``mlruns/`` store;
3. the Streamlit dashboard;
4. the trading runtime in paper mode on the built-in sample market (live sample bars as they close);
5. the bot's HTTP API over the runtime's state (``python -m runtime.api``, its docs at ``<api_url>/docs``).

The control plane is closed: the Prefect server requires the operator credential (its API auth string; see
:mod:`pipeline.services.credential`) in every API request, its UI asks for it, it checks a CSRF token on every change
and answers cross-origin requests from its own UI's origin only; the dashboard asks for the same credential. Each
child receives only the settings it uses (:mod:`tradeforge_cli.up_env`): venue keys and the Telegram token reach
the runtime and the deployments' server only.

On first start with an empty lake it bootstraps, with progress shown: ingest the sample market, build
features, train a small model, promote it, run the nightly backtest — each as a flow run recorded by the
Prefect server — so every page has content within a few minutes. A second start reuses what exists (the lake,
the registry, the runtime's state, which it restores). Ctrl-C (or SIGTERM) stops every child cleanly: SIGINT,
then SIGKILL for a child that has not stopped after a grace period. However else ``up`` ends (SIGKILL, the OOM
killer), nothing it started outlives it, and the next ``up`` first ends what a previous one left running
(:mod:`tradeforge_cli.up_guard`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from pipeline.domain import DataError
from pipeline.services import credential, prefect_api
from pipeline.settings import Settings
from runtime.api.binding import check_exposure
from runtime.config import RuntimeConfig, runtime_command
from tradeforge_cli import up_env, up_guard

RUNTIME_PORTFOLIO = """\
# The demo runtime of `tradeforge up`: paper trading on the built-in sample market (synthetic bars).
cash = 100000

[[strategies]]
id = "trend"
strategy = "sma_cross"
symbols = ["BTC/USDT"]
timeframe = "1m"
allocation = 0.5
params = { fast = 10, slow = 30 }
engine = { max_position = 0.25 }

[[strategies]]
id = "model"
strategy = "hybrid"
symbols = ["BTC/USDT"]
timeframe = "1m"
allocation = 0.5
params = { base = "sma_cross", fast = 10, slow = 30, threshold = 0.5 }
engine = { max_position = 0.25 }
"""
BOOTSTRAP_SERIES = "sample:BTC/USDT:1m"
"""The series the demo runtime trades; ingested (last ``BOOTSTRAP_DAYS`` days) and trained on at bootstrap."""
BOOTSTRAP_DAYS = 20


class UpError(RuntimeError):
    """The platform cannot be brought up; the message says why and what to do."""


@dataclass
class Service:
    name: str
    command: list[str]
    url: str
    """What a user opens (or the health endpoint for services without a page)."""
    ready: Callable[[], bool]
    receives: up_env.Receives
    """What of ``up``'s environment this service gets (its allow-list)."""
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None


def _port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise UpError(f"{url!r} has no host and port")
    return parts.hostname, parts.port


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def taken_addresses(settings: Settings) -> list[str]:
    """The service addresses (Prefect, MLflow, dashboard, the bot's API) something else already listens on."""
    addresses = [_port(url) for url in (settings.prefect_api_url, settings.mlflow_ui_url, settings.dashboard_url,
                                        settings.api_url)]
    return [f"{host}:{port}" for host, port in addresses if not _free(host, port)]


def pid_file(settings: Settings) -> Path:
    """Where a running ``up`` records its process, instance and services."""
    return settings.data_dir / "run" / "up.json"


def clear_previous(settings: Settings, grace_s: float, say: Callable[[str], None]) -> None:
    """End whatever a previous ``up`` of this data dir left running; refuse while that ``up`` still runs."""
    record = up_guard.UpRecord.load(pid_file(settings))
    if record is None:
        return
    if record.running():
        raise UpError(f"tradeforge is already up on this data dir (process {record.pid}): stop it first (Ctrl-C "
                      f"where it runs, or kill {record.pid})")
    left = up_guard.tagged(record.instance)
    if left:
        say(f"ending {len(left)} process(es) left running by a previous tradeforge up (process {record.pid})")
        up_guard.end_instance(record.instance, [], grace_s, say, services_signalled=True)
    record.path.unlink(missing_ok=True)


def base_env(settings: Settings, home: Path, instance: str) -> dict[str, str]:
    """What the children's environments are picked from (see :func:`tradeforge_cli.up_env.base_env`)."""
    try:
        return up_env.base_env(settings, home, instance)
    except credential.CredentialError as exc:
        raise UpError(str(exc)) from exc


own_env = up_env.own_env


def services(settings: Settings, home: Path, runtime: RuntimeConfig) -> list[Service]:
    """The services (the deployment server and the bot's API included) in start order."""
    bin_dir = Path(sys.executable).parent
    prefect_host, prefect_port = _port(settings.prefect_api_url)
    mlflow_host, mlflow_port = _port(settings.mlflow_ui_url)
    dash_host, dash_port = _port(settings.dashboard_url)
    _port(settings.api_url)  # the API reads its address from the settings: only check it here
    try:
        check_exposure(settings)
    except DataError as exc:
        raise UpError(str(exc)) from exc
    api = settings.prefect_api_url.rstrip("/")
    prefect_ui = api.removesuffix("/api")
    store = settings.mlflow_tracking_uri
    artifacts = (Path(store.removeprefix("sqlite:///")).resolve().parent if store.startswith("sqlite:///")
                 else Path("mlruns").resolve()) / "artifacts"
    sign_in = f" (sign in with {_credential_source(settings)})"
    return [
        Service("prefect", [str(bin_dir / "prefect"), "server", "start", "--host", prefect_host, "--port",
                            str(prefect_port)], prefect_ui + sign_in, _answers(f"{api}/health"), up_env.PREFECT_SERVER),
        Service("mlflow", [str(bin_dir / "mlflow"), "server", "--backend-store-uri", settings.mlflow_tracking_uri,
                           "--default-artifact-root", artifacts.as_uri(), "--host", mlflow_host, "--port",
                           str(mlflow_port), "--workers", "1"], settings.mlflow_ui_url,
                _answers(f"{settings.mlflow_ui_url.rstrip('/')}/health"), up_env.MLFLOW_UI),
        Service("dashboard", dashboard_command(home, dash_host, dash_port, bin_dir), settings.dashboard_url + sign_in,
                _answers(f"{settings.dashboard_url.rstrip('/')}/_stcore/health"), up_env.DASHBOARD),
        Service("deployments", [sys.executable, "-m", "flows.serve"], f"{prefect_ui}/deployments",
                lambda: _deployments_served(settings), up_env.FLOW_RUNNER),
        Service("runtime", runtime_command(runtime),
                f"{settings.dashboard_url} (Overview)", lambda: heartbeat_age(settings) is not None, up_env.RUNTIME),
        Service("api", [sys.executable, "-m", "runtime.api"], f"{settings.api_url.rstrip('/')}/docs",
                _api_answers(settings), up_env.BOT_API),
    ]


DASHBOARD_OPTIONS = ("--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode",
                     "viewer")
"""Streamlit's options for the dashboard (``make dashboard`` passes the same): no browser opened, no usage
statistics, and the viewer's toolbar (no developer menu, no Deploy button)."""


def dashboard_command(home: Path, host: str, port: int, bin_dir: Path | None = None) -> list[str]:
    """The ``streamlit run`` command line of the dashboard on ``host:port``."""
    streamlit = str((bin_dir or Path(sys.executable).parent) / "streamlit")
    return [streamlit, "run", str(home / "dashboards" / "app.py"), "--server.address", host, "--server.port",
            str(port), *DASHBOARD_OPTIONS]


def _credential_source(settings: Settings) -> str:
    """Where the operator finds the credential (never the credential itself)."""
    if settings.dashboard_password is not None and settings.dashboard_password.get_secret_value():
        return "TRADEFORGE_DASHBOARD_PASSWORD"
    return f"the credential in {credential.credential_file(settings)}"


def _api_answers(settings: Settings) -> Callable[[], bool]:
    """The bot's API is ready when ``/api/status`` answers (with the token, when one is set)."""
    url = f"{settings.api_url.rstrip('/')}/api/status"
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def check() -> bool:
        try:  # never through a proxy of the environment (HTTP_PROXY…): the token goes to the API only
            return httpx.get(url, headers=headers, timeout=2.0, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _deployments_served(settings: Settings) -> bool:
    names = prefect_api.deployment_names(settings.prefect_api_url, credential.operator_credential(settings))
    return names is not None and len(names) >= 10


def _bot_state(settings: Settings) -> Any:
    """The runtime's state row, None when it never ran here."""
    from pipeline.state import StateError, StateStore

    try:
        store = StateStore.read_only(settings.state_url)
    except StateError:
        return None
    try:
        return store.bot_state()
    finally:
        store.close()


def heartbeat_age(settings: Settings) -> float | None:
    """Seconds since the runtime's last heartbeat, None when it has none."""
    state = _bot_state(settings)
    if state is None or state.heartbeat_at is None:
        return None
    return float(time.time() - state.heartbeat_at.timestamp())


def demo_runtime(settings: Settings) -> RuntimeConfig:
    """The demo runtime: paper mode on the sample feed, its portfolio file (written once, then the user's to
    edit), every event printed, and ``--fresh`` unless a runtime already saved its state here (which it then
    restores)."""
    portfolio = settings.data_dir / "runtime" / "demo-portfolio.toml"
    if not portfolio.exists():
        portfolio.parent.mkdir(parents=True, exist_ok=True)
        portfolio.write_text(RUNTIME_PORTFOLIO)
    return RuntimeConfig(mode="paper", feed="sample", portfolio=portfolio, fresh=_bot_state(settings) is None,
                         verbose=True)


GRACE_S = 20.0
"""How long a service may take to stop before it is killed."""


class Supervisor:
    """Starts services, waits for each to answer, and stops them all (reverse order) on exit.

    ``env`` (``base_env``) is what each service's environment is picked from, by the service's allow-list.

    Each service runs in a session of its own and gets SIGTERM from the kernel should this process die
    (``up_guard.die_with_parent``); ``on_spawn`` gets each service's name and process id as soon as it exists.
    Call ``start`` from the main thread (the parent-death signal follows the thread that started the child).
    """

    def __init__(self, env: dict[str, str], log_dir: Path, say: Callable[[str], None], grace_s: float = GRACE_S,
                 on_spawn: Callable[[str, int], None] | None = None):
        self.env = env
        self.log_dir = log_dir
        self.say = say
        self.grace_s = grace_s
        self.on_spawn = on_spawn
        self.started: list[Service] = []
        self._preexec = up_guard.die_with_parent()

    def start(self, service: Service, timeout_s: float = 120.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{service.name}.log"
        service.log = log_path.open("ab")
        service.process = subprocess.Popen(service.command, env=service.receives.pick(self.env), stdout=service.log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, preexec_fn=self._preexec)
        self.started.append(service)
        if self.on_spawn is not None:
            self.on_spawn(service.name, service.process.pid)
        deadline = time.monotonic() + timeout_s
        while not service.ready():
            if service.process.poll() is not None:
                raise UpError(f"{service.name} exited with code {service.process.returncode} while starting; "
                              f"see {log_path}")
            if time.monotonic() > deadline:
                raise UpError(f"{service.name} did not answer within {timeout_s:.0f} s; see {log_path}")
            time.sleep(0.5)

    def dead(self) -> list[Service]:
        return [s for s in self.started if s.process is not None and s.process.poll() is not None]

    def stop(self) -> None:
        """Stop the services one by one, the last started first (the runtime before the deployment server,
        which needs the Prefect server to shut down cleanly): SIGINT, then SIGKILL after ``grace_s``."""
        for service in reversed(self.started):
            process = service.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    self.say(f"{service.name} did not stop within {self.grace_s:.0f} s: killed")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if service.log is not None:
                service.log.close()
        self.started.clear()


@contextlib.contextmanager
def stop_signals() -> Iterator[list[str]]:
    """SIGTERM, SIGINT and SIGHUP (the terminal closed) end the wait loop (recorded in the yielded list) instead of
    killing the process, which then stops every service cleanly."""
    received: list[str] = []

    def note(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)

    numbers = [signal.SIGTERM, signal.SIGINT, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    previous = {number: signal.signal(number, note) for number in numbers}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def needs_bootstrap(settings: Settings) -> bool:
    """True when the lake holds no bars of the demo series (a first start)."""
    from pipeline.data.lake import Lake

    return not any(str(s.timeframe) == "1m" for s in Lake(settings.lake_dir).find("BTC/USDT", venue="sample"))


def bootstrap_steps(settings: Settings) -> list[tuple[str, Callable[[], Any]]]:
    """The first-start steps, each a flow run (recorded by the Prefect server the environment points at)."""
    from flows.backtest import nightly_backtest_flow
    from flows.features import features_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow

    universe = list(dict.fromkeys([*settings.universe, BOOTSTRAP_SERIES]))
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - BOOTSTRAP_DAYS * 86_400))
    return [
        ("ingest the sample market", lambda: ingest_flow(universe=universe)),
        ("build features", lambda: features_flow(universe=universe)),
        ("train a small model on sample BTC/USDT 1m and promote it",
         lambda: train_flow(symbol="BTC/USDT", timeframe="1m", venue="sample", start=since, promote="force",
                            epochs=2, base_strategy="sma_cross")),
        ("run the nightly backtest", lambda: nightly_backtest_flow()),
    ]
