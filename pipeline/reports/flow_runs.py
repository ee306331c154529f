"""Failed flow runs, as the Overview shows them and Telegram announces them.

A flow whose job did not happen ends Failed, and its failure hook records it in the state store as a runtime
event of kind :data:`FLOW_FAILED` (detail ``<flow>: <reason>``, written by :func:`failure_detail`), so the
Overview shows it whether or not a Prefect server is running; where Telegram is configured the hook also sends
:func:`failure_alert`. :func:`flow_failures` reads the recorded failures back, one row per flow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import pandas as pd

from pipeline.domain import DataError
from pipeline.state import StateStore

FLOW_FAILED: Final = "flow_failed"
"""The runtime event kind of a failed (or crashed) flow run."""
FAILURE_COLUMNS: Final = ("flow", "failures", "last_at", "reason")
MAX_REASON_CHARS: Final = 2000
"""A recorded reason is cut to this many characters (ending in "…")."""


def failure_reason(message: str | None, state_name: str = "Failed") -> str:
    """The reason a flow run failed, from its final state's message: Prefect's own prefix ("Flow run encountered
    an exception:") and the class name of tradeforge's own errors (whose messages say it all) are dropped."""
    text = (message or "").strip()
    text = text.removeprefix("Flow run encountered an exception:").strip()
    for name in ("JobNotDone", "DataError"):
        text = text.removeprefix(f"{name}: ")
    return text or f"the run ended {state_name} without a message"


def failure_detail(flow: str, reason: str) -> str:
    """The detail of a :data:`FLOW_FAILED` event: ``<flow>: <reason>`` (the reason cut to a readable length)."""
    if not flow.strip() or ":" in flow:
        raise DataError(f"flow name {flow!r} is not valid: give a flow name without ':'")
    short = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
    return f"{flow}: {short}"


def failure_alert(flow: str, run: str, reason: str, at: datetime) -> str:
    """The Telegram alert of a failed flow run: which flow, which run, why, and when (UTC)."""
    stamp = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"Flow {flow} failed (run {run}): {reason}\n{stamp}"


def flow_failures(store: StateStore, now: datetime, within: timedelta = timedelta(days=1)) -> pd.DataFrame:
    """The flows that failed from ``now - within`` on: per flow (``FAILURE_COLUMNS``) how many runs failed,
    when the last one did and why; the most recent first."""
    if within <= timedelta(0):
        raise DataError(f"within {within} is not valid: give a positive duration")
    latest: dict[str, tuple[int, datetime, str]] = {}
    for event in store.events(FLOW_FAILED, since=now - within):  # oldest first: the last one seen is the latest
        flow, _, reason = event.detail.partition(": ")
        count = latest[flow][0] + 1 if flow in latest else 1
        latest[flow] = (count, event.at, reason)
    rows = [(flow, count, pd.Timestamp(at), reason) for flow, (count, at, reason) in latest.items()]
    frame = pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))
    return frame.sort_values("last_at", ascending=False, kind="stable").reset_index(drop=True)
