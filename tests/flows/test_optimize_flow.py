"""The ``optimize`` flow and ``tradeforge optimize --dask-address`` on real Dask clusters (``LocalCluster``, two
single-threaded worker processes) over real BTC/USDT 1h bars.

The flow's grid study on the shared lake finds the best value the in-process search finds, with every grid point
stored once; a worker process killed (SIGKILL) while the study runs — once the study holds a recorded chunk —
loses its chunk, which runs again elsewhere: the study completes with every grid point stored exactly once, each
with the value an in-process evaluation gives. The command line sends a grid and a sampled study to a cluster and
reports what it reports without one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import distributed
import pandas as pd
import pytest
from prefect.client.orchestration import get_client

from flows.optimize import optimize_flow  # Prefect's logging is set up here, not inside a command's run
from pipeline.engine import EngineConfig
from pipeline.research.fanout import CHUNK
from pipeline.research.inputs import lake_inputs
from pipeline.research.objective import Objective
from pipeline.research.optimise import Request, optimise
from pipeline.research.space import parse_space
from pipeline.research.study import open_study
from pipeline.research.sweep import evaluate
from pipeline.settings import Settings
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file
from tests.flows import flow_helpers
from tests.tradeforge_cli.cli_helpers import cli, data_dir, json_of
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.slow,  # Prefect's test harness and Dask clusters of worker processes
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

harness = flow_helpers.harness
workspace = flow_helpers.workspace
ingested = flow_helpers.ingested
__all__ = ["data_dir"]

SPACE = ["fast=2:50:2", "slow=10:200:5"]  # 878 admitted points: 14 chunks of CHUNK (64)
CONFIG = EngineConfig()


def _cluster() -> distributed.LocalCluster:
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")


@pytest.fixture
def cluster() -> Iterator[distributed.LocalCluster]:
    with _cluster() as started:
        yield started


@pytest.fixture
def lake_env(harness: None, ingested: list[dict[str, Any]], workspace: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, with a study storage and a model store of the test's own."""
    return flow_helpers._point_at(monkeypatch, workspace, optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                  mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def _request(study: str) -> Request:
    return Request("sma_cross", parse_space(REGISTRY.spec("sma_cross"), SPACE), Objective.parse("sharpe"), grid=True,
                   study=study)


def _run_flow(settings: Settings, study: str, address: str) -> dict[str, Any]:
    return optimize_flow(strategy="sma_cross", symbol="BTC/USDT", space=SPACE, grid=True, study=study,
                         dask_address=address)


def _trials_per_point(settings: Settings, study: str) -> Counter[tuple[int, int]]:
    found = open_study(settings.study_url, study, 7)
    return Counter((t.params["fast"], t.params["slow"]) for t in found.get_trials(deepcopy=False))


def _recorded(database: Path, study: str) -> int:
    """How many trials study ``study`` holds in the SQLite file ``database`` (0 before it exists)."""
    if not database.exists():
        return 0
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = connection.execute("SELECT COUNT(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ?",
                                 (study,)).fetchone()
    except sqlite3.OperationalError:  # the tables are still being created
        return 0
    finally:
        connection.close()
    return int(row[0])


def test_flow_on_a_cluster_finds_the_in_process_best_and_stores_every_point_once(
        lake_env: Settings, cluster: distributed.LocalCluster, tmp_path: Path) -> None:
    report = _run_flow(lake_env, "flow-grid", cluster.scheduler_address)
    request = _request("in-process")
    inputs = lake_inputs(lake_env, request, CONFIG, "BTC/USDT", "1h")
    assert len(inputs.market) == flow_helpers.BTC_BARS
    here = optimise(request, f"sqlite:///{tmp_path / 'here.db'}", inputs.market, CONFIG, inputs.timeframe,
                    inputs.instrument)
    points = request.space.grid()[0]
    assert report["trials"] == here["trials"] == len(points) == 878
    assert report["best_value"] == here["best_value"] and report["best_params"] == here["best_params"]
    assert report["backtest_matches"] is True and report["mlflow_run"]
    assert Path(report["stored"], "trials.parquet").exists()
    counts = _trials_per_point(lake_env, "flow-grid")
    assert set(counts) == {(p["fast"], p["slow"]) for p in points} and set(counts.values()) == {1}


def test_a_worker_killed_mid_study_loses_nothing_and_records_nothing_twice(
        lake_env: Settings, cluster: distributed.LocalCluster) -> None:
    database = Path(lake_env.study_url.removeprefix("sqlite:///"))
    with distributed.Client(cluster, set_as_default=False) as client, ThreadPoolExecutor(1) as pool:
        running = pool.submit(_run_flow, lake_env, "flow-kill", cluster.scheduler_address)
        wait_until(lambda: running.done() or _recorded(database, "flow-kill") >= CHUNK, "a recorded chunk")
        assert not running.done(), running.result()
        busy = [worker for worker, keys in client.processing().items() if keys]
        assert busy, "no worker holds a chunk any more: make the grid larger"
        pids = client.run(os.getpid)
        os.kill(pids[busy[0]], signal.SIGKILL)
        report = running.result()
        wait_until(lambda: len(client.run(os.getpid)) == 2, "the killed worker's restart")
        assert pids[busy[0]] not in client.run(os.getpid).values()
    request = _request("flow-kill")
    points = request.space.grid()[0]
    assert report["trials"] == len(points) and report["completed"] + report["failed"] == len(points)
    counts = _trials_per_point(lake_env, "flow-kill")
    assert set(counts) == {(p["fast"], p["slow"]) for p in points} and set(counts.values()) == {1}
    inputs = lake_inputs(lake_env, request, CONFIG, "BTC/USDT", "1h")
    evaluations = evaluate(request.space.spec, [request.space.full(p) for p in points], inputs.market, CONFIG)
    expected = {(p["fast"], p["slow"]): request.objective.value(e.metrics)
                for p, e in zip(points, evaluations, strict=True)}
    stored = {(t.params["fast"], t.params["slow"]): t.value
              for t in open_study(lake_env.study_url, "flow-kill", 7).get_trials(deepcopy=False)}
    assert stored == expected


@pytest.fixture
def bars_file(tmp_path: Path) -> Path:
    path = tmp_path / "btc_1h.parquet"
    pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-3_000:].to_parquet(path)
    return path


@pytest.mark.parametrize("search", [("--grid",), ("--trials", "20", "--seed", "3")], ids=["grid", "sampled"])
def test_cli_dask_address_reports_what_the_search_here_reports(data_dir: Path, bars_file: Path,
                                                               cluster: distributed.LocalCluster,
                                                               search: tuple[str, ...]) -> None:
    def optimize(study: str, *extra: str) -> dict[str, Any]:
        found = json_of(cli("optimize", "--strategy", "sma_cross", "--data", str(bars_file), "--space",
                            "fast=2:30:2", "--space", "slow=10:120:10", *search, "--study", study, "--no-mlflow",
                            "--json", *extra))
        assert isinstance(found, dict)
        return found

    here = optimize("here")
    there = optimize("there", "--dask-address", cluster.scheduler_address)
    for key in ("trials", "completed", "best_params", "best_value", "backtest_value"):
        assert there[key] == here[key], key


def test_the_optimize_deployment_has_no_schedule_and_a_typed_form(harness: None) -> None:
    from flows.serve import deployments

    built = {d.name: d for d in deployments(Settings(_env_file=None))}  # type: ignore[call-arg]
    built["optimize"].apply()

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_deployment_by_name("optimize/optimize")

    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        stored = runner.run(read())
    assert stored.schedules == [] and "tradeforge" in stored.tags
    form = stored.parameter_openapi_schema
    assert form["required"] == ["strategy", "symbol", "space"]
    assert list(form["properties"]) == [
        "strategy", "symbol", "space", "timeframe", "venue", "start", "end", "grid", "trials", "objective",
        "walk_forward", "min_trades", "seed", "study", "fee_bps", "slippage_bps", "max_position", "cash", "fill",
        "no_breakers", "breaker_cooldown_bars", "params", "dask_address"]
    assert form["properties"]["space"]["type"] == "array" and form["properties"]["trials"]["default"] == 100


def test_the_flow_on_its_own_local_cluster_samples_walks_forward_and_matches_the_search_here(
        lake_env: Settings, tmp_path: Path) -> None:
    report = optimize_flow(strategy="sma_cross", symbol="BTC/USDT", space=["fast=2:40", "slow=10:120"], trials=16,
                           walk_forward=2, study="flow-sampled", fill="close", breaker_cooldown_bars=24)
    config = EngineConfig(fill="close", breaker_cooldown_bars=24)
    request = Request("sma_cross", parse_space(REGISTRY.spec("sma_cross"), ["fast=2:40", "slow=10:120"]),
                      Objective.parse("sharpe"), trials=16, walk_forward=2, jobs=1, study="here-sampled")
    inputs = lake_inputs(lake_env, request, config, "BTC/USDT", "1h")
    here = optimise(request, f"sqlite:///{tmp_path / 'here.db'}", inputs.market, config, inputs.timeframe,
                    inputs.instrument)
    assert report["trials"] == here["trials"] == 16
    assert report["best_params"] == here["best_params"] and report["best_value"] == here["best_value"]
    assert report["backtest_matches"] is True
    assert [fold["params"] for fold in report["walk_forward"]["folds"]] == \
        [fold["params"] for fold in here["walk_forward"]["folds"]]
    assert report["walk_forward"]["out_of_sample_value"] == here["walk_forward"]["out_of_sample_value"]


def test_a_form_value_the_engine_cannot_honour_fails_the_run_naming_the_parameter(lake_env: Settings,
                                                                                  tmp_path: Path) -> None:
    state = optimize_flow(strategy="sma_cross", symbol="BTC/USDT", space=SPACE, grid=True, study="refused",
                          max_position=1.5, return_state=True)

    assert state.is_failed()
    assert "parameter max_position 1.5 is out of range: it must be > 0 and <= 1" in str(state.message)
    assert _recorded(tmp_path / "optuna.db", "refused") == 0  # refused before anything was searched
