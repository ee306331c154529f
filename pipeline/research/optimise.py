"""``optimise``: one parameter study of a strategy over one history, what ``tradeforge optimize`` and the
``optimize`` flow run.

Over the whole history it searches the space (every grid point, or Optuna's sampled trials) into the study,
takes the best finished trial, re-runs it as a plain backtest (``pipeline.backtest.run.run_backtest``) and reports
both values (they are equal: the sweep shares the backtest's kernel and metric reductions), and measures
overfitting: the deflated Sharpe ratio of the best trial given every trial's Sharpe ratio, and, for a grid, the
probability of backtest overfitting from the trials' per-block returns. With ``walk_forward = K`` it then runs
the K folds of ``pipeline.research.walkforward``, one study per fold, and reports every fold's in-sample and
out-of-sample value (a fresh account per block) with the metrics of one account trading every fold's choice over
the out-of-sample blocks. A fold none of whose trials has a value chooses nothing: its block is traded flat.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from pipeline.backtest.run import run_backtest
from pipeline.domain import DataError, Instrument, Timeframe
from pipeline.engine import EngineConfig
from pipeline.research import overfitting, study, walkforward
from pipeline.research.objective import Objective
from pipeline.research.space import Space
from pipeline.research.sweep import Market, Progress, block_edges, evaluate

ProgressFactory = Callable[[str, int], Progress]
"""Given a label and a total, a callback told how many more are done (a progress bar)."""


@dataclass(frozen=True)
class Request:
    """What to search: the strategy's space, the objective, grid or ``trials`` sampled (seeded), the folds."""

    reference: str
    space: Space
    objective: Objective
    grid: bool = False
    trials: int = 100
    seed: int = 7
    walk_forward: int = 0
    jobs: int | None = None
    study: str | None = None

    def __post_init__(self) -> None:
        if not self.grid and self.trials < 1:
            raise DataError(f"--trials must be 1 or more, got {self.trials}")
        if self.walk_forward < 0 or self.walk_forward == 1:
            raise DataError(f"--walk-forward must be 2 or more folds (0: none), got {self.walk_forward}")
        if self.jobs is not None and self.jobs < 1:
            raise DataError(f"--jobs must be 1 or more, got {self.jobs}")
        if not 0 <= self.seed < 2**31:
            raise DataError(f"--seed must be between 0 and {2**31 - 1}, got {self.seed}")
        if self.study is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}", self.study):
            raise DataError(f"--study {self.study!r} is not a valid name: use letters, digits, '.', '_' and '-' "
                            "(at most 120, starting with a letter or digit)")


def search_identity(request: Request, market: Market, config: EngineConfig) -> str:
    """A digest of everything that decides a study's trial values: the strategy (and its source file's bytes for
    a trader's own), the space and fixed values, the objective, the sampler, the engine configuration, and every
    column of the strategy's frame with the bars per year and sessions."""
    spec = request.space.spec
    origin = Path(spec.origin) if spec.origin else None
    source = hashlib.sha256(origin.read_bytes()).hexdigest() if origin is not None and origin.is_file() else ""
    digest = hashlib.sha256(json.dumps(
        [request.reference, spec.name, spec.source, spec.origin, source, request.space.describe(),
         sorted(request.space.fixed.items()), request.objective.text, request.objective.min_trades, request.grid,
         request.seed, config.model_dump(), market.periods_per_year, list(market.frame.columns)],
        default=str, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(market.frame, index=False).to_numpy().tobytes())
    digest.update(np.ascontiguousarray(market.sessions).tobytes())
    return digest.hexdigest()


def study_name(request: Request, market: Market, config: EngineConfig, identity: str | None = None) -> str:
    """The study's name: ``request.study``, or one derived from everything that decides its trials' values
    (``identity``, else ``search_identity``), so running the same search again resumes it and a different one
    starts another."""
    if request.study:
        return request.study
    return f"{request.space.spec.name}-{(identity or search_identity(request, market, config))[:10]}"


Search = Callable[["Request", optuna.Study, Market, EngineConfig, "tuple[int, int] | None", "Progress | None"], None]
"""Runs a request's trials into a study over a span: here (``search_here``) or fanned out (the optimise flow)."""


def search_here(request: Request, found: optuna.Study, market: Market, config: EngineConfig,
                span: tuple[int, int] | None, bar: Progress | None) -> None:
    """The request's trials in this process, on its cores."""
    if request.grid:
        study.run_grid(found, request.space, request.objective, market, config, span, request.jobs, bar)
    else:
        study.run_sampled(found, request.space, request.objective, market, config, request.trials, span,
                          request.jobs, bar)


def _search(request: Request, name: str, url: str, market: Market, config: EngineConfig, searched: str,
            span: tuple[int, int] | None, bar: Progress | None, search: Search) -> study.Trials:
    found = study.open_study(url, name, request.seed)
    identity = f"{searched}/{span}"
    held = found.user_attrs.get("identity")
    if held is None:
        found.set_user_attr("identity", identity)
    elif held != identity:
        raise DataError(f"study {name!r} holds the trials of another search (its strategy, space, objective, "
                        "costs or bars differ): give another --study name")
    search(request, found, market, config, span, bar)
    return study.finished(found, request.space)


def _planned(request: Request) -> int:
    return len(request.space.grid()[0]) if request.grid else request.trials


def _best(trials: study.Trials, request: Request, where: str) -> tuple[int, dict[str, Any], float]:
    best = trials.best()
    if best is None:
        raise DataError(f"no trial {where} has a value for {request.objective.text}"
                        + (f" with at least {request.objective.min_trades} trades" if request.objective.min_trades
                           else "") + ": widen the space or lower --min-trades")
    return best, trials.params[best], float(trials.values[best])


def _overfitting(trials: study.Trials, best: int, rerun_returns: np.ndarray, market: Market,
                 grid: bool) -> dict[str, Any]:
    root = math.sqrt(market.periods_per_year)
    sharpes = np.array([m.get("sharpe") if m.get("sharpe") is not None else np.nan for m in trials.metrics],
                       dtype=np.float64) / root
    found: dict[str, Any] = {}
    dsr = pbo = None
    try:
        sharpe, skew, kurtosis = overfitting.return_moments(rerun_returns)
        dsr = overfitting.deflated_sharpe(sharpe, len(rerun_returns), skew, kurtosis, sharpes)
        found["deflated_sharpe"] = dsr.as_dict()
    except DataError as exc:
        found["deflated_sharpe"] = {"unavailable": str(exc)}
    if grid:
        usable = np.isfinite(trials.sums).all(axis=1) & np.isfinite(trials.squares).all(axis=1)
        counts = np.diff(block_edges(len(market), trials.sums.shape[1])).astype(np.float64)
        counts[0] -= 1  # the first bar has no return
        try:
            pbo = overfitting.probability_of_overfitting(trials.sums[usable], trials.squares[usable], counts)
            found["pbo"] = pbo.as_dict()
        except DataError as exc:
            found["pbo"] = {"unavailable": str(exc)}
    found["verdict"] = overfitting.verdict(dsr, pbo)
    return found


def optimise(request: Request, url: str, market: Market, config: EngineConfig, timeframe: Timeframe,
             instrument: Instrument | None = None, progress: ProgressFactory | None = None,
             search: Search = search_here) -> dict[str, Any]:
    """Run the study (and the walk-forward folds) and return the report (see the module documentation);
    ``search`` runs the trials (here by default)."""
    started = time.perf_counter()
    plan = _plan(request, market)  # refused before anything is searched
    identity = search_identity(request, market, config)  # hashes every column of the frame: once a study
    name = study_name(request, market, config, identity)
    bar = progress("trials", _planned(request)) if progress else None
    trials = _search(request, name, url, market, config, identity, None, bar, search)
    searched = time.perf_counter() - started
    best, params, value = _best(trials, request, "over the whole history")
    chosen = request.space.full(params)
    rerun = run_backtest(market.bars, request.space.spec.build(chosen), config, timeframe, instrument,
                         features=market.frame, params=chosen, reference=request.reference)
    rerun_value = request.objective.value(rerun.metrics)
    equity = rerun.engine.equity["equity"].to_numpy(dtype=np.float64)
    report: dict[str, Any] = {
        "study": name, "storage": study.redact(url), "strategy": request.reference,
        "space": request.space.describe(), "fixed": request.space.fixed, "objective": request.objective.text,
        "min_trades": request.objective.min_trades, "sampler": "grid" if request.grid else f"tpe(seed={request.seed})",
        "symbol": instrument.symbol if instrument is not None else None,
        "venue": instrument.venue if instrument is not None else None, "timeframe": str(timeframe),
        "config": config.model_dump(),
        "bars": len(market), "first": market.bars["timestamp"].iloc[0].isoformat(),
        "last": market.bars["timestamp"].iloc[-1].isoformat(),
        "trials": len(trials.values), "completed": int(np.isfinite(trials.values).sum()),
        "failed": int((~np.isfinite(trials.values)).sum()),
        "best_trial": trials.numbers[best], "best_params": chosen, "best_value": value,
        "best_metrics": trials.metrics[best],
        "backtest_value": rerun_value, "backtest_matches": rerun_value == value,
        "search_seconds": searched,
        "overfitting": _overfitting(trials, best, equity[1:] / equity[:-1] - 1.0, market, request.grid),
        "table": trials.table(),
    }
    if request.walk_forward:
        report["walk_forward"] = _walk_forward(request, plan, name, identity, url, market, config, progress,
                                               search)
    report["seconds"] = time.perf_counter() - started
    return report


def _plan(request: Request, market: Market) -> list[walkforward.Fold]:
    if not request.walk_forward:
        return []
    try:
        return walkforward.folds(len(market), request.walk_forward)
    except ValueError as exc:
        raise DataError(f"--walk-forward {request.walk_forward}: {exc}") from None


def _walk_forward(request: Request, plan: list[walkforward.Fold], name: str, identity: str, url: str,
                  market: Market, config: EngineConfig, progress: ProgressFactory | None,
                  search: Search) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    choices: list[tuple[walkforward.Fold, dict[str, Any] | None]] = []
    stamps = market.bars["timestamp"]
    for fold in plan:
        bar = progress(f"fold {fold.number + 1}/{len(plan)}", _planned(request)) if progress else None
        trials = _search(request, f"{name}/wf{request.walk_forward}-{fold.number}", url, market, config, identity,
                         fold.in_sample, bar, search)
        row: dict[str, Any] = {"fold": fold.number + 1, "in_sample": _range(stamps, fold.in_sample),
                               "out_of_sample": _range(stamps, fold.out_of_sample)}
        try:
            _, params, in_value = _best(trials, request, f"in fold {fold.number + 1}'s in-sample block")
        except DataError as exc:  # the fold chooses nothing: its block is traded flat
            rows.append({**row, "params": None, "in_sample_value": None, "out_of_sample_value": None,
                         "out_of_sample_metrics": None, "note": str(exc)})
            choices.append((fold, None))
            continue
        chosen = request.space.full(params)
        scored = evaluate(request.space.spec, [chosen], market, config, fold.out_of_sample, jobs=request.jobs)[0]
        rows.append({**row, "params": chosen, "in_sample_value": in_value,
                     "out_of_sample_value": request.objective.value(scored.metrics),
                     "out_of_sample_metrics": scored.metrics})
        choices.append((fold, chosen))
    curve, trades = walkforward.one_account(request.space.spec, choices, market, config)
    metrics = walkforward.stitched_metrics(curve, trades, market.periods_per_year)
    return {"folds": rows, "out_of_sample": metrics, "out_of_sample_value": request.objective.value(metrics),
            "equity": curve}


def _range(stamps: pd.Series, span: tuple[int, int]) -> dict[str, str]:
    return {"first": stamps.iloc[span[0]].isoformat(), "last": stamps.iloc[span[1] - 1].isoformat()}
