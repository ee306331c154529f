"""`make run` smoke test: the whole platform comes up on 127.0.0.1 with a temporary home, every service answers
its health endpoint, the paper runtime's heartbeat is fresh, and Ctrl-C stops everything cleanly. A second
start reuses what the first one made (no bootstrap, the runtime restores its state).

No orphans: a `tradeforge up` killed with SIGKILL leaves no service running or listening, and the next `up` starts
cleanly; the guard of an `up` and the next `up` end whatever carries a finished `up`'s tag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import Settings
from pipeline.state import StateStore
from tests.system.up_platform import PROC, Platform, descendants, listening, running
from tests.waiting import wait_until
from tradeforge_cli import up_guard
from tradeforge_cli.up import UpError, clear_previous, pid_file

needs_proc = pytest.mark.skipif(not PROC.is_dir(), reason="finds processes through /proc (Linux)")


# ------------------------------------------------------------------------------------------------ processes


def _tagged(instance: str) -> set[int]:
    """Running processes whose environment carries the tag of ``instance``."""
    marker = f"\0{up_guard.INSTANCE_VARIABLE}={instance}\0".encode()
    found = set()
    for entry in PROC.iterdir():
        try:
            environment = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if marker in b"\0" + environment + b"\0" and running(int(entry.name)):
            found.add(int(entry.name))
    return found


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ tests


def test_make_run_brings_up_every_service_and_stops_cleanly(tmp_path: Path) -> None:
    platform = Platform(tmp_path)
    settings = platform.settings
    log = tmp_path / "make-run.log"
    process = platform.start(["make", "run"], log)
    try:
        platform.wait_up(process, log, "the platform")
        with platform.prefect_client() as prefect:  # the server asks for the credential `up` stored
            served = prefect.post("/deployments/filter", {"limit": 50})
            names = {d["name"] for d in served.json()}
            assert {"ingest", "train", "nightly-backtest", "backup-state", "daily-summary", "adhoc-backtest"} <= names
            flow_runs = prefect.post("/flow_runs/filter", {"limit": 50})
        states = [r["state_type"] for r in flow_runs.json()]
        assert states.count("COMPLETED") >= 4, states  # the bootstrap ran as flow runs
        assert not {"FAILED", "CRASHED"} & set(states), states
        assert any((tmp_path / "data" / "backtests").iterdir())
    finally:
        if process.poll() is None:
            platform.stop(process, log)
    first = log.read_text(errors="replace")
    assert "bootstrap" in first
    credential = platform.credential()
    state = StateStore.read_only(settings.state_url)
    bot = state.bot_state()
    assert bot is not None and bot.status == "stopped"
    state.close()

    log2 = tmp_path / "make-run-2.log"
    process = platform.start(["make", "run"], log2)
    try:
        platform.wait_up(process, log2, "the second start")
        assert platform.credential() == credential  # the operator signs in with the same credential
    finally:
        if process.poll() is None:
            platform.stop(process, log2)
    second = log2.read_text(errors="replace")
    assert "bootstrap" not in second  # the lake and the model were reused
    state = StateStore.read_only(settings.state_url)
    assert any(e.detail.startswith("feed") or "restored" in e.detail for e in state.events("recovery"))
    assert state.bot_state() is not None
    state.close()


@needs_proc
def test_a_killed_up_leaves_nothing_running_and_the_next_up_starts_cleanly(tmp_path: Path) -> None:
    platform = Platform(tmp_path)
    command = [sys.executable, "-m", "tradeforge_cli", "up", "--no-bootstrap"]
    log = tmp_path / "up.log"
    process = platform.start(command, log)
    started: set[int] = set()
    instance = ""
    try:
        platform.wait_up(process, log, "the platform")
        record = up_guard.UpRecord.load(pid_file(platform.settings))
        assert record is not None and record.pid == process.pid
        instance = record.instance
        started = descendants(process.pid)  # the services, what they started, and the guard
        assert set(record.services.values()) <= started
        assert set(record.services) == {"prefect", "mlflow", "dashboard", "deployments", "runtime", "api"}

        process.send_signal(signal.SIGKILL)
        process.wait()
        wait_until(lambda: not any(running(pid) for pid in started | _tagged(instance)),
                   "every process the killed up started to end")
        wait_until(lambda: not any(listening(p) for p in platform.ports), "every port of the killed up to close")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _kill_all(started | (_tagged(instance) if instance else set()))
    state = StateStore.read_only(platform.settings.state_url)
    bot = state.bot_state()
    assert bot is not None and bot.status == "stopped", "the runtime was not told to stop"  # parent-death signal
    state.close()

    log2 = tmp_path / "up-2.log"
    process = platform.start(command, log2)
    try:
        platform.wait_up(process, log2, "the next start")
    finally:
        if process.poll() is None:
            platform.stop(process, log2)
    assert "left running by a previous tradeforge up" not in log2.read_text(errors="replace")


def _tagged_process(instance: str, *, new_session: bool, ignore_sigterm: bool = False) -> subprocess.Popen[bytes]:
    """A process carrying ``instance``'s tag that runs until its stdin closes (or it is signalled)."""
    code = "import signal, sys\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\nsys.stdin.read()\n"
    env = {**os.environ, up_guard.INSTANCE_VARIABLE: instance}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             start_new_session=new_session)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"  # its handlers are in place
    return child


def _end(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate()


@needs_proc
def test_the_guard_ends_what_its_up_left_running_once_up_is_gone(tmp_path: Path) -> None:
    instance = up_guard.new_instance()
    escaped = _tagged_process(instance, new_session=True)  # like a flow run: a session of its own
    stubborn = _tagged_process(instance, new_session=True, ignore_sigterm=True)
    record = up_guard.UpRecord.new(tmp_path / "run" / "up.json", instance)
    record.save()
    guard = up_guard.start_guard(instance, record.path, 1.0, tmp_path / "guard.log")
    try:
        assert _tagged(instance) == {escaped.pid, stubborn.pid}
        assert guard.stdin is not None
        guard.stdin.close()  # what the end of `up` does, however it ends
        wait_until(lambda: guard.poll() is not None, "the guard to finish")
        assert escaped.wait() == -signal.SIGTERM  # asked to stop
        assert stubborn.wait() == -signal.SIGKILL  # killed after the grace period
        assert str(stubborn.pid) in (tmp_path / "guard.log").read_text()
        assert guard.returncode == 0
    finally:
        _end([escaped, stubborn, guard])


@needs_proc
def test_the_next_up_ends_leftovers_of_a_dead_up_and_refuses_while_one_runs(tmp_path: Path,
                                                                           settings: Settings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover_instance = f"{dead.pid}-leftover"
    leftover = _tagged_process(leftover_instance, new_session=True)
    other = _tagged_process("another-up", new_session=True)  # another up's process is not touched
    stale = up_guard.UpRecord(pid_file(settings), leftover_instance, dead.pid, None, {"runtime": dead.pid})
    stale.save()
    said: list[str] = []
    try:
        clear_previous(settings, 5.0, said.append)
        assert leftover.wait() == -signal.SIGTERM
        assert other.poll() is None
        assert not stale.path.exists()
        assert any("left running by a previous tradeforge up" in text for text in said), said

        running = up_guard.UpRecord.new(pid_file(settings), "this-up")  # this very process, alive
        running.save()
        with pytest.raises(UpError, match=f"already up on this data dir \\(process {os.getpid()}\\)"):
            clear_previous(settings, 5.0, said.append)
        assert running.path.exists()
    finally:
        _end([leftover, other])
