"""``optimise`` (``pipeline.research.optimise``) on real BTC/USDT hourly bars with SQLite studies in ``tmp_path``:
the best trial re-run as a plain backtest gives the same value, the report and its overfitting section, the
walk-forward folds and the stitched out-of-sample curve, study names, refused requests, and the kept report
(``pipeline.research.store``)."""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest

from pipeline.domain import DataError, Timeframe
from pipeline.engine import EngineConfig, run
from pipeline.research import store, walkforward
from pipeline.research.objective import Objective
from pipeline.research.optimise import Request, optimise, study_name
from pipeline.research.space import Space, parse_space
from pipeline.research.study import finished, open_study
from pipeline.research.sweep import Market, evaluate
from pipeline.strategies import REGISTRY
from tests.conftest import shared_file

HOUR = Timeframe.parse("1h")
CONFIG = EngineConfig()
SMA = REGISTRY.spec("sma_cross")
RSI = REGISTRY.spec("rsi_reversion")
BARS = 4_000


@cache
def _hours() -> pd.DataFrame:
    return pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[60_000:60_000 + BARS] \
        .reset_index(drop=True)


def hours() -> pd.DataFrame:
    """4000 real BTC/USDT hourly bars (June–December 2024), a fresh copy per call."""
    return _hours().copy()


def market(bars: pd.DataFrame | None = None) -> Market:
    return Market.of(hours() if bars is None else bars, CONFIG, HOUR)


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/optuna.db"


def sma_grid() -> Space:
    return parse_space(SMA, ["fast=2:10:4", "slow=10:40:10"])


def grid_request(objective: str = "sharpe", **changes: Any) -> Request:
    return Request("sma_cross", sma_grid(), Objective.parse(objective), grid=True, **changes)


def sampled_request(objective: str = "sharpe", **changes: Any) -> Request:
    return Request("rsi_reversion", parse_space(RSI, ["lower=10:45", "upper=50:90"]), Objective.parse(objective),
                   **{"trials": 12, "seed": 3, **changes})


def probability(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


# --- the best trial and its backtest --------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["sharpe", "sharpe - 2 * max_drawdown"])
@pytest.mark.parametrize("grid", [True, False], ids=["grid", "sampled"])
def test_the_best_value_is_the_plain_backtests(tmp_path: Path, grid: bool, objective: str) -> None:
    request = grid_request(objective) if grid else sampled_request(objective)
    report = optimise(request, url(tmp_path), market(), CONFIG, HOUR)
    assert report["best_value"] == report["backtest_value"]
    assert report["backtest_matches"] is True
    assert report["objective"] == objective
    assert report["sampler"] == ("grid" if grid else "tpe(seed=3)")
    assert report["trials"] == (11 if grid else 12)
    assert report["completed"] + report["failed"] == report["trials"]
    assert report["completed"] >= 1
    best = report["best_params"]
    assert best == request.space.full(best)
    assert request.space.admits(best) is None
    values = [row["value"] for row in report["table"] if row["value"] is not None]
    assert report["best_value"] == max(values)
    row = next(row for row in report["table"] if row["number"] == report["best_trial"])
    assert row["value"] == report["best_value"]
    assert report["best_metrics"] == {key[2:]: value for key, value in row.items() if key.startswith("m_")}
    assert report["seconds"] >= report["search_seconds"] >= 0
    assert report["bars"] == BARS
    assert report["first"] == hours()["timestamp"].iloc[0].isoformat()
    assert report["last"] == hours()["timestamp"].iloc[-1].isoformat()


def test_the_report_of_a_grid_has_the_deflated_sharpe_and_the_pbo(tmp_path: Path) -> None:
    report = optimise(grid_request(), url(tmp_path), market(), CONFIG, HOUR)
    assert {"study", "storage", "best_params", "best_value", "trials", "seconds", "table", "overfitting"} <= set(report)
    assert report["storage"] == url(tmp_path)
    assert report["space"] == "fast=2:10:4 slow=10:40:10"
    assert len(report["table"]) == report["trials"] == 11
    section = report["overfitting"]
    dsr = section["deflated_sharpe"]
    assert probability(dsr["probability"])
    assert dsr["trials"] == report["completed"]
    pbo = section["pbo"]
    assert probability(pbo["probability"])
    assert pbo["trials"] == 11 and pbo["blocks"] == 16
    assert isinstance(section["verdict"], str) and section["verdict"]
    assert "walk_forward" not in report


def test_a_sampled_report_has_the_deflated_sharpe_and_no_pbo(tmp_path: Path) -> None:
    report = optimise(sampled_request(), url(tmp_path), market(), CONFIG, HOUR)
    assert probability(report["overfitting"]["deflated_sharpe"]["probability"])
    assert "pbo" not in report["overfitting"]


def test_the_same_request_again_resumes_its_study(tmp_path: Path) -> None:
    first = optimise(grid_request(), url(tmp_path), market(), CONFIG, HOUR)
    second = optimise(grid_request(), url(tmp_path), market(), CONFIG, HOUR)
    assert second["study"] == first["study"]
    assert second["trials"] == first["trials"] == 11
    assert second["best_params"] == first["best_params"]
    assert second["best_value"] == first["best_value"]


# --- walk-forward ---------------------------------------------------------------------------------------------------


def test_walk_forward_folds_and_the_stitched_out_of_sample_curve(tmp_path: Path) -> None:
    bars = hours()
    request, objective = grid_request(walk_forward=3), Objective.parse("sharpe")
    found_market = market(bars)
    report = optimise(request, url(tmp_path), found_market, CONFIG, HOUR)
    walk = report["walk_forward"]
    folds = walk["folds"]
    assert [fold["fold"] for fold in folds] == [1, 2, 3]

    position = {stamp.isoformat(): k for k, stamp in enumerate(bars["timestamp"])}

    def span(found: dict[str, str]) -> tuple[int, int]:
        return position[found["first"]], position[found["last"]] + 1

    in_samples = [span(fold["in_sample"]) for fold in folds]
    out_samples = [span(fold["out_of_sample"]) for fold in folds]
    assert in_samples[0][0] == 0
    for (is_first, is_end), (oos_first, oos_end) in zip(in_samples, out_samples, strict=True):
        assert is_first < is_end == oos_first < oos_end  # contiguous, not overlapping, in order
    for k in range(2):
        assert in_samples[k + 1] == out_samples[k]
    assert out_samples[0][0] == BARS // 4 and out_samples[-1][1] == BARS  # the last three quarters
    assert sum(end - first for first, end in out_samples) == 3 * BARS // 4
    plan = walkforward.folds(BARS, 3)
    assert [(f.in_sample, f.out_of_sample) for f in plan] == list(zip(in_samples, out_samples, strict=True))

    curve = walk["equity"]
    assert list(curve.columns) == ["timestamp", "equity"]
    assert len(curve) == sum(end - first for first, end in out_samples)
    assert curve["timestamp"].tolist() == bars["timestamp"].iloc[BARS // 4:].tolist()
    assert curve["equity"].iloc[0] <= CONFIG.cash
    assert walk["out_of_sample"]["bars"] == len(curve)
    assert walk["out_of_sample"]["first"] == folds[0]["out_of_sample"]["first"]
    assert walk["out_of_sample"]["last"] == folds[-1]["out_of_sample"]["last"]
    assert walk["out_of_sample_value"] == objective.value(walk["out_of_sample"])

    for fold, found_plan in zip(folds, plan, strict=True):
        chosen = fold["params"]
        # the out-of-sample value is the sweep's over that span (a fresh account), decisions on the whole frame
        scored = evaluate(SMA, [chosen], found_market, CONFIG, span=found_plan.out_of_sample)[0]
        assert fold["out_of_sample_metrics"] == scored.metrics
        assert fold["out_of_sample_value"] == objective.value(scored.metrics)
        # the in-sample value is the best of the fold's own study
        trials = finished(open_study(url(tmp_path), f"{report['study']}/wf3-{found_plan.number}", 7), sma_grid())
        best = trials.best()
        assert best is not None
        assert fold["in_sample_value"] == trials.values[best]
        assert chosen == trials.params[best]
        inside = evaluate(SMA, [chosen], found_market, CONFIG, span=found_plan.in_sample)[0]
        assert fold["in_sample_value"] == objective.value(inside.metrics)
    # the out-of-sample curve is one account trading each fold's choice over its block, position carried over
    decided = [SMA.build(fold["params"]).targets(found_market.frame) for fold in folds]
    first = plan[0].out_of_sample[0]
    aims = np.concatenate([d.exposure[f.out_of_sample[0]:f.out_of_sample[1]] for d, f in zip(decided, plan,
                                                                                             strict=True)])
    offsets = np.cumsum([0] + [len(d.reasons) for d in decided[:-1]])
    codes = np.concatenate([np.where(d.reason[f.out_of_sample[0]:f.out_of_sample[1]] >= 0,
                                     d.reason[f.out_of_sample[0]:f.out_of_sample[1]] + k, -1)
                            for d, f, k in zip(decided, plan, offsets, strict=True)])
    reasons = tuple(r for d in decided for r in d.reasons)
    account = run(bars.iloc[first:], aims, codes, reasons, CONFIG)
    assert curve["equity"].tolist() == account.equity["equity"].tolist()
    assert walk["out_of_sample"]["trades"] == len(account.trades)


def test_too_few_bars_for_the_folds_is_a_data_error(tmp_path: Path) -> None:
    short = market(hours().iloc[:70].reset_index(drop=True))
    request = Request("sma_cross", parse_space(SMA, ["fast=2:4"], {"slow": 10}), Objective.parse("return"),
                      grid=True, walk_forward=3)
    with pytest.raises(DataError, match=r"--walk-forward 3: 3 walk-forward folds need at least 80 bars; there are 70"):
        optimise(request, url(tmp_path), short, CONFIG, HOUR)


# --- study names ----------------------------------------------------------------------------------------------------


def test_the_study_name_is_stable_and_follows_what_decides_the_values() -> None:
    base = study_name(grid_request(), market(), CONFIG)
    assert base.startswith("sma_cross-")
    assert study_name(grid_request(), market(), CONFIG) == base
    # what does not change any trial's value keeps the name, so asking for more resumes the study
    assert study_name(grid_request(jobs=2, walk_forward=2), market(), CONFIG) == base
    assert study_name(sampled_request(trials=5), market(), CONFIG) == study_name(sampled_request(), market(), CONFIG)

    changed_close = hours()
    changed_close.loc[1234, "close"] += 1.0
    others = {
        "space": study_name(Request("sma_cross", parse_space(SMA, ["fast=2:10:4", "slow=10:50:10"]),
                                    Objective.parse("sharpe"), grid=True), market(), CONFIG),
        "fixed": study_name(Request("sma_cross", parse_space(SMA, ["fast=2:10:4"], {"slow": 40}),
                                    Objective.parse("sharpe"), grid=True), market(), CONFIG),
        "objective": study_name(grid_request("sortino"), market(), CONFIG),
        "min_trades": study_name(dataclasses.replace(grid_request(), objective=Objective.parse("sharpe", 5)),
                                 market(), CONFIG),
        "sampled": study_name(dataclasses.replace(grid_request(), grid=False), market(), CONFIG),
        "seed": study_name(grid_request(seed=8), market(), CONFIG),
        "fewer bars": study_name(grid_request(), market(hours().iloc[1:].reset_index(drop=True)), CONFIG),
        "other closes": study_name(grid_request(), market(changed_close), CONFIG),
        "costs": study_name(grid_request(), market(), EngineConfig(fee_bps=5.0)),
    }
    assert base not in others.values()
    assert len(set(others.values())) == len(others)


def test_a_named_study_is_used_as_named(tmp_path: Path) -> None:
    report = optimise(grid_request(study="desk-sma-2024"), url(tmp_path), market(), CONFIG, HOUR)
    assert report["study"] == "desk-sma-2024"
    assert study_name(grid_request(study="desk-sma-2024"), market(), CONFIG) == "desk-sma-2024"
    held = open_study(url(tmp_path), "desk-sma-2024", seed=7)
    assert len(held.get_trials()) == 11


# --- refusals -------------------------------------------------------------------------------------------------------


def test_a_search_whose_every_trial_fails_is_a_data_error(tmp_path: Path) -> None:
    request = Request("sma_cross", sma_grid(), Objective.parse("sharpe", min_trades=10_000), grid=True)
    with pytest.raises(DataError) as caught:
        optimise(request, url(tmp_path), market(), CONFIG, HOUR)
    message = str(caught.value)
    assert "no trial over the whole history has a value for sharpe with at least 10000 trades" in message
    assert "widen the space or lower --min-trades" in message
    sampled = sampled_request("sharpe / (trades - trades)")
    with pytest.raises(DataError, match=r"sharpe / \(trades - trades\): widen the space or lower --min-trades"):
        optimise(sampled, url(tmp_path), market(), CONFIG, HOUR)


@pytest.mark.parametrize(("changes", "says"), [
    ({"trials": 0}, "--trials must be 1 or more, got 0"),
    ({"trials": -3}, "--trials must be 1 or more, got -3"),
    ({"walk_forward": 1}, "--walk-forward must be 2 or more folds (0: none), got 1"),
    ({"walk_forward": -2}, "--walk-forward must be 2 or more folds (0: none), got -2"),
    ({"jobs": 0}, "--jobs must be 1 or more, got 0"),
    ({"jobs": -1}, "--jobs must be 1 or more, got -1"),
])
def test_refused_requests(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(DataError) as caught:
        Request("sma_cross", sma_grid(), Objective.parse("sharpe"), **changes)
    assert says in str(caught.value)


def test_a_grid_request_needs_no_trials() -> None:
    request = Request("sma_cross", sma_grid(), Objective.parse("sharpe"), grid=True, trials=0, walk_forward=2, jobs=1)
    assert (request.trials, request.walk_forward, request.jobs) == (0, 2, 1)


# --- the kept report ------------------------------------------------------------------------------------------------


def test_a_report_is_kept_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "research"
    report = optimise(grid_request(walk_forward=2, study="desk-wf"), url(tmp_path), market(), CONFIG, HOUR)
    folder = store.save_report(report, root)
    assert folder == root / "desk-wf"
    assert sorted(p.name for p in folder.iterdir()) == [store.OUT_OF_SAMPLE, store.REPORT, store.TRIALS]

    kept = json.loads((folder / store.REPORT).read_text())
    assert "table" not in kept
    assert "equity" not in kept["walk_forward"]
    assert kept == json.loads(json.dumps(store.document(report), default=str))
    assert kept["best_params"] == report["best_params"] and kept["best_value"] == report["best_value"]
    assert len(kept["walk_forward"]["folds"]) == 2
    assert "table" in report and "equity" in report["walk_forward"]  # the report itself is left whole

    trials = pd.read_parquet(folder / store.TRIALS)
    assert len(trials) == report["trials"] == 11
    assert trials["number"].tolist() == [row["number"] for row in report["table"]]
    assert {"number", "value", "fast", "slow", "m_sharpe", "m_trades"} <= set(trials.columns)
    assert trials["value"].tolist() == pytest.approx([row["value"] for row in report["table"]])

    curve = pd.read_parquet(folder / store.OUT_OF_SAMPLE)
    pd.testing.assert_frame_equal(curve, report["walk_forward"]["equity"], check_dtype=False)
    assert np.isfinite(curve["equity"]).all()

    listed = store.load_reports(root)
    assert len(listed) == 1
    assert listed[0]["folder"] == str(folder)
    assert listed[0]["study"] == "desk-wf"
    assert {key: value for key, value in listed[0].items() if key not in ("folder", "saved")} == kept


def test_reports_are_listed_newest_first_and_unreadable_ones_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "research"
    report = optimise(grid_request(), url(tmp_path), market(), CONFIG, HOUR)
    older = store.save_report({**report, "study": "older"}, root)
    newer = store.save_report({**report, "study": "newer"}, root)
    assert not (older / store.OUT_OF_SAMPLE).exists()
    os.utime(older / store.REPORT, (1_000_000_000, 1_000_000_000))
    os.utime(newer / store.REPORT, (2_000_000_000, 2_000_000_000))
    broken = root / "broken"
    broken.mkdir()
    (broken / store.REPORT).write_text("{not json")
    assert [r["study"] for r in store.load_reports(root)] == ["newer", "older"]
    again = store.save_report({**report, "study": "older", "best_value": -1.0}, root)
    assert again == older
    assert json.loads((older / store.REPORT).read_text())["best_value"] == -1.0
    assert json.loads((newer / store.REPORT).read_text())["best_value"] == report["best_value"]
    assert store.load_reports(tmp_path / "nothing here") == []


def test_a_named_study_of_another_search_is_refused_before_anything_is_mixed(tmp_path: Path) -> None:
    optimise(grid_request(study="desk"), url(tmp_path), market(), CONFIG, HOUR)
    held = len(open_study(url(tmp_path), "desk", 7).trials)
    for other in (grid_request("sortino", study="desk"),  # another objective
                  Request("sma_cross", parse_space(SMA, ["fast=2:10:4", "slow=10:50:10"]), Objective.parse("sharpe"),
                          grid=True, study="desk")):  # another space
        with pytest.raises(DataError, match=r"study 'desk' holds the trials of another search"):
            optimise(other, url(tmp_path), market(), CONFIG, HOUR)
    with pytest.raises(DataError, match=r"holds the trials of another search"):  # other bars
        optimise(grid_request(study="desk"), url(tmp_path), market(hours().iloc[:3_000]), CONFIG, HOUR)
    assert len(open_study(url(tmp_path), "desk", 7).trials) == held
    again = optimise(grid_request(study="desk"), url(tmp_path), market(), CONFIG, HOUR)  # the same search resumes
    assert again["trials"] == held


def test_the_folds_are_checked_before_anything_is_searched(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--walk-forward 40"):
        optimise(grid_request(walk_forward=40), url(tmp_path), market(hours().iloc[:500]), CONFIG, HOUR)
    assert not (tmp_path / "optuna.db").exists() or not optuna.get_all_study_names(url(tmp_path))


def test_a_fold_whose_trials_all_lack_a_value_is_traded_flat(tmp_path: Path) -> None:
    whole = optimise(grid_request(), url(tmp_path), market(), CONFIG, HOUR)
    least = max(row["m_trades"] for row in whole["table"])
    # the busiest trial over the whole history closes `least` trades; none closes as many in a quarter of it
    request = grid_request(walk_forward=3)
    request = Request(request.reference, request.space, Objective.parse("sharpe", least), grid=True,
                      walk_forward=3)
    report = optimise(request, f"sqlite:///{tmp_path}/other.db", market(), CONFIG, HOUR)
    folds = report["walk_forward"]["folds"]
    empty = [fold for fold in folds if fold["params"] is None]
    assert empty, "no fold lacked a valued trial: the test's premise failed"
    for fold in empty:
        assert fold["in_sample_value"] is None and fold["out_of_sample_value"] is None
        assert "widen the space or lower --min-trades" in fold["note"]
    assert len(report["walk_forward"]["equity"]) == 3 * BARS // 4


def test_a_seed_out_of_range_is_refused() -> None:
    for seed in (-1, 2**31):
        with pytest.raises(DataError, match=r"--seed must be between 0 and"):
            grid_request(seed=seed)


def test_a_report_without_walk_forward_drops_an_earlier_runs_curve(tmp_path: Path) -> None:
    root = tmp_path / "research"
    folder = store.save_report(optimise(grid_request(walk_forward=2, study="desk-wf"), url(tmp_path), market(),
                                        CONFIG, HOUR), root)
    assert (folder / store.OUT_OF_SAMPLE).exists()
    report = optimise(grid_request(study="desk-wf2"), url(tmp_path), market(), CONFIG, HOUR)
    assert store.save_report({**report, "study": "desk-wf"}, root) == folder
    assert not (folder / store.OUT_OF_SAMPLE).exists()
