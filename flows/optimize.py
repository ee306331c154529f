"""``optimize``: one parameter study of a strategy over the lake's bars, its trials fanned out to a Dask cluster.

Typed parameters (the Prefect UI shows them as a form), as ``tradeforge optimize --symbol`` takes them. The flow
reads the bars (``pipeline.research.inputs``) and runs ``pipeline.research.optimise.optimise`` with a search that
sends the trials to Dask (``fanned_search``): to the scheduler at ``dask_address`` (default: the setting
``dask_address``), else to a local cluster of one single-threaded worker process per core started for the run.
The report is kept under ``<data_dir>/research/<study>/`` and logged to MLflow; the flow returns its document.

The fan-out itself (``pipeline.research.fanout``): a grid's chunks are recorded by tasks that add only the points
the study does not hold yet (every grid point is one trial, whatever task runs again); sampled trials are asked
for and told here and evaluated by tasks. Tasks never reuse a cached result and are retried twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from prefect import Task, flow, task
from prefect.task_runners import TaskRunner
from prefect_dask.task_runners import DaskTaskRunner

from flows.common import NO_CACHING, report_failure, say, settings
from pipeline.backtest.inputs import engine_config
from pipeline.engine import EngineConfig
from pipeline.research.fanout import RETRIES, Fan, evaluate_sets, fanned_search, record_chunk
from pipeline.research.inputs import lake_inputs
from pipeline.research.objective import Objective
from pipeline.research.optimise import Request, optimise
from pipeline.research.space import parse_space
from pipeline.research.store import document, save_report
from pipeline.research.sweep import Evaluation, Market
from pipeline.research.tracking import log_study
from pipeline.strategies import REGISTRY


@task(name="record-grid-chunk", cache_policy=NO_CACHING, retries=RETRIES)
def record_task(url: str, name: str, request: Request, market: Market, config: EngineConfig,
                span: tuple[int, int] | None, points: list[dict[str, Any]]) -> int:
    return record_chunk(url, name, request, market, config, span, points)


@task(name="evaluate-trials", cache_policy=NO_CACHING, retries=RETRIES)
def evaluate_task(request: Request, market: Market, config: EngineConfig, span: tuple[int, int] | None,
                  param_sets: list[dict[str, Any]]) -> list[Evaluation]:
    return evaluate_sets(request, market, config, span, param_sets)


def task_fan(runner: TaskRunner[Any]) -> Fan:
    """A ``Fan`` that submits Prefect tasks to ``runner`` (started) and waits for all of them."""

    def fan(work: Callable[..., Any], calls: Sequence[Mapping[str, Any]]) -> list[Any]:
        futures = [runner.submit(cast(Task[..., Any], work), parameters=dict(call)) for call in calls]
        return [future.result() for future in futures]

    return fan


def dask_runner(address: str | None) -> DaskTaskRunner:
    """The scheduler at ``address``, or a local cluster of one single-threaded worker process per core."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": os.cpu_count() or 1, "threads_per_worker": 1,
                                          "processes": True})


@flow(name="optimize", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def optimize_flow(
    strategy: str,
    symbol: str,
    space: list[str],
    timeframe: str = "1h",
    venue: str | None = None,
    start: str | None = None,
    end: str | None = None,
    grid: bool = False,
    trials: int = 100,
    objective: str = "sharpe",
    walk_forward: int = 0,
    min_trades: int = 0,
    seed: int = 7,
    study: str | None = None,
    fee_bps: float = 10.0,
    slippage_bps: float = 0.0,
    max_position: float = 0.25,
    cash: float = 100_000.0,
    fill: str = "next_open",
    no_breakers: bool = False,
    breaker_cooldown_bars: int | None = None,
    params: dict[str, str] | None = None,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Search ``strategy``'s parameters over ``space`` (name=LOW:HIGH[:STEP] each) on ``symbol``'s bars, every
    grid point or ``trials`` sampled, on a Dask cluster (``dask_address``, default: the setting; none: a local
    one); ``params`` fixes other parameters. Keeps the report and logs it to MLflow."""
    found = settings()
    address = dask_address or found.dask_address
    local = not address
    request = Request(strategy, parse_space(REGISTRY.spec(strategy), space, dict(params or {})),
                      Objective.parse(objective, min_trades), grid, trials, seed, walk_forward,
                      1 if local else None, study)  # a local worker per core: one core each
    config = engine_config({"cash": cash, "fee_bps": fee_bps, "slippage_bps": slippage_bps, "fill": fill,
                            "max_position": max_position, "breaker_cooldown_bars": breaker_cooldown_bars},
                           name=lambda loc: "parameter " + ".".join(str(part) for part in loc))  # the form's names
    config = config.without_breakers() if no_breakers else config
    inputs = lake_inputs(found, request, config, symbol, timeframe, venue, start, end)
    say(f"optimize {strategy} on {symbol} {inputs.timeframe}: {len(inputs.market)} bars, "
        f"{'grid' if grid else f'{trials} trials'} over {request.space.describe()}, on "
        f"{address or 'a local Dask cluster'}")
    with dask_runner(address) as runner:
        report = optimise(request, found.study_url, inputs.market, config, inputs.timeframe, inputs.instrument,
                          search=fanned_search(found.study_url, task_fan(runner), record_task, evaluate_task))
    folder = save_report(report, found.data_dir / "research")
    shown = {**document(report), "stored": str(folder),
             "mlflow_run": log_study(found.mlflow_tracking_uri, report, folder)}
    say(f"study {report['study']}: {report['completed']} of {report['trials']} trials with a value, best "
        f"{report['best_value']} at {report['best_params']}; {report['overfitting']['verdict']}; stored {folder}")
    return shown
