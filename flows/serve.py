"""Every deployment with its schedule, served by one process: ``python -m flows.serve``.

Schedules come from the settings (cron expressions in UTC; change them with ``TRADEFORGE_SCHEDULE_*``):

| deployment | schedule (default) |
|---|---|
| ``ingest/ingest`` | ``schedule_ingest`` (hourly, ``0 * * * *``) |
| ``build-features/build-features`` | ``schedule_features`` (``15 1 * * *``) |
| ``train/train`` | ``schedule_train`` (``30 1 * * *``) |
| ``nightly-backtest/nightly-backtest`` | ``schedule_backtest`` (``30 2 * * *``) |
| ``backup-state/backup-state`` | ``schedule_backup`` (every 5 minutes) |
| ``restore-drill/restore-drill`` | ``schedule_restore_drill`` (weekly, ``0 3 * * 0``) |
| ``daily-summary/daily-summary`` | ``schedule_summary`` (``5 0 * * *``) |
| ``parity-report/parity-report`` | ``schedule_parity`` (``20 0 * * *``), created paused: it needs the runtime's
  portfolio (or strategy and symbol) in its parameters first |
| ``adhoc-backtest/adhoc-backtest`` | none (launched from the dashboard or the UI) |
| ``optimize/optimize`` | none (launched from the UI: a parameter study on a Dask cluster) |
| ``runtime/runtime`` | none (long-running; start it by hand) |

The process talks to the Prefect API at ``PREFECT_API_URL`` (``settings.prefect_api_url`` is the default when
``PREFECT_API_URL`` is not set) with the operator credential (``PREFECT_API_AUTH_STRING`` when set, else the
credential ``tradeforge up`` serves Prefect with), runs each flow run in a subprocess and keeps running until stopped.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows.backtest import adhoc_backtest_flow, nightly_backtest_flow
from flows.backup import backup_flow, restore_drill_flow
from flows.features import features_flow
from flows.ingest import ingest_flow
from flows.optimize import optimize_flow
from flows.parity import parity_flow
from flows.runtime import runtime_flow
from flows.summary import daily_summary_flow
from flows.train import train_flow
from pipeline.services.credential import client_auth_string
from pipeline.settings import Settings, load_settings

TAGS = ["tradeforge"]


def _cron(expression: str) -> Cron:
    return Cron(expression, timezone="UTC")


def deployments(settings: Settings) -> list[RunnerDeployment]:
    """Every tradeforge deployment, named like its flow, with its schedule from ``settings``."""
    scheduled = [
        (ingest_flow, settings.schedule_ingest, False),
        (features_flow, settings.schedule_features, False),
        (train_flow, settings.schedule_train, False),
        (nightly_backtest_flow, settings.schedule_backtest, False),
        (backup_flow, settings.schedule_backup, False),
        (restore_drill_flow, settings.schedule_restore_drill, False),
        (daily_summary_flow, settings.schedule_summary, False),
        (parity_flow, settings.schedule_parity, True),
    ]
    built = [
        flow.to_deployment(name=flow.name, schedules=[_cron(cron)], paused=paused, tags=TAGS,
                           description=(flow.description or "").strip().splitlines()[0] if flow.description else None)
        for flow, cron, paused in scheduled
    ]
    built.append(adhoc_backtest_flow.to_deployment(name=adhoc_backtest_flow.name, tags=TAGS,
                                                   description="One backtest with the parameters of the form."))
    built.append(optimize_flow.to_deployment(name=optimize_flow.name, tags=TAGS,
                                             description="A parameter study of a strategy on a Dask cluster."))
    built.append(runtime_flow.to_deployment(name=runtime_flow.name, tags=[*TAGS, "long-running"],
                                            description="The trading runtime: LONG-RUNNING, runs until stopped."))
    return built


def main() -> None:
    settings = load_settings()
    updates: dict[Any, str] = {}
    if not os.environ.get("PREFECT_API_URL"):
        updates[PREFECT_API_URL] = settings.prefect_api_url
    auth = client_auth_string(settings)
    if auth and not os.environ.get("PREFECT_API_AUTH_STRING"):  # the server `tradeforge up` serves asks for it
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates=updates):
        serve(*deployments(settings))


if __name__ == "__main__":
    main()
