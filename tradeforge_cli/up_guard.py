"""Nothing a ``tradeforge up`` started outlives it, however it ends (Ctrl-C, an error, SIGKILL, the OOM killer),
and the next ``up`` starts on free ports.

Every process ``up`` starts carries, in its environment, the tag ``TRADEFORGE_UP_INSTANCE=<instance id>``; the
processes those start inherit it, even in sessions of their own (the flow runs of the deployment server). Three
layers end them, each reaching what the others cannot:

* **the parent-death signal** (Linux): each service ``up`` starts directly gets SIGTERM from the kernel the moment
  ``up`` dies, and shuts down as on a normal stop (servers close their ports, the runtime records its stop, MLflow
  passes the signal on to its web server);
* **the guard**, a small process (``python -m tradeforge_cli.up_guard``) that ``up`` starts first, in a session of
  its own, reading a pipe that only ``up`` holds open. When ``up`` ends, however, the pipe closes: the guard sends
  SIGTERM to every tagged process outside the services' own process groups (the services end their groups), waits
  up to the grace period for every tagged process to end, then kills what is left;
* **the pid file** ``<data_dir>/run/up.json`` (the ``up`` process, its instance id, its services): the next ``up``
  reads it before it checks its ports, refuses to start while that ``up`` still runs, and otherwise ends whatever
  still carries the tag.

Tagged processes are found through ``/proc`` (Linux). Elsewhere the guard and the pid file signal the services'
process groups instead, and processes in sessions of their own are not reached.

This module uses the standard library only: the guard is a small, long-lived process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

INSTANCE_VARIABLE = "TRADEFORGE_UP_INSTANCE"
"""The environment variable that tags every process of one ``up`` (not a setting: ``up`` sets it for its children)."""
PROC = Path("/proc")
PARENT_DEATH_SIGNAL = sys.platform.startswith("linux")
"""The kernel signals a child when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
_PR_SET_PDEATHSIG = 1


def new_instance() -> str:
    """A new instance id: the ``up`` process id and a random part (process ids are reused)."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the child SIGTERM when its parent dies (Linux), or None.

    The signal follows the thread that started the child: start services from the main thread. It reaches that
    child only, not the processes it starts in turn (the guard ends those).
    """
    if not PARENT_DEATH_SIGNAL:
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    terminate = int(signal.SIGTERM)

    def arm() -> None:  # runs in the child between fork and exec: no imports, no locks
        prctl(_PR_SET_PDEATHSIG, terminate, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), terminate)

    return arm


# ------------------------------------------------------------------------------------------------ processes


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), None when gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), None for a process that is gone or a zombie."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _process_group(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[2])


def alive(pid: int) -> bool:
    """``pid`` is a running process (a zombie is not)."""
    if PROC.is_dir():
        return _start_time(pid) is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tagged(instance: str) -> list[int]:
    """The running processes tagged with ``instance`` (empty where there is no ``/proc``)."""
    if not PROC.is_dir():
        return []
    marker = f"\0{INSTANCE_VARIABLE}={instance}\0".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if marker in b"\0" + environment + b"\0" and alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _signal(pids: Iterable[int], number: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, number)


def _signal_groups(groups: Iterable[int], number: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, number)


def end_instance(instance: str, services: Iterable[int], grace_s: float, say: Callable[[str], None],
                 *, services_signalled: bool) -> int:
    """End every process of ``instance``; returns how many had to be killed.

    ``services`` are the process ids of the services (each leads its own process group). When
    ``services_signalled`` (the parent-death signal reached them) their groups are left to end on their own;
    otherwise they get SIGTERM too. Tagged processes outside those groups get SIGTERM. Whatever is still running
    after ``grace_s`` seconds gets SIGKILL.
    """
    groups = set(services)
    if not services_signalled:
        _signal_groups(groups, signal.SIGTERM)
    if PROC.is_dir():
        _signal([pid for pid in tagged(instance) if _process_group(pid) not in groups], signal.SIGTERM)
        remaining = _wait(lambda: tagged(instance), grace_s)
        _signal(remaining, signal.SIGKILL)
    else:
        remaining = _wait(lambda: [group for group in groups if alive(group)], grace_s)
        _signal_groups(remaining, signal.SIGKILL)
    if remaining:
        say(f"killed {len(remaining)} process(es) of tradeforge up {instance} still running after {grace_s:.0f} s: "
            + ", ".join(map(str, remaining)))
    return len(remaining)


def _wait(running: Callable[[], list[int]], grace_s: float) -> list[int]:
    deadline = time.monotonic() + grace_s
    left = running()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = running()
    return left


# ------------------------------------------------------------------------------------------------ pid file


@dataclass
class UpRecord:
    """The pid file of one ``up``: its process (id and start time), instance id and services (name → pid)."""

    path: Path
    instance: str
    pid: int
    started: str | None
    services: dict[str, int] = field(default_factory=dict)

    @classmethod
    def new(cls, path: Path, instance: str) -> UpRecord:
        return cls(path, instance, os.getpid(), _start_time(os.getpid()))

    @classmethod
    def load(cls, path: Path) -> UpRecord | None:
        """The record at ``path``; None when there is none or it cannot be read."""
        try:
            document = json.loads(path.read_text())
            return cls(path, str(document["instance"]), int(document["pid"]), document.get("started"),
                       {str(k): int(v) for k, v in document.get("services", {}).items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {k: v for k, v in asdict(self).items() if k != "path"}
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps(document, indent=1) + "\n")
        partial.replace(self.path)

    def add(self, name: str, pid: int) -> None:
        self.services[name] = pid
        self.save()

    def running(self) -> bool:
        """The recorded ``up`` process still runs (the same process: its start time matches)."""
        if not alive(self.pid):
            return False
        return self.started is None or _start_time(self.pid) in (None, self.started)

    def remove(self) -> None:
        """Delete the pid file if it is still this instance's."""
        current = UpRecord.load(self.path)
        if current is not None and current.instance == self.instance:
            self.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ the guard


def start_guard(instance: str, record: Path, grace_s: float, log: Path) -> subprocess.Popen[bytes]:
    """Start the guard of this ``up``. Its ``stdin`` is the pipe: it stays open as long as ``up`` runs (close it to
    have the guard act at once)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen([sys.executable, "-m", "tradeforge_cli.up_guard", instance, str(record), str(grace_s)],
                                stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def guard(instance: str, record_path: Path, grace_s: float) -> None:
    """Wait until ``up`` ends (end of file on stdin), then end every process of its ``instance``."""
    sys.stdin.buffer.read()
    record = UpRecord.load(record_path)
    services = list(record.services.values()) if record is not None and record.instance == instance else []
    end_instance(instance, services, grace_s, lambda text: print(text, flush=True),
                 services_signalled=PARENT_DEATH_SIGNAL)


if __name__ == "__main__":
    guard(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]))
