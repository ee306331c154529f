"""Kept parameter studies (``<data_dir>/research/<study>/``, written by ``tradeforge optimize`` through
:mod:`pipeline.research.store`): the studies there are, one study's headline numbers, trials, walk-forward folds
and stitched out-of-sample curve, and what the dashboard draws from them. Read-only: nothing here runs a trial.

``studies`` lists the reports as ``store.load_reports`` does (newest first), and also says which folders it
skipped and why (an unreadable ``report.json``, one that is not a study's report). Fields are read defensively:
a report written by an older version, or edited by hand, gives None for what it lacks, never an exception.

Parameter importance
--------------------
``importance(trials, parameters)`` is a one-way analysis of variance of the objective, one parameter at a time,
over the trials that have a value (failed trials are left out):

* the trials are grouped by the parameter's value (``levels``); a parameter with more than ``MAX_LEVELS``
  distinct values among them (a float sampled by TPE) is first cut into ``min(MAX_LEVELS, ceil(sqrt(N)))``
  bins of about equal trial counts (quantiles), each bin standing for the mean of its values;
* with ``N`` trials, ``k`` groups, ``m`` the mean value and ``n_g``, ``m_g`` a group's size and mean value:
  ``SS_total = sum (v - m)^2``, ``SS_between = sum_g n_g * (m_g - m)^2``, ``SS_within = SS_total - SS_between``;
* ``eta2 = SS_between / SS_total``, the share of the value's variance that the parameter's per-value means
  explain (eta squared);
* ``epsilon2 = (SS_between - (k - 1) * SS_within / (N - k)) / SS_total`` clipped at 0, the same share less what
  ``k`` groups of random values would explain on average (epsilon squared): eta2 grows with the number of
  levels, and is 1 whenever every trial has a level of its own; ``None`` when ``N <= k``;
* both are 0 for a parameter with one level, and ``None`` when ``SS_total`` is 0 (every value the same) or there
  are fewer than 2 trials with a value.

Each share is marginal: it ignores the other parameters, so shares need not add up to 1 (parameters interact),
and in a sampled (TPE) study, whose parameters are not drawn independently, one parameter's share may hold part
of another's. On a full grid every combination appears once and the comparison is balanced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.domain import DataError, Timeframe
from pipeline.research.store import OUT_OF_SAMPLE, REPORT, TRIALS

MAX_LEVELS = 20
FIXED_COLUMNS = ("number", "value")
METRIC_PREFIX = "m_"
IMPORTANCE_COLUMNS = ("parameter", "eta2", "epsilon2", "levels", "trials")
FOLD_COLUMNS = ("fold", "params", "in_sample_value", "out_of_sample_value", "in_sample_first", "in_sample_last",
                "out_of_sample_first", "out_of_sample_last")


def research_root(data_dir: Path) -> Path:
    return data_dir / "research"


# ------------------------------------------------------------------------------------------------ the list


@dataclass(frozen=True)
class Listing:
    """The kept studies, newest first (each report with its ``folder`` and ``saved``: the epoch seconds of its
    ``report.json``), and the folders skipped as (folder, why)."""

    studies: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def studies(root: Path) -> Listing:
    """Every kept study under ``root`` (see :class:`Listing`); an unreadable report is skipped, with the reason."""
    found: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(root.glob(f"*/{REPORT}")):
        try:
            report = json.loads(path.read_text())
            saved = path.stat().st_mtime
        except (OSError, ValueError) as exc:
            skipped.append((str(path.parent), f"{REPORT} cannot be read: {type(exc).__name__}: {exc}"))
            continue
        if not isinstance(report, dict) or not isinstance(report.get("study"), str):
            skipped.append((str(path.parent), f"{REPORT} is not a study's report (no study name)"))
            continue
        found.append({**report, "folder": str(path.parent), "saved": saved})
    found.sort(key=lambda r: (-float(r["saved"]), str(r["study"])))
    return Listing(found, skipped)


def label(report: Mapping[str, Any]) -> str:
    """How a study is named in a picker: study, strategy, objective and when its report was kept (UTC)."""
    saved = report.get("saved")
    when = (datetime.fromtimestamp(float(saved), UTC).strftime("%Y-%m-%d %H:%M UTC")
            if isinstance(saved, int | float) else "-")
    return " · ".join([str(report.get("study", "?")), str(report.get("strategy", "?")),
                       str(report.get("objective", "?")), when])


# ------------------------------------------------------------------------------------------------ one study


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: object) -> int | None:
    number = _number(value)
    return None if number is None or not number.is_integer() else int(number)


def _section(report: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    found: object = report
    for key in path:
        found = found.get(key) if isinstance(found, Mapping) else None
    return found if isinstance(found, Mapping) else {}


@dataclass(frozen=True)
class Headline:
    """A study's headline numbers (None: the report does not have it) and its verdict."""

    best_value: float | None
    backtest_value: float | None
    backtest_matches: bool | None
    trials: int | None
    completed: int | None
    failed: int | None
    deflated_sharpe: float | None
    """The probability that the best trial's true Sharpe ratio beats the best of as many luck-only trials."""
    pbo: float | None
    """The probability of backtest overfitting (a grid study only)."""
    verdict: str | None
    unavailable: dict[str, str]
    """Measures the study could not compute, with the reason (``deflated_sharpe``, ``pbo``)."""


def headline(report: Mapping[str, Any]) -> Headline:
    overfitting = _section(report, "overfitting")
    unavailable = {name: str(overfitting[name]["unavailable"]) for name in ("deflated_sharpe", "pbo")
                   if isinstance(overfitting.get(name), Mapping) and "unavailable" in overfitting[name]}
    matches = report.get("backtest_matches")
    verdict = overfitting.get("verdict")
    return Headline(
        best_value=_number(report.get("best_value")), backtest_value=_number(report.get("backtest_value")),
        backtest_matches=matches if isinstance(matches, bool) else None, trials=_count(report.get("trials")),
        completed=_count(report.get("completed")), failed=_count(report.get("failed")),
        deflated_sharpe=_number(_section(overfitting, "deflated_sharpe").get("probability")),
        pbo=_number(_section(overfitting, "pbo").get("probability")),
        verdict=verdict if isinstance(verdict, str) and verdict else None, unavailable=unavailable)


def trials(folder: Path) -> pd.DataFrame:
    """The study's trials (``number, value``, one column per searched parameter, ``m_<metric>`` columns) in
    trial order; a failed trial's value is NaN. A ``DataError`` when the table cannot be read."""
    try:
        frame = pd.read_parquet(folder / TRIALS)
    except (OSError, ValueError) as exc:
        raise DataError(f"the trials of the study in {folder} cannot be read: {type(exc).__name__}: {exc}") from None
    missing = [name for name in FIXED_COLUMNS if name not in frame.columns]
    if missing:
        raise DataError(f"the trials of the study in {folder} have no column {', '.join(missing)}")
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(np.float64)
    return frame.sort_values("number", kind="stable", ignore_index=True)


def parameters(table: pd.DataFrame) -> list[str]:
    """The searched parameters: the trials' columns other than ``number``, ``value`` and the metrics."""
    return [str(c) for c in table.columns if c not in FIXED_COLUMNS and not str(c).startswith(METRIC_PREFIX)]


def out_of_sample(folder: Path) -> pd.DataFrame | None:
    """The stitched out-of-sample equity curve (``timestamp, equity``) of a walk-forward study, None without
    one; a ``DataError`` when it cannot be read."""
    path = folder / OUT_OF_SAMPLE
    if not path.exists():
        return None
    try:
        frame = pd.read_parquet(path, columns=["timestamp", "equity"])
    except (OSError, ValueError) as exc:
        raise DataError(f"the out-of-sample curve in {folder} cannot be read: {type(exc).__name__}: {exc}") from None
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def folds(report: Mapping[str, Any]) -> pd.DataFrame:
    """One row per walk-forward fold (see ``FOLD_COLUMNS``; ``params`` as ``name=value`` text), empty without."""
    rows = []
    listed = _section(report, "walk_forward").get("folds")
    for fold in listed if isinstance(listed, list) else []:
        if not isinstance(fold, Mapping):
            continue
        params = fold.get("params")
        row: dict[str, Any] = {
            "fold": _count(fold.get("fold")),
            "params": ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, Mapping) else "",
            "in_sample_value": _number(fold.get("in_sample_value")),
            "out_of_sample_value": _number(fold.get("out_of_sample_value"))}
        for part in ("in_sample", "out_of_sample"):
            span = _section(fold, part)
            for end in ("first", "last"):
                row[f"{part}_{end}"] = _text(span.get(end))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    for name in ("in_sample_value", "out_of_sample_value"):
        frame[name] = frame[name].astype(np.float64)
    for name in FOLD_COLUMNS[4:]:
        frame[name] = pd.to_datetime(frame[name], utc=True, errors="coerce")
    return frame


def out_of_sample_value(report: Mapping[str, Any]) -> float | None:
    """The objective over the stitched out-of-sample curve of a walk-forward study."""
    return _number(_section(report, "walk_forward").get("out_of_sample_value"))


# ------------------------------------------------------------------------------------------------ analysis


def best_so_far(table: pd.DataFrame) -> pd.DataFrame:
    """``number, value, best``: each trial's value and the best value of it and the trials before it (failed
    trials have no value and keep the best so far)."""
    ordered = table.sort_values("number", kind="stable", ignore_index=True)
    values = ordered["value"].astype(np.float64)
    return pd.DataFrame({"number": ordered["number"], "value": values, "best": values.cummax().ffill()})


def levels(values: pd.Series) -> pd.Series:
    """The groups of a parameter's values (see the module documentation): the values themselves, or, beyond
    ``MAX_LEVELS`` distinct ones, quantile bins each standing for the mean of its values."""
    if values.nunique() <= MAX_LEVELS:
        return values
    bins = min(MAX_LEVELS, math.ceil(math.sqrt(len(values))))
    codes = pd.qcut(values.rank(method="first"), q=bins, labels=False)
    return values.astype(np.float64).groupby(codes).transform("mean")


def _valued(table: pd.DataFrame) -> pd.DataFrame:
    kept: pd.DataFrame = table.loc[np.isfinite(table["value"].to_numpy(dtype=np.float64))]
    return kept


def importance(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per parameter: ``eta2``, ``epsilon2`` (see the module documentation), its ``levels`` (groups) and the
    ``trials`` with a value; sorted by ``eta2``, largest first."""
    valued = _valued(table)
    values = valued["value"].to_numpy(dtype=np.float64)
    n = len(values)
    total = float(((values - values.mean()) ** 2).sum()) if n else 0.0
    rows = []
    for name in names:
        groups = levels(valued[name])
        k = int(groups.nunique(dropna=False))
        eta = epsilon = None
        if n >= 2 and total > 0.0:
            stats = pd.DataFrame({"g": groups.to_numpy(), "v": values}).groupby("g", dropna=False)["v"] \
                .agg(["size", "mean"])
            between = float((stats["size"] * (stats["mean"] - values.mean()) ** 2).sum())
            eta = min(between / total, 1.0)
            if n > k:
                within = max(total - between, 0.0)
                epsilon = max((between - (k - 1) * within / (n - k)) / total, 0.0)
        rows.append({"parameter": name, "eta2": eta, "epsilon2": epsilon, "levels": k, "trials": n})
    frame = pd.DataFrame(rows, columns=list(IMPORTANCE_COLUMNS))
    for column in ("eta2", "epsilon2"):
        frame[column] = frame[column].astype(np.float64)
    return frame.sort_values("eta2", ascending=False, kind="stable", ignore_index=True)


def heatmap(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The mean value of the trials with a value per cell of two parameters (their ``levels``): rows are ``y``'s
    levels, columns ``x``'s, both ascending; a cell no trial reached is NaN."""
    if x == y:
        raise DataError(f"the heatmap needs two different parameters, got {x!r} twice")
    valued = _valued(table)
    cells = pd.DataFrame({x: levels(valued[x]), y: levels(valued[y]), "value": valued["value"]})
    grid: pd.DataFrame = cells.pivot_table(index=y, columns=x, values="value", aggfunc="mean")
    return grid.sort_index(axis=0).sort_index(axis=1)


# ------------------------------------------------------------------------------------------------ relaunch


@dataclass(frozen=True)
class Relaunch:
    """What an ad hoc backtest of a study's best parameters needs from its report: the strategy and the
    parameters, the series when the report names it (a study run on a file of bars does not) and its span."""

    strategy: str
    params: dict[str, str | float]
    symbol: str | None
    timeframe: str | None
    venue: str | None
    start: str | None
    end: str | None


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _param(name: str, value: object) -> str | float:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise DataError(f"the study's best parameter {name!r} is {value!r}, which is not a value to backtest")


def relaunch(report: Mapping[str, Any]) -> Relaunch:
    """The ad hoc backtest of ``report``'s best parameters; a ``DataError`` naming the field the report lacks
    (``strategy``, ``best_params``) or a best parameter that cannot be sent."""
    strategy = _text(report.get("strategy"))
    if strategy is None:
        raise DataError("the study's report names no strategy")
    best = report.get("best_params")
    if not isinstance(best, Mapping) or not best:
        raise DataError("the study's report has no best parameters (best_params)")
    timeframe, last = _text(report.get("timeframe")), _text(report.get("last"))
    return Relaunch(strategy=strategy, params={str(k): _param(str(k), v) for k, v in best.items()},
                    symbol=_text(report.get("symbol")), timeframe=timeframe, venue=_text(report.get("venue")),
                    start=_text(report.get("first")), end=_after(last, timeframe))


def _after(last: str | None, timeframe: str | None) -> str | None:
    """The end (exclusive) of a span whose last bar opened at ``last``: one bar later when the timeframe is
    known, else ``last`` itself."""
    if last is None or timeframe is None:
        return last
    try:
        return (pd.Timestamp(last) + pd.Timedelta(seconds=Timeframe.parse(timeframe).seconds)).isoformat()
    except (DataError, ValueError):
        return last
