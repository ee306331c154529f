"""``ingest``: keep every series of the universe (setting ``universe``) current in the lake.

Incremental (network sources resume after the last stored bar) and idempotent; every bar passes the quality
gate, bad ones are quarantined. One task per series, retried on failure. The flow fails at the end, after the
other series were ingested, when any series failed, or when a series fed by a venue got no new bar although it
should have (it is stale: its last bar is more than ``stale_after_bars`` bars old on its market's calendar; see
``pipeline.data.freshness``). An up-to-date series that got no new bar is fine.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.states import State

from flows.common import IO_RETRIES, IO_RETRY_DELAY_S, NO_CACHING, JobNotDone, clock, report_failure, say, settings
from pipeline.data.freshness import missing_bars
from pipeline.data.universe import ingest_series, parse_series


@task(name="ingest-series", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, timeout_seconds=3600,
      cache_policy=NO_CACHING, task_run_name="ingest {entry}")
def ingest_entry(entry: str) -> dict[str, Any]:
    spec, config = parse_series(entry), settings()
    report = ingest_series(spec, config, clock())
    return report.to_json() | {"missing": missing_bars(spec, report, config)}


@flow(name="ingest", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def ingest_flow(universe: list[str] | None = None) -> list[dict[str, Any]]:
    """Ingest ``universe`` (default: the ``universe`` setting), one series at a time."""
    entries = universe if universe else settings().universe
    for entry in entries:
        parse_series(entry)  # a malformed entry fails the run before anything is fetched
    states: list[State[dict[str, Any]]] = [ingest_entry(entry, return_state=True) for entry in entries]
    reports, failures, starved = [], [], []
    for entry, state in zip(entries, states, strict=True):
        if state.is_completed():
            report = state.result()
            say(f"{entry}: {report['rows_written']} new bars, {report['rows_quarantined']} quarantined, "
                f"series ends {report['series_last']}")
            reports.append(report)
            if report["missing"]:
                starved.append(report["missing"])
        else:
            failures.append(f"{entry}: {state.message}")
    problems = []
    if failures:
        problems.append(f"{len(failures)} of {len(entries)} series failed: " + "; ".join(failures))
    if starved:
        problems.append(f"{len(starved)} of {len(entries)} series got no new bar though they should have: "
                        + "; ".join(starved))
    if problems:
        raise JobNotDone(". ".join(problems))
    return reports
