"""Studies in Optuna's storage (``pipeline.research.study``) on real BTC/USDT hourly bars: a grid is recorded once
and resumed, sampled studies are seeded, stop at the asked count and resume; failed trials say why; the finished
trials line up as arrays; storage URLs are shown without passwords. SQLite files in ``tmp_path``, and one study
shared through the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import psycopg
import pytest
from optuna.trial import TrialState

from pipeline.domain import DataError, Timeframe
from pipeline.engine import EngineConfig
from pipeline.research import study
from pipeline.research.objective import Objective
from pipeline.research.space import Space, parse_space
from pipeline.research.study import Trials, finished, open_study, redact, run_grid, run_sampled
from pipeline.research.sweep import Market, evaluate
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file

HOUR = Timeframe.parse("1h")
CONFIG = EngineConfig()
SMA = REGISTRY.spec("sma_cross")
SHARPE = Objective.parse("sharpe")
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@cache
def _hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[60_000:63_000].reset_index(drop=True)


def market() -> Market:
    """3000 real BTC/USDT hourly bars (June–October 2024), a fresh copy per call."""
    return Market.of(_hours().copy(), CONFIG, HOUR)


def url(tmp_path: Path, name: str = "optuna") -> str:
    return f"sqlite:///{tmp_path}/{name}.db"


def grid_space() -> Space:
    """12 points, one of which (fast 10, slow 10) the model refuses."""
    return parse_space(SMA, ["fast=2:10:4", "slow=10:40:10"])


def sampled_space() -> Space:
    """Ranges that overlap, so the sampler proposes sets the model refuses."""
    return parse_space(SMA, ["fast=2:30", "slow=3:60"])


def keys(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[int, int]]:
    return [(t.params["fast"], t.params["slow"]) for t in trials]


# --- grids ----------------------------------------------------------------------------------------------------------


def test_a_grid_records_every_admitted_point_exactly_once(tmp_path: Path) -> None:
    space = grid_space()
    points, refused = space.grid()
    assert (len(points), refused) == (11, 1)
    found = open_study(url(tmp_path), "grid", seed=7)
    told: list[int] = []
    assert run_grid(found, space, SHARPE, market(), CONFIG, progress=told.append) == 11
    assert sum(told) == 11
    trials = found.get_trials()
    assert len(trials) == 11
    assert keys(trials) == [(p["fast"], p["slow"]) for p in points]  # recorded in grid order
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(set(t.user_attrs) == {"run"} and set(t.user_attrs["run"]) == {"metrics", "blocks"} for t in trials)


def test_running_a_grid_again_evaluates_nothing_and_a_second_handle_loads_the_study(tmp_path: Path) -> None:
    space = grid_space()
    first = open_study(url(tmp_path), "grid", seed=7)
    assert run_grid(first, space, SHARPE, market(), CONFIG) == 11
    before = [(t.number, t.params, t.value) for t in first.get_trials()]
    again = open_study(url(tmp_path), "grid", seed=7)
    assert again._study_id == first._study_id
    assert [(t.number, t.params, t.value) for t in again.get_trials()] == before
    told: list[int] = []
    assert run_grid(again, space, SHARPE, market(), CONFIG, progress=told.append) == 0
    assert told == [11]  # the points already held count as done
    assert len(again.get_trials()) == len(first.get_trials()) == 11
    assert len(optuna.get_all_study_summaries(study.storage(url(tmp_path)))) == 1


def test_a_wider_grid_evaluates_only_its_new_points(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "grid", seed=7)
    assert run_grid(found, parse_space(SMA, ["fast=2:10:4", "slow=10:30:10"]), SHARPE, market(), CONFIG) == 8
    assert run_grid(found, grid_space(), SHARPE, market(), CONFIG) == 3  # slow 40 with fast 2, 6, 10
    recorded = keys(found.get_trials())
    assert len(recorded) == len(set(recorded)) == 11
    assert set(recorded) == {(p["fast"], p["slow"]) for p in grid_space().grid()[0]}


def test_recorded_values_are_the_sweeps_objective_of_each_point(tmp_path: Path) -> None:
    space, objective, bars = grid_space(), Objective.parse("sharpe - 2 * max_drawdown"), market()
    found = open_study(url(tmp_path), "values", seed=7)
    run_grid(found, space, objective, bars, CONFIG)
    points = [dict(t.params) for t in found.get_trials()]
    evaluations = evaluate(SMA, [space.full(p) for p in points], bars, CONFIG)
    for trial, evaluation in zip(found.get_trials(), evaluations, strict=True):
        assert trial.value == objective.value(evaluation.metrics)
        assert trial.user_attrs["run"]["metrics"] == evaluation.metrics
        assert trial.user_attrs["run"]["blocks"] == [evaluation.sums.tolist(), evaluation.squares.tolist()]


def test_a_grid_over_a_span_records_the_spans_values(tmp_path: Path) -> None:
    space, bars, span = grid_space(), market(), (1_000, 2_500)
    found = open_study(url(tmp_path), "span", seed=7)
    run_grid(found, space, SHARPE, bars, CONFIG, span=span)
    evaluations = evaluate(SMA, [space.full(dict(t.params)) for t in found.get_trials()], bars, CONFIG, span)
    assert [t.value for t in found.get_trials()] == [SHARPE.value(e.metrics) for e in evaluations]
    whole = evaluate(SMA, [space.full(dict(found.get_trials()[0].params))], bars, CONFIG)[0]
    assert found.get_trials()[0].value != SHARPE.value(whole.metrics)


def test_trials_below_min_trades_fail_saying_why(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "few", seed=7)
    objective = Objective.parse("sharpe", min_trades=10_000)
    assert run_grid(found, grid_space(), objective, market(), CONFIG) == 11
    trials = found.get_trials()
    assert all(t.state == TrialState.FAIL and t.value is None for t in trials)
    for trial in trials:
        closed = trial.user_attrs["run"]["metrics"]["trades"]
        assert trial.user_attrs["failed"] == f"closed {closed} trades, fewer than 10000"
    recorded = finished(found, grid_space())
    assert np.isnan(recorded.values).all()
    assert recorded.best() is None


def test_trials_whose_objective_is_undefined_fail_saying_why(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "undefined", seed=7)
    objective = Objective.parse("sharpe / (trades - trades)")
    run_grid(found, grid_space(), objective, market(), CONFIG)
    for trial in found.get_trials():
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["failed"] == "sharpe / (trades - trades) is undefined for this run"
        assert "metrics" in trial.user_attrs["run"]  # the run's figures are kept all the same


def test_a_grid_resume_does_not_retry_failed_points(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "few", seed=7)
    objective = Objective.parse("sharpe", min_trades=10_000)
    run_grid(found, grid_space(), objective, market(), CONFIG)
    assert run_grid(found, grid_space(), objective, market(), CONFIG) == 0
    assert len(found.get_trials()) == 11


# --- sampled studies ------------------------------------------------------------------------------------------------


def test_a_seeded_study_draws_the_same_sets_in_the_same_order_in_fresh_storages(tmp_path: Path) -> None:
    space, bars = sampled_space(), market()
    drawn = []
    for name in ("a", "b"):
        found = open_study(url(tmp_path, name), "sampled", seed=11)
        assert run_sampled(found, space, SHARPE, bars, CONFIG, trials=12) == 12
        drawn.append([(t.params, t.state, t.value) for t in found.get_trials()])
    assert drawn[0] == drawn[1]
    assert len({(p["fast"], p["slow"]) for p, _, _ in drawn[0]}) > 1
    other = open_study(url(tmp_path, "c"), "sampled", seed=12)
    run_sampled(other, space, SHARPE, bars, CONFIG, trials=12)
    assert [t.params for t in other.get_trials()] != [p for p, _, _ in drawn[0]]


def test_a_sampled_study_stops_at_exactly_the_asked_trials(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "sampled", seed=7)
    told: list[int] = []
    assert run_sampled(found, sampled_space(), SHARPE, market(), CONFIG, trials=10, progress=told.append) == 10
    assert told == [8, 2]  # asked in batches of study.ASK_BATCH
    trials = found.get_trials()
    assert len(trials) == 10
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)
    assert run_sampled(found, sampled_space(), SHARPE, market(), CONFIG, trials=10) == 0
    assert run_sampled(found, sampled_space(), SHARPE, market(), CONFIG, trials=4) == 0
    assert len(found.get_trials()) == 10


def test_a_partly_done_sampled_study_resumes(tmp_path: Path) -> None:
    space, bars = sampled_space(), market()
    first = open_study(url(tmp_path), "resumed", seed=7)
    assert run_sampled(first, space, SHARPE, bars, CONFIG, trials=5) == 5
    again = open_study(url(tmp_path), "resumed", seed=7)
    told: list[int] = []
    assert run_sampled(again, space, SHARPE, bars, CONFIG, trials=12, progress=told.append) == 7
    assert told[0] == 5 and sum(told) == 12
    trials = again.get_trials()
    assert [t.number for t in trials] == list(range(12))
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)


def test_a_resumed_sampled_study_does_not_repeat_its_first_draws(tmp_path: Path) -> None:
    space, bars = sampled_space(), market()
    run_sampled(open_study(url(tmp_path), "resumed", seed=7), space, SHARPE, bars, CONFIG, trials=5)
    again = open_study(url(tmp_path), "resumed", seed=7)
    run_sampled(again, space, SHARPE, bars, CONFIG, trials=10)
    trials = again.get_trials()
    assert [t.params for t in trials[5:10]] != [t.params for t in trials[:5]]


def test_sampled_sets_the_model_refuses_fail_with_the_reason(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "refused", seed=7)
    run_sampled(found, sampled_space(), SHARPE, market(), CONFIG, trials=16)
    trials = found.get_trials()
    refused = [t for t in trials if t.params["slow"] <= t.params["fast"]]
    assert refused, "the seeded sampler proposes at least one slow <= fast set over these ranges"
    for trial in refused:
        assert trial.state == TrialState.FAIL and trial.value is None
        assert trial.user_attrs == {"failed": sampled_space().admits(trial.params)}
        assert "'slow' must be greater than 'fast'" in trial.user_attrs["failed"]
    for trial in trials:
        if trial.params["slow"] > trial.params["fast"]:
            assert trial.state == TrialState.COMPLETE and "failed" not in trial.user_attrs


def test_sampled_values_are_the_sweeps_objective(tmp_path: Path) -> None:
    space, bars = sampled_space(), market()
    found = open_study(url(tmp_path), "sampled", seed=7)
    run_sampled(found, space, SHARPE, bars, CONFIG, trials=9)
    done = [t for t in found.get_trials() if t.state == TrialState.COMPLETE]
    evaluations = evaluate(SMA, [space.full(dict(t.params)) for t in done], bars, CONFIG)
    assert [t.value for t in done] == [SHARPE.value(e.metrics) for e in evaluations]


# --- finished trials as arrays --------------------------------------------------------------------------------------


def test_finished_arrays_line_up_with_the_studys_trials(tmp_path: Path) -> None:
    space = sampled_space()
    found = open_study(url(tmp_path), "arrays", seed=7)
    run_sampled(found, space, SHARPE, market(), CONFIG, trials=16)
    trials = found.get_trials()
    got = finished(found, space)
    assert got.numbers == [t.number for t in trials]
    assert got.params == [t.params for t in trials]
    assert got.metrics == [t.user_attrs.get("run", {}).get("metrics", {}) for t in trials]
    assert got.sums.shape == got.squares.shape == (16, 16)
    for k, trial in enumerate(trials):
        if trial.state == TrialState.COMPLETE:
            assert got.values[k] == trial.value
            assert got.sums[k].tolist() == trial.user_attrs["run"]["blocks"][0]
            assert got.squares[k].tolist() == trial.user_attrs["run"]["blocks"][1]
        else:
            assert np.isnan(got.values[k])
            assert np.isnan(got.sums[k]).all() and np.isnan(got.squares[k]).all()
    best = got.best()
    assert best is not None
    assert got.values[best] == max(t.value for t in trials if t.value is not None)
    table = got.table()
    assert [row["number"] for row in table] == got.numbers
    assert all((row["value"] is None) == np.isnan(value) for row, value in zip(table, got.values, strict=True))
    assert all(row["m_sharpe"] == trial.user_attrs["run"]["metrics"]["sharpe"]
               for row, trial in zip(table, trials, strict=True) if trial.state == TrialState.COMPLETE)


def test_finished_leaves_out_trials_of_another_space_and_refuses_an_empty_study(tmp_path: Path) -> None:
    found = open_study(url(tmp_path), "mixed", seed=7)
    with pytest.raises(DataError, match=r"study 'mixed' holds no finished trial over fast=2:10:4 slow=10:40:10"):
        finished(found, grid_space())
    one = parse_space(SMA, ["fast=2:6:2"], {"slow": 30})
    run_grid(found, one, SHARPE, market(), CONFIG)
    run_grid(found, grid_space(), SHARPE, market(), CONFIG)
    assert len(finished(found, one).numbers) == 3
    assert finished(found, grid_space()).numbers == list(range(3, 14))


def test_best_takes_the_lowest_index_among_equal_values() -> None:
    def trials(values: list[float]) -> Trials:
        n = len(values)
        return Trials([{"x": k} for k in range(n)], np.array(values), [{} for _ in range(n)], np.zeros((n, 2)),
                      np.zeros((n, 2)), list(range(n)))

    assert trials([1.0, 3.0, np.nan, 3.0, 2.0]).best() == 1
    assert trials([np.nan, 0.5, 0.5]).best() == 1
    assert trials([-2.0, -1.0, -1.0]).best() == 1
    assert trials([np.nan, np.nan]).best() is None


# --- storage --------------------------------------------------------------------------------------------------------


def test_a_sqlite_study_makes_its_folder_and_uses_wal(tmp_path: Path) -> None:
    where = tmp_path / "deep" / "er" / "studies.db"
    found = open_study(f"sqlite:///{where}", "wal", seed=7)
    run_grid(found, parse_space(SMA, ["fast=2:3"], {"slow": 30}), SHARPE, market(), CONFIG)
    assert where.exists()
    with sqlite3.connect(where) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_redact_hides_the_password() -> None:
    assert redact("postgresql+psycopg://trader:s3cr3t@db.example:5432/studies") == \
        "postgresql+psycopg://trader:***@db.example:5432/studies"
    assert redact("sqlite:////tmp/x/optuna.db") == "sqlite:////tmp/x/optuna.db"
    assert redact("postgresql+psycopg://postgres@127.0.0.1:5432/test") == PG_URL
    assert redact("not a url") == "(unreadable storage URL)"


def test_a_storage_that_cannot_be_opened_is_a_data_error_without_the_password() -> None:
    with pytest.raises(DataError) as caught:
        open_study("postgresql+psycopg://u:secret@127.0.0.1:1/x", "nowhere", seed=7)
    message = str(caught.value)
    assert "secret" not in message
    assert "postgresql+psycopg://u:***@127.0.0.1:1/x" in message
    assert "cannot be opened" in message


def test_a_storage_url_that_is_not_a_url_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"'not a url' is not a database URL"):
        study.storage("not a url")


# --- PostgreSQL -----------------------------------------------------------------------------------------------------


@cache
def postgres_error() -> str | None:
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=2) as connection:
            connection.execute("SELECT 1")
    except Exception as error:
        return str(error).strip() or type(error).__name__
    return None


@pytest.fixture
def pg_study_name() -> Iterator[str]:
    """A fresh study name on the real PostgreSQL, deleted afterwards."""
    error = postgres_error()
    if error is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    name = f"test-{uuid.uuid4().hex}"
    yield name
    pg = study.storage(PG_URL)
    optuna.delete_study(study_name=name, storage=pg)
    pg.engine.dispose()


def test_two_handles_on_postgresql_share_one_study(pg_study_name: str) -> None:
    one = open_study(PG_URL, pg_study_name, seed=7)
    two = open_study(PG_URL, pg_study_name, seed=7)
    assert two._study_id == one._study_id
    assert two.get_trials() == []
    space = grid_space()
    assert run_grid(one, space, SHARPE, market(), CONFIG) == 11
    seen = two.get_trials()
    assert keys(seen) == [(p["fast"], p["slow"]) for p in space.grid()[0]]
    assert [t.value for t in seen] == [t.value for t in one.get_trials()]
    assert run_grid(two, space, SHARPE, market(), CONFIG) == 0  # the other handle's trials count as done
    assert finished(two, space).numbers == finished(one, space).numbers


def test_redact_hides_a_password_given_in_the_query() -> None:
    shown = redact("postgresql+psycopg://trader@db.example/studies?password=s3cr3t&sslmode=require")
    assert "s3cr3t" not in shown and "sslmode=require" in shown
