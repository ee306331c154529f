"""A study is logged as an MLflow run of ``tradeforge-optimisation`` in a real MLflow store: the search as
parameters, the values and overfitting measures as metrics, the verdict as a tag, the kept files as artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

from pipeline.domain import Timeframe
from pipeline.engine import EngineConfig
from pipeline.models.registry import ModelRegistry
from pipeline.research.objective import Objective
from pipeline.research.optimise import Request, optimise
from pipeline.research.space import parse_space
from pipeline.research.store import save_report
from pipeline.research.sweep import Market
from pipeline.research.tracking import EXPERIMENT, log_study
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file

CONFIG = EngineConfig(fee_bps=10).without_breakers()
HOUR = Timeframe.parse("1h")


def test_a_study_is_an_mlflow_run_with_its_figures_and_files(tmp_path: Path) -> None:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-3_000:].reset_index(drop=True)
    spec = REGISTRY.spec("sma_cross")
    request = Request("sma_cross", parse_space(spec, ["fast=4:16:4", "slow=20:40:10"]), Objective.parse("sharpe"),
                      grid=True, walk_forward=2)
    report = optimise(request, f"sqlite:///{tmp_path}/optuna.db", Market.of(bars, CONFIG, HOUR), CONFIG, HOUR)
    folder = save_report(report, tmp_path / "research")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"

    run_id = log_study(tracking, report, folder)

    runs = ModelRegistry(tracking).backtest_runs(EXPERIMENT)
    assert [run["run_id"] for run in runs] == [run_id]
    run = runs[0]
    assert run["name"] == report["study"]
    assert run["params"]["space"] == "fast=4:16:4 slow=20:40:10"
    assert run["params"]["best_fast"] == str(report["best_params"]["fast"])
    assert run["metrics"]["best_value"] == report["best_value"]
    assert run["metrics"]["backtest_value"] == report["backtest_value"]
    assert run["metrics"]["pbo"] == report["overfitting"]["pbo"]["probability"]
    assert run["metrics"]["deflated_sharpe"] == report["overfitting"]["deflated_sharpe"]["probability"]
    assert run["metrics"]["out_of_sample_value"] == report["walk_forward"]["out_of_sample_value"]
    assert run["tags"]["verdict"] == report["overfitting"]["verdict"]
    mlflow.set_tracking_uri(tracking)
    kept = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "artifacts")))
    assert {path.name for path in kept.iterdir()} >= {"report.json", "trials.parquet", "out_of_sample.parquet"}
    assert json.loads((kept / "report.json").read_text())["best_value"] == report["best_value"]
    assert len(pd.read_parquet(kept / "trials.parquet")) == report["trials"]
