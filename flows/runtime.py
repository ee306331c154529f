"""``runtime``: the trading runtime as a Prefect deployment. LONG-RUNNING: a live or paced runtime runs until it
is stopped (cancel the flow run, or send ``tradeforge runtime ctl stop``); give it its own work pool or ``serve``
process so it never blocks the scheduled jobs.

The runtime runs as its own process: the flow builds the runtime's typed ``RuntimeConfig`` (the only part of the
runtime a flow imports) and starts ``python -m runtime`` with the command line that config renders to, so a
crash of either one leaves the other standing. Its output goes to the
run's log line by line; cancelling the flow run stops the runtime gracefully (SIGTERM: it finishes its batch,
commits and records why it stopped).
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.common import report_failure
from pipeline.domain import DataError
from runtime.config import RuntimeConfig, runtime_command


def runtime_config(
    mode: str, portfolio: str | None, strategy: str | None, symbol: str | None, timeframe: str, venue: str | None,
    speed: str, start: str | None, end: str | None, fresh: bool, params: dict[str, str] | None,
    options: dict[str, Any] | None,
) -> RuntimeConfig:
    """The runtime's own typed configuration for these flow parameters (``options``: any further
    ``RuntimeConfig`` field by name, e.g. ``{"max_position": 1.0, "batch": 6}``); a ``DataError`` names each bad
    one."""
    if not portfolio and not (strategy and symbol):
        raise DataError("the runtime needs a portfolio file, or a strategy and a symbol")
    given = {"mode": mode, "portfolio": portfolio, "strategy": strategy, "symbol": symbol, "timeframe": timeframe,
             "venue": venue, "speed": speed, "start": start, "end": end, "fresh": fresh,
             "params": tuple(f"{key}={value}" for key, value in (params or {}).items())}
    clash = sorted(set(options or {}) & (set(given) | {"as_json"}))
    if clash:
        raise DataError(f"options {clash} are flow parameters of their own: give them as such")
    return RuntimeConfig.of(**{k: v for k, v in given.items() if v is not None}, **(options or {}), as_json=True)


@flow(name="runtime", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
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
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the trading runtime until it stops; returns its run summary. Long-running (module documentation)."""
    logger = get_run_logger()
    argv = runtime_command(runtime_config(mode, portfolio, strategy, symbol, timeframe, venue, speed, start, end,
                                          fresh, params, options))
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
