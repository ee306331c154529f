"""``ingest``: keep every series of the universe (setting ``universe``) current in the lake.

Incremental (network sources resume after the last stored bar) and idempotent; every bar passes the quality
gate, bad ones are quarantined. One task per series, retried on failure; the flow fails at the end when any
series failed, after the others were ingested.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.states import State

from flows.common import IO_RETRIES, IO_RETRY_DELAY_S, NO_CACHING, clock, say, settings
from pipeline.data.universe import ingest_series, parse_series
from pipeline.domain import DataError


@task(name="ingest-series", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, timeout_seconds=3600,
      cache_policy=NO_CACHING, task_run_name="ingest {entry}")
def ingest_entry(entry: str) -> dict[str, Any]:
    return ingest_series(parse_series(entry), settings(), clock()).to_json()


@flow(name="ingest", log_prints=True)
def ingest_flow(universe: list[str] | None = None) -> list[dict[str, Any]]:
    """Ingest ``universe`` (default: the ``universe`` setting), one series at a time."""
    entries = universe if universe else settings().universe
    for entry in entries:
        parse_series(entry)  # a malformed entry fails the run before anything is fetched
    states: list[State[dict[str, Any]]] = [ingest_entry(entry, return_state=True) for entry in entries]
    reports, failures = [], []
    for entry, state in zip(entries, states, strict=True):
        if state.is_completed():
            report = state.result()
            say(f"{entry}: {report['rows_written']} new bars, {report['rows_quarantined']} quarantined, "
                f"series ends {report['series_last']}")
            reports.append(report)
        else:
            failures.append(f"{entry}: {state.message}")
    if failures:
        raise DataError(f"{len(failures)} of {len(entries)} series failed: " + "; ".join(failures))
    return reports
