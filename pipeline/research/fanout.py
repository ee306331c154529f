"""A study's trials fanned out to a cluster: the search that the ``optimize`` flow runs through Prefect tasks on
Dask and ``tradeforge optimize --dask-address`` runs through a plain Dask client.

``fanned_search(url, fan)`` is a ``pipeline.research.optimise.Search``. A grid is cut into chunks of ``CHUNK``
points; one call per chunk opens the study by name and records the chunk's points the study does not hold yet
(``study.record_points``), so a chunk run again (its worker was lost, or the run was resumed) records nothing
twice: every grid point is one trial. Sampled trials are asked for and told where the search runs
(``study.run_sampled``), their evaluation fanned out one parameter set per call (no storage writes on the
workers): the same seed gives the same trials as a search in one process. The calls' arguments (the request,
the market, the engine configuration) travel to the workers pickled: a worker must be able to import the
strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from pipeline.engine import EngineConfig
from pipeline.research import study as studies
from pipeline.research.optimise import Request, Search
from pipeline.research.sweep import Evaluation, Market, Progress, evaluate

if TYPE_CHECKING:
    import distributed

CHUNK = 64
"""Grid points one call evaluates and records."""
RETRIES = 2
"""How often a call whose worker was lost, or that failed, is run again."""

Fan = Callable[[Callable[..., Any], Sequence[Mapping[str, Any]]], list[Any]]
"""Runs a function once per mapping of keyword arguments, all at once on the cluster; the results in order."""


def record_chunk(url: str, name: str, request: Request, market: Market, config: EngineConfig,
                 span: tuple[int, int] | None, points: list[dict[str, Any]]) -> int:
    """Record the ``points`` study ``name`` does not hold yet; returns how many were recorded."""
    found = studies.open_study(url, name, request.seed)
    return studies.record_points(found, request.space, request.objective, market, config, points, span, request.jobs)


def evaluate_sets(request: Request, market: Market, config: EngineConfig, span: tuple[int, int] | None,
                  param_sets: list[dict[str, Any]]) -> list[Evaluation]:
    """The evaluations of full parameter sets (nothing stored)."""
    return evaluate(request.space.spec, param_sets, market, config, span, jobs=request.jobs)


def fanned_search(url: str, fan: Fan, record: Callable[..., int] = record_chunk,
                  score: Callable[..., list[Evaluation]] = evaluate_sets, chunk: int = CHUNK) -> Search:
    """A ``Search`` that runs ``record`` (a grid's chunks) or ``score`` (sampled parameter sets) through ``fan``;
    ``url`` is the study storage the workers open."""

    def search(request: Request, found: optuna.Study, market: Market, config: EngineConfig,
               span: tuple[int, int] | None, bar: Progress | None) -> None:
        if request.grid:
            points, _ = request.space.grid()
            calls = [{"url": url, "name": found.study_name, "request": request, "market": market, "config": config,
                      "span": span, "points": points[start:start + chunk]} for start in range(0, len(points), chunk)]
            fan(record, calls)
            if bar is not None:
                bar(len(points))
            return

        def scored(param_sets: list[dict[str, Any]]) -> list[Evaluation]:
            calls = [{"request": request, "market": market, "config": config, "span": span, "param_sets": [one]}
                     for one in param_sets]
            return [evaluations[0] for evaluations in fan(score, calls)]

        studies.run_sampled(found, request.space, request.objective, market, config, request.trials, span,
                            request.jobs, bar, scored)

    return search


def client_fan(client: distributed.Client) -> Fan:
    """A ``Fan`` that submits plain functions to a Dask ``client`` (each retried when its worker is lost or it
    fails) and gathers their results: ``tradeforge optimize --dask-address``, without Prefect."""

    def fan(work: Callable[..., Any], calls: Sequence[Mapping[str, Any]]) -> list[Any]:
        futures = [client.submit(work, pure=False, retries=RETRIES, **call) for call in calls]
        return [future.result() for future in futures]

    return fan
