"""``runtime``: the trading runtime as a Prefect deployment. LONG-RUNNING: a live or paced runtime runs until it
is stopped (cancel the flow run, or send ``tradeforge runtime ctl stop``); give it its own work pool or ``serve``
process so it never blocks the scheduled jobs.

The runtime runs as its own process (``python -m runtime ...``, the same command as ``tradeforge runtime``): the
flows never import the runtime, and a crash of either one leaves the other standing. Its output goes to the
run's log line by line; cancelling the flow run stops the runtime gracefully (SIGTERM: it finishes its batch,
commits and records why it stopped).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any, Literal

from prefect import flow, get_run_logger

from pipeline.domain import DataError


def runtime_command(
    mode: str, portfolio: str | None, strategy: str | None, symbol: str | None, timeframe: str, venue: str | None,
    speed: str, start: str | None, end: str | None, fresh: bool, params: dict[str, str] | None,
    extra_args: list[str] | None,
) -> list[str]:
    """The ``python -m runtime`` command line for these parameters."""
    if not portfolio and not (strategy and symbol):
        raise DataError("the runtime needs a portfolio file, or a strategy and a symbol")
    argv = [sys.executable, "-m", "runtime", "--mode", mode, "--timeframe", timeframe, "--speed", speed, "--json"]
    options = {"--portfolio": portfolio, "--strategy": strategy, "--symbol": symbol, "--venue": venue,
               "--start": start, "--end": end}
    for option, value in options.items():
        if value:
            argv += [option, value]
    for key, value in (params or {}).items():
        argv += ["--param", f"{key}={value}"]
    if fresh:
        argv.append("--fresh")
    return argv + list(extra_args or [])


@flow(name="runtime", log_prints=True)
def runtime_flow(
    mode: Literal["paper", "live"] = "paper",
    portfolio: str | None = None,
    strategy: str | None = None,
    symbol: str | None = None,
    timeframe: str = "1m",
    venue: str | None = None,
    speed: str = "max",
    start: str | None = None,
    end: str | None = None,
    fresh: bool = False,
    params: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run the trading runtime until it stops; returns its run summary. Long-running (module documentation)."""
    logger = get_run_logger()
    argv = runtime_command(mode, portfolio, strategy, symbol, timeframe, venue, speed, start, end, fresh, params,
                           extra_args)
    logger.info("starting the runtime: %s", " ".join(argv[1:]))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            logger.info("runtime: %s", lines[-1])
        code = process.wait()
    finally:
        if process.poll() is None:  # the flow run was cancelled or crashed: stop the runtime gracefully
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    if code != 0:
        raise RuntimeError(f"the runtime exited with code {code}: {' | '.join(lines[-5:])}")
    for line in reversed(lines):
        if line.startswith("{"):
            summary: dict[str, Any] = json.loads(line)
            return summary
    return {"output": lines[-20:]}
