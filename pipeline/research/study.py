"""Studies in Optuna's storage: every evaluated parameter set is a trial of a named study, so a killed run
resumes where it stopped and workers on several hosts (a PostgreSQL URL) share one study.

``open_study`` creates or loads a study (the SQLite file's folder is made; ``sqlite:`` studies use WAL).
``run_grid`` evaluates the grid points the study does not hold yet, in batches through the compiled sweep, and
records each batch as finished trials. ``run_sampled`` asks Optuna's sampler (TPE, seeded) for a few trials at a
time, evaluates them in one compiled pass and tells Optuna their values. A trial records the objective as its
value and the run's metrics and per-block return sums as its user attribute ``run``; a run whose objective is
undefined (or that closed fewer than the minimum trades) is a failed trial with the reason (``failed``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine.url import make_url

from pipeline.domain import DataError
from pipeline.engine import EngineConfig
from pipeline.research.objective import Objective
from pipeline.research.space import Space
from pipeline.research.sweep import Evaluation, Market, Progress, evaluate

RUN = "run"
"""The user attribute that holds a trial's run: its ``metrics`` and per-block return sums (``blocks``: sums, then
squares). One attribute, not two: each costs the storage a row per trial."""
RECORD_BATCH = 256  # grid points evaluated and recorded together
ASK_BATCH = 8  # sampled trials asked for and evaluated together
FINISHED = (TrialState.COMPLETE, TrialState.FAIL)


def redact(url: str) -> str:
    """A storage URL fit to show: without its password."""
    try:
        parsed = make_url(url)
    except Exception:
        return "(unreadable storage URL)"
    hidden = ("password", "secret", "token")
    secret = {key: "***" for key in parsed.query if any(word in key.lower() for word in hidden)}
    return parsed.update_query_dict(secret).render_as_string(hide_password=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url`` (a ``DataError`` naming the redacted URL when it cannot be opened)."""
    try:
        parsed = make_url(url)
    except Exception:
        raise DataError(f"the study storage URL {url.split('@')[-1]!r} is not a database URL (dialect://...)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        rdb = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:
        raise DataError(f"the study storage {redact(url)} cannot be opened: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(rdb.engine, "connect", _sqlite_pragmas)
        rdb.engine.dispose()
    return rdb


def open_study(url: str, name: str, seed: int) -> optuna.Study:
    """The study ``name`` in the storage at ``url``, created when new (maximising; TPE sampler seeded with
    ``seed``, or ``seed`` plus the trials it holds when resumed, so a resumed study does not repeat its first
    draws and stays reproducible)."""
    found = optuna.create_study(study_name=name, storage=storage(url), direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))
    held = len(found.get_trials(deepcopy=False))
    if held:  # a resumed study draws on from where it stopped, not the same first draws again
        found.sampler = optuna.samplers.TPESampler(seed=(seed + held) % 2**32, constant_liar=True)
    return found


def distributions(space: Space) -> dict[str, BaseDistribution]:
    found: dict[str, BaseDistribution] = {}
    for d in space.dimensions:
        if d.integer:
            found[d.name] = IntDistribution(int(d.low), int(d.high), step=int(d.step or 1))
        else:
            found[d.name] = FloatDistribution(d.low, d.high, step=d.step)
    return found


def _attributes(evaluation: Evaluation, objective: Objective) -> tuple[float | None, dict[str, Any]]:
    value = objective.value(evaluation.metrics)
    attrs: dict[str, Any] = {RUN: {"metrics": evaluation.metrics,
                                   "blocks": [evaluation.sums.tolist(), evaluation.squares.tolist()]}}
    if value is None:
        trades = evaluation.metrics.get("trades")
        attrs["failed"] = (f"closed {trades} trades, fewer than {objective.min_trades}"
                           if objective.min_trades and (trades or 0) < objective.min_trades
                           else f"{objective.text} is undefined for this run")
    return value, attrs


def _key(params: Mapping[str, Any], space: Space) -> tuple[Any, ...]:
    return tuple(params.get(d.name) for d in space.dimensions)


def run_grid(study: optuna.Study, space: Space, objective: Objective, market: Market, config: EngineConfig,
             span: tuple[int, int] | None = None, jobs: int | None = None, progress: Progress | None = None) -> int:
    """Evaluate and record every grid point ``study`` does not hold yet, a batch at a time (a killed run loses
    at most the batch it was evaluating); returns how many were evaluated."""
    points, _ = space.grid()
    held = held_points(study, space)
    if progress is not None and held:
        progress(sum(1 for point in points if _key(point, space) in held))
    return sum(record_points(study, space, objective, market, config, points[start:start + RECORD_BATCH], span,
                             jobs, progress, held) for start in range(0, len(points), RECORD_BATCH))


def held_points(study: optuna.Study, space: Space) -> set[tuple[Any, ...]]:
    """The parameter points of ``study``'s finished trials."""
    return {_key(t.params, space) for t in study.get_trials(deepcopy=False, states=FINISHED)}


def finished_trials(space: Space, objective: Objective, points: Sequence[Mapping[str, Any]],
                    evaluations: Sequence[Evaluation]) -> list[FrozenTrial]:
    """The evaluated ``points`` as finished trials to record (failed when the objective has no value)."""
    found = distributions(space)
    trials = []
    for point, evaluation in zip(points, evaluations, strict=True):
        value, attrs = _attributes(evaluation, objective)
        trials.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE if value is not None else TrialState.FAIL, value=value, params=dict(point),
            distributions=found, user_attrs=attrs))
    return trials


def record_points(study: optuna.Study, space: Space, objective: Objective, market: Market, config: EngineConfig,
                  points: Sequence[Mapping[str, Any]], span: tuple[int, int] | None = None, jobs: int | None = None,
                  progress: Progress | None = None, held: set[tuple[Any, ...]] | None = None) -> int:
    """Evaluate the ``points`` ``study`` does not hold yet and record them as finished trials; returns how many.

    Idempotent: a batch run again (a worker lost before it reported) records nothing twice."""
    known = held_points(study, space) if held is None else held
    todo = [dict(point) for point in points if _key(point, space) not in known]
    if not todo:
        return 0
    evaluations = evaluate(space.spec, [space.full(point) for point in todo], market, config, span, jobs=jobs,
                           progress=progress)
    study.add_trials(finished_trials(space, objective, todo, evaluations))
    known.update(_key(point, space) for point in todo)
    return len(todo)


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The parameter set Optuna's sampler proposes for ``trial`` over ``space``'s dimensions."""
    chosen: dict[str, Any] = {}
    for d in space.dimensions:
        if d.integer:
            chosen[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1))
        else:
            chosen[d.name] = trial.suggest_float(d.name, d.low, d.high, step=d.step)
    return chosen


Score = Callable[[list[dict[str, Any]]], list[Evaluation]]
"""Evaluates full parameter sets (here, or fanned out to a cluster); the evaluations in order."""


def run_sampled(study: optuna.Study, space: Space, objective: Objective, market: Market, config: EngineConfig,
                trials: int, span: tuple[int, int] | None = None, jobs: int | None = None,
                progress: Progress | None = None, score: Score | None = None) -> int:
    """Ask, evaluate and tell until ``study`` holds ``trials`` finished trials; returns how many were run.

    ``score`` evaluates the asked sets (default: here, with ``jobs`` cores). A sampled set the parameter model
    refuses (``slow`` not above ``fast``) is a failed trial with the reason."""
    def here(param_sets: list[dict[str, Any]]) -> list[Evaluation]:
        return evaluate(space.spec, param_sets, market, config, span, jobs=jobs)

    scorer = score or here
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if progress is not None and done:
        progress(min(done, trials))
    ran = 0
    while done < trials:
        asked = [study.ask() for _ in range(min(ASK_BATCH, trials - done))]
        try:
            chosen = [suggest(trial, space) for trial in asked]
            valid = [k for k, params in enumerate(chosen) if space.admits(params) is None]
            scored = scorer([space.full(chosen[k]) for k in valid]) if valid else []
        except BaseException:  # asked trials left running would steer the sampler: they failed
            for trial in asked:
                study.tell(trial, state=TrialState.FAIL)
            raise
        evaluations = dict(zip(valid, scored, strict=True))
        for k, trial in enumerate(asked):
            if k in evaluations:
                value, attrs = _attributes(evaluations[k], objective)
            else:
                value, attrs = None, {"failed": space.admits(chosen[k])}
            for name, attribute in attrs.items():
                trial.set_user_attr(name, attribute)
            study.tell(trial, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)
        done += len(asked)
        ran += len(asked)
        if progress is not None:
            progress(len(asked))
    return ran


@dataclass(frozen=True)
class Trials:
    """A study's finished trials as arrays: parameters, objective values (NaN: failed) and per-block sums."""

    params: list[dict[str, Any]]
    values: np.ndarray
    metrics: list[dict[str, Any]]
    sums: np.ndarray
    squares: np.ndarray
    numbers: list[int]

    def best(self) -> int | None:
        """The index of the best trial (the lowest trial number among equals), None when every one failed."""
        if not np.isfinite(self.values).any():
            return None
        return int(np.nanargmax(self.values))

    def table(self) -> list[dict[str, Any]]:
        """One row per trial: number, value, parameters and metrics (JSON-ready)."""
        return [{"number": number, "value": None if not np.isfinite(value) else float(value), **params,
                 **{f"m_{key}": metric for key, metric in metrics.items()}}
                for number, value, params, metrics in zip(self.numbers, self.values, self.params, self.metrics,
                                                          strict=True)]


def finished(study: optuna.Study, space: Space) -> Trials:
    """The finished trials of ``study`` whose parameters belong to ``space``, in trial order."""
    rows = [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if set(t.params) == {d.name for d in space.dimensions}]
    if not rows:
        raise DataError(f"study {study.study_name!r} holds no finished trial over {space.describe()}")
    runs = [t.user_attrs.get(RUN) or {} for t in rows]
    width = max((len(run.get("blocks", [[], []])[0]) for run in runs), default=0)
    sums = np.full((len(rows), width), np.nan)
    squares = np.full((len(rows), width), np.nan)
    for k, run in enumerate(runs):
        blocks = run.get("blocks")
        if blocks and len(blocks[0]) == width:
            sums[k], squares[k] = blocks
    values = np.array([t.value if t.state == TrialState.COMPLETE and t.value is not None else np.nan for t in rows])
    return Trials([dict(t.params) for t in rows], values, [dict(run.get("metrics", {})) for run in runs],
                  sums, squares, [t.number for t in rows])

