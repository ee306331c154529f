"""A study as an MLflow run of the experiment ``tradeforge-optimisation`` (through the one MLflow door,
``pipeline.models.registry``): the search as parameters, the best value, the backtest's value of the best trial
and the overfitting measures as metrics, the verdict as a tag, and the kept report files as artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.models.registry import ModelRegistry
from pipeline.research.store import OUT_OF_SAMPLE, REPORT, TRIALS

EXPERIMENT = "tradeforge-optimisation"


def study_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a report logged as metrics (None where a figure is undefined)."""
    overfit = report.get("overfitting", {})
    walk = report.get("walk_forward") or {}
    return {
        "best_value": report.get("best_value"), "backtest_value": report.get("backtest_value"),
        "trials": report.get("trials"), "completed": report.get("completed"), "failed": report.get("failed"),
        "seconds": report.get("seconds"), "search_seconds": report.get("search_seconds"),
        "deflated_sharpe": overfit.get("deflated_sharpe", {}).get("probability"),
        "pbo": overfit.get("pbo", {}).get("probability"),
        "out_of_sample_value": walk.get("out_of_sample_value"),
        **{f"best_{key}": value for key, value in (report.get("best_metrics") or {}).items()},
    }


def log_study(tracking_uri: str, report: dict[str, Any], folder: Path) -> str:
    """Log the study kept in ``folder`` as an MLflow run; returns the run id."""
    params = {"study": report["study"], "strategy": report["strategy"], "space": report["space"],
              "objective": report["objective"], "sampler": report["sampler"], "min_trades": report["min_trades"],
              "bars": report["bars"], "first": report["first"], "last": report["last"],
              **{f"fixed_{key}": value for key, value in report.get("fixed", {}).items()},
              **{f"best_{key}": value for key, value in report["best_params"].items()}}
    artifacts = {name: (folder / name).read_bytes() for name in (REPORT, TRIALS, OUT_OF_SAMPLE)
                 if (folder / name).exists()}
    tags = {"kind": "optimisation", "study": str(report["study"]), "stored": str(folder),
            "verdict": str(report.get("overfitting", {}).get("verdict", ""))}
    registry = ModelRegistry(tracking_uri)
    return registry.log_backtest_run(str(report["study"]), params, study_metrics(report), artifacts, tags,
                                     experiment=EXPERIMENT)
