"""The Optimisation page under Streamlit's AppTest, on parameter studies really run by
``pipeline.research.optimise`` over real BTC/USDT hourly bars and kept by ``pipeline.research.store`` (a grid
study with three walk-forward folds and a sampled TPE study), pointed at through TRADEFORGE_DATA_DIR; and the
report queries behind it (``pipeline.reports.research``), checked against hand-computed numbers."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboards import common
from pipeline.backtest.adhoc import AdhocRequest
from pipeline.domain import DataError, Timeframe
from pipeline.engine import EngineConfig
from pipeline.reports import research
from pipeline.research import store
from pipeline.research.objective import Objective
from pipeline.research.optimise import Request, optimise
from pipeline.research.space import parse_space
from pipeline.research.sweep import Market
from pipeline.retry import RetryPolicy
from pipeline.services import prefect_api
from pipeline.strategies import REGISTRY
from tests.conftest import REPO, shared_file
from tests.waiting import wait_until

APP = str(REPO / "dashboards" / "app.py")
HOUR = Timeframe.parse("1h")
CONFIG = EngineConfig()
SILENT_PREFECT = "http://127.0.0.1:9/api"
SAVED = 1_780_000_000.0  # the grid study's report is kept at this time, the sampled one a minute later


@dataclass(frozen=True)
class Kept:
    """A data dir holding two kept studies, and their reports as ``optimise`` returned them."""

    data_dir: Path
    grid: dict[str, Any]
    sampled: dict[str, Any]

    def folder(self, report: dict[str, Any], data_dir: Path | None = None) -> str:  # by default, the original's
        return str(store.folder_of(research.research_root(data_dir or self.data_dir), report["study"]))


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Kept:
    base = tmp_path_factory.mktemp("studies")
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[60_000:63_000].reset_index(drop=True)
    market, url, sma = Market.of(bars, CONFIG, HOUR), f"sqlite:///{base / 'optuna.db'}", REGISTRY.spec("sma_cross")
    grid = optimise(Request("sma_cross", parse_space(sma, ["fast=2:14:4", "slow=10:50:10"]), Objective.parse("sharpe"),
                            grid=True, walk_forward=3), url, market, CONFIG, HOUR)
    sampled = optimise(Request("sma_cross", parse_space(sma, ["fast=2:30:2", "slow=10:60:5"]),
                               Objective.parse("sharpe - 2 * max_drawdown"), trials=24, seed=5), url, market, CONFIG,
                       HOUR)
    for report, at in ((grid, SAVED), (sampled, SAVED + 60)):
        folder = store.save_report(report, research.research_root(base / "data"))
        os.utime(folder / store.REPORT, (at, at))
    return Kept(base / "data", grid, sampled)


@pytest.fixture
def data_dir(kept: Kept, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the kept studies (a test may add broken ones), which the app then reads."""
    copy = Path(shutil.copytree(kept.data_dir, tmp_path / "data"))
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(copy))
    monkeypatch.setenv("TRADEFORGE_PREFECT_API_URL", SILENT_PREFECT)
    return copy


def _page(folder: str | None = None) -> AppTest:
    """The Optimisation page, on the study kept in ``folder`` when given."""
    app = AppTest.from_file(APP, default_timeout=90)
    app.run()
    app.switch_page("views/optimisation.py").run()
    if folder is not None:
        app.selectbox(key="optimisation_study").select(folder).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def _texts(app: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "info", "success", "error", "warning")
                     for e in getattr(app, kind))


def _table(app: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in app.dataframe if column in d.value.columns)


def _trace(app: AppTest, name: str) -> dict[str, Any]:
    """The first trace named (or, failing that, of the type) ``name`` in the page's Plotly charts."""
    traces = [t for chart in app.get("plotly_chart") for t in json.loads(chart.proto.spec)["data"]]
    return next(t for t in traces if name in (t.get("name"), t.get("type")))


def _array(data: Any) -> np.ndarray:
    """A Plotly trace's array, whether plain or base64-packed (``{"dtype", "bdata", "shape"}``)."""
    if isinstance(data, dict):
        flat = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        return flat.reshape([int(n) for n in str(data["shape"]).split(",")]) if data.get("shape") else flat
    return np.asarray(data, dtype=np.float64)


def _input(app: AppTest, name: str, study: str) -> Any:
    return app.text_input(key=f"optimisation_{name}-{study}")


def _launch(app: AppTest, study: str) -> AppTest:
    app.button(key=f"FormSubmitter:optimisation_launch-{study}-Backtest the best parameters").click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_newest_study_shows_the_reports_headline_trials_and_verdict(data_dir: Path, kept: Kept) -> None:
    app, report = _page(), kept.sampled
    picker = app.selectbox(key="optimisation_study")
    assert picker.value == kept.folder(report, data_dir)  # newest first
    assert picker.options[0] == research.label({**report, "saved": SAVED + 60})  # study, strategy, objective, time
    metrics = _metrics(app)
    assert metrics["Best value"] == common.number(report["best_value"], 4)
    assert metrics["Backtest value"] == common.number(report["backtest_value"], 4)
    assert metrics["Backtest matches"] == ("yes" if report["backtest_matches"] else "no")
    assert (metrics["Trials completed"], metrics["Trials failed"]) == (f"{report['completed']}", f"{report['failed']}")
    assert metrics["DSR probability"] == common.number(report["overfitting"]["deflated_sharpe"]["probability"], 4)
    assert "PBO" not in metrics  # a sampled study has no probability of backtest overfitting
    assert report["overfitting"]["verdict"] in [i.value for i in app.info]
    assert _table(app, "number")["number"].tolist() == [row["number"] for row in report["table"]] == list(range(24))
    table = research.trials(Path(picker.value))
    best = research.best_so_far(table)["best"].to_numpy()
    np.testing.assert_allclose(_array(_trace(app, "best so far")["y"]), best, equal_nan=True)
    _assert_importance(app, table)


def _assert_importance(app: AppTest, table: pd.DataFrame) -> None:
    """The importance table and bars shown are what ``pipeline.reports.research`` computes."""
    expected = research.importance(table, ["fast", "slow"])
    pd.testing.assert_frame_equal(_table(app, "eta2"), expected)
    assert _array(_trace(app, "eta²")["x"]).tolist() == expected["eta2"].tolist()


def test_a_grid_study_shows_its_pbo_importance_heatmap_and_folds(data_dir: Path, kept: Kept) -> None:
    report = kept.grid
    app = _page(kept.folder(report, data_dir))
    metrics = _metrics(app)
    assert metrics["Best value"] == common.number(report["best_value"], 4)
    assert metrics["PBO"] == common.number(report["overfitting"]["pbo"]["probability"], 4)
    assert metrics["Out-of-sample value"] == common.number(report["walk_forward"]["out_of_sample_value"], 4)
    assert report["overfitting"]["verdict"] in [i.value for i in app.info]
    assert len(_table(app, "number")) == report["trials"]
    folds, listed = _table(app, "fold"), report["walk_forward"]["folds"]
    assert folds["fold"].tolist() == [1, 2, 3]
    for column in ("in_sample_value", "out_of_sample_value"):
        assert folds[column].tolist() == [f[column] for f in listed]
    assert _array(_trace(app, "fold")["x"]).tolist() == [f["in_sample_value"] for f in listed]
    assert _array(_trace(app, "y = x")["x"]).tolist() == _array(_trace(app, "y = x")["y"]).tolist()
    equity = _array(_trace(app, "equity")["y"])
    assert equity.tolist() == report["walk_forward"]["equity"]["equity"].tolist()
    table = research.trials(Path(kept.folder(report)))
    _assert_importance(app, table)
    np.testing.assert_array_equal(_array(_trace(app, "heatmap")["z"]), research.heatmap(table, "fast", "slow"))
    app.selectbox(key="optimisation_x").select("slow").run()
    app.selectbox(key="optimisation_y").select("fast").run()
    np.testing.assert_array_equal(_array(_trace(app, "heatmap")["z"]), research.heatmap(table, "slow", "fast"))
    app.selectbox(key="optimisation_y").select("slow").run()
    assert not app.exception
    assert "Choose two different parameters." in _texts(app)


def test_without_a_study_the_page_says_how_to_run_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    app = _page()
    assert "No parameter study" in _texts(app) and "tradeforge optimize" in _texts(app) and not app.metric


def test_broken_reports_are_skipped_with_a_warning_and_missing_fields_said(data_dir: Path, kept: Kept) -> None:
    root = research.research_root(data_dir)
    for name, text in (("garbled", "{not json"), ("listed", "[1, 2, 3]")):
        (root / name).mkdir()
        (root / name / store.REPORT).write_text(text)
    torn = Path(shutil.copytree(kept.folder(kept.grid, data_dir), root / "torn"))  # a sound report, torn tables
    (torn / store.TRIALS).write_bytes(b"PAR1 not really")
    (torn / store.OUT_OF_SAMPLE).write_bytes(b"")
    (root / "bare").mkdir()  # the newest: a report with nothing but its name and objective
    (root / "bare" / store.REPORT).write_text(json.dumps({"study": "bare", "objective": "sharpe"}))
    os.utime(root / "bare" / store.REPORT, (SAVED + 3600, SAVED + 3600))
    app = _page()
    warnings = [w.value for w in app.warning]
    assert any(str(root / "garbled") in w and "cannot be read" in w for w in warnings)
    assert any(str(root / "listed") in w and "not a study's report" in w for w in warnings)
    assert len(app.selectbox(key="optimisation_study").options) == 4  # the two studies, the torn and the bare one
    assert _metrics(app)["Best value"] == "-"
    texts = _texts(app)
    for says in ("has no overfitting verdict", "the trials, their charts and the importance are not shown",
                 "cannot be backtested: the study's report names no strategy"):
        assert says in texts
    assert not [b for b in app.button if b.key.startswith("FormSubmitter:optimisation_launch")]
    app = _page(str(torn))
    assert _metrics(app)["Best value"] == common.number(kept.grid["best_value"], 4)  # its report itself is fine
    warnings = [w.value for w in app.warning]
    assert any("the trials of the study in" in w and "are not shown" in w for w in warnings)
    assert any("the out-of-sample curve in" in w for w in warnings)
    assert len(_table(app, "fold")) == 3


def test_the_launch_asks_for_the_series_a_file_study_does_not_name(data_dir: Path, kept: Kept) -> None:
    named = Path(shutil.copytree(kept.folder(kept.grid, data_dir), research.research_root(data_dir) / "named"))
    report = {**json.loads((named / store.REPORT).read_text()), "study": "named", "symbol": "ETH/USDT"}
    (named / store.REPORT).write_text(json.dumps({**report, "timeframe": "4h"}))  # names its series: prefilled
    app = _page(str(named))
    assert [_input(app, name, "named").value for name in ("symbol", "timeframe", "venue")] == ["ETH/USDT", "4h", ""]
    assert "names no series" not in _texts(app)
    study = kept.grid["study"]
    app = _page(kept.folder(kept.grid, data_dir))
    assert [_input(app, name, study).value for name in ("symbol", "timeframe", "start", "end")] == [
        "", kept.grid["timeframe"], kept.grid["first"], _after_last(kept.grid)]
    assert "names no series" in _texts(app)
    _launch(app, study)
    assert any("Not launched: give the symbol and the timeframe" in e.value for e in app.error)
    _input(app, "symbol", study).input("BTC/USDT")
    _input(app, "timeframe", study).input("7m")
    _launch(app, study)
    assert any("Not launched: timeframe '7m'" in e.value for e in app.error)
    _input(app, "timeframe", study).input("1h")
    _launch(app, study)
    assert any(f"the Prefect server at {SILENT_PREFECT} does not answer" in e.value for e in app.error)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[str]:
    """A real Prefect server (``prefect server start``, its own home, a free loopback port) with the ad hoc
    backtest deployment registered (a flow and a deployment of that name)."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "true", "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_API_URL": ""}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: prefect_api.server_answers(api, timeout_s=5.0), "the Prefect server to answer",
                   process=process, log=tmp_path / "server.log")
        def post(path: str, body: dict[str, object]) -> Any:  # retried while Prefect's store is busy (5xx)
            return RetryPolicy(attempts=6, base_s=0.2, cap_s=2.0).call(
                lambda: httpx.post(api + path, json=body, timeout=10).raise_for_status(), what=f"POST {path}").json()

        flow = post("/flows/", {"name": prefect_api.FLOW})
        post("/deployments/", {"name": prefect_api.DEPLOYMENT, "flow_id": flow["id"]})
        yield api
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_the_launch_sends_the_best_parameters_to_the_adhoc_deployment(
    data_dir: Path, kept: Kept, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRADEFORGE_PREFECT_API_URL", prefect_server)
    report, study = kept.grid, kept.grid["study"]
    app = _page(kept.folder(report, data_dir))
    _input(app, "symbol", study).input("btc/usdt")
    _input(app, "timeframe", study).input("1h")
    app.number_input(key=f"optimisation_fee-{study}").set_value(5.0)
    _launch(app, study)
    launched = [s.value for s in app.success]
    assert len(launched) == 1 and launched[0].startswith("Launched: flow run"), [e.value for e in app.error]
    run_id = launched[0].rsplit("flow run id ", 1)[1].rstrip(").")
    run = httpx.get(f"{prefect_server}/flow_runs/{run_id}", timeout=10).json()
    assert run["parameters"] == {
        "strategy": "sma_cross", "symbol": "BTC/USDT", "timeframe": "1h", "venue": None,
        "start": pd.Timestamp(report["first"]).isoformat(), "end": _after_last(report),
        "fee_bps": 5.0, "slippage_bps": 0.0, "max_position": 0.25, "cash": 100_000.0,
        "params": {name: str(value) for name, value in report["best_params"].items()},
    }


def test_importance_is_the_share_of_variance_the_per_value_means_explain() -> None:
    table = pd.DataFrame({"number": range(7), "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan],
                          "a": [0, 0, 0, 1, 1, 1, 1], "b": [0, 1, 2, 0, 1, 2, 2], "m_trades": [9] * 7})
    assert research.parameters(table) == ["a", "b"]
    found = research.importance(table, ["b", "a"]).set_index("parameter")
    # a: means 2 and 5 around 3.5, SS_between = 3 * 1.5^2 * 2 = 13.5, SS_total = 17.5, SS_within = 4
    assert found.loc["a", "eta2"] == pytest.approx(13.5 / 17.5)
    assert found.loc["a", "epsilon2"] == pytest.approx((13.5 - 1 * 4 / (6 - 2)) / 17.5)
    # b: means 2.5, 3.5, 4.5: SS_between = 2 * (1 + 0 + 1) = 4, SS_within = 13.5: less than chance gives 0
    assert found.loc["b", "eta2"] == pytest.approx(4 / 17.5) and found.loc["b", "epsilon2"] == 0.0
    assert list(found.index) == ["a", "b"] and found["levels"].tolist() == [2, 3]  # largest share first
    assert found["trials"].tolist() == [6, 6]  # the failed trial is left out
    own = pd.DataFrame({"number": range(4), "value": [1.0, 3.0, 2.0, 5.0], "p": [1, 2, 3, 4], "q": [7, 7, 7, 7]})
    found = research.importance(own, ["p", "q"]).set_index("parameter")
    assert found.loc["p", "eta2"] == pytest.approx(1.0)  # a level per trial explains everything...
    assert math.isnan(found.loc["p", "epsilon2"])  # ...and leaves nothing to measure chance with
    assert found.loc["q", "eta2"] == 0.0 and found.loc["q", "epsilon2"] == 0.0  # one level explains nothing
    assert research.importance(own.assign(value=2.0), ["p"])["eta2"].isna().all()  # no variance to share
    assert research.importance(own.assign(value=np.nan), ["p"])[["eta2", "epsilon2"]].isna().all(axis=None)


def test_importance_agrees_with_a_regression_on_the_levels_and_bins_many_values(kept: Kept) -> None:
    """eta² is the R² of a least-squares fit of the value on one indicator column per level; beyond MAX_LEVELS
    distinct values, the levels are quantile bins."""
    table = research.trials(Path(kept.folder(kept.grid)))
    valued = table.loc[table["value"].notna()]
    found = research.importance(table, ["fast", "slow"]).set_index("parameter")
    y = valued["value"].to_numpy()
    for name in ("fast", "slow"):
        design = pd.get_dummies(valued[name].astype(str)).to_numpy(dtype=np.float64)
        fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
        assert found.loc[name, "eta2"] == pytest.approx(1 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    values = pd.Series(np.linspace(0.0, 9.9, 100))
    grouped = research.levels(values)
    assert grouped.nunique() == 10  # ceil(sqrt(100)) bins of 10 trials each
    assert grouped.iloc[:10].tolist() == [pytest.approx(values.iloc[:10].mean())] * 10
    few = pd.Series([3, 1, 3, 2])
    assert research.levels(few) is few  # up to MAX_LEVELS distinct values, the values are the levels


def test_heatmap_is_the_mean_value_per_cell_and_best_so_far_the_running_best() -> None:
    table = pd.DataFrame({"number": range(5), "value": [1.0, 3.0, 5.0, 10.0, np.nan],
                          "x": [1, 1, 2, 2, 2], "y": [7, 7, 7, 8, 8]})
    cells = research.heatmap(table, "x", "y")
    assert cells.index.tolist() == [7, 8] and cells.columns.tolist() == [1, 2]
    assert cells.loc[7, 1] == 2.0 and cells.loc[7, 2] == 5.0 and cells.loc[8, 2] == 10.0
    assert math.isnan(cells.loc[8, 1])  # no trial there (the failed one does not count)
    with pytest.raises(DataError, match="two different parameters"):
        research.heatmap(table, "x", "x")
    progress = research.best_so_far(pd.DataFrame({"number": [3, 0, 1, 2], "value": [2.0, 1.0, np.nan, 0.5]}))
    assert progress["number"].tolist() == [0, 1, 2, 3]
    assert progress["best"].tolist() == [1.0, 1.0, 1.0, 2.0]


def test_studies_are_listed_newest_first_and_bad_ones_are_named(tmp_path: Path) -> None:
    root = tmp_path / "research"
    assert research.studies(root) == research.Listing()  # no folder yet
    for name, report, at in (("older", {"study": "older", "strategy": "sma_cross", "objective": "sharpe"}, 100.0),
                             ("newer", {"study": "newer"}, 200.0), ("nameless", {"strategy": "sma_cross"}, 300.0)):
        (root / name).mkdir(parents=True)
        (root / name / store.REPORT).write_text(json.dumps(report))
        os.utime(root / name / store.REPORT, (at, at))
    found = research.studies(root)
    assert [s["study"] for s in found.studies] == ["newer", "older"]
    assert found.studies[0]["folder"] == str(root / "newer") and found.studies[0]["saved"] == 200.0
    assert [folder for folder, _ in found.skipped] == [str(root / "nameless")]
    assert research.label(found.studies[1]) == "older · sma_cross · sharpe · 1970-01-01 00:01 UTC"


def test_the_headline_folds_and_tables_read_what_a_report_has(kept: Kept, tmp_path: Path) -> None:
    listed = kept.grid["walk_forward"]["folds"]  # (the page tests compare the headline with real reports)
    assert research.folds(store.document(kept.grid))["params"].tolist() == [
        ", ".join(f"{k}={v}" for k, v in f["params"].items()) for f in listed]
    bare = research.headline({"study": "x", "overfitting": {"deflated_sharpe": {"unavailable": "too few returns"}}})
    assert (bare.best_value, bare.pbo, bare.verdict, bare.unavailable) == (None, None, None, {
        "deflated_sharpe": "too few returns"})
    assert research.folds({"study": "x"}).empty
    assert research.out_of_sample(Path(kept.folder(kept.sampled))) is None  # no walk-forward
    (tmp_path / store.TRIALS).write_text("not parquet")
    with pytest.raises(DataError, match=r"the trials of the study in .* cannot be read"):
        research.trials(tmp_path)


def test_relaunch_takes_the_strategy_and_best_parameters(kept: Kept) -> None:
    best = research.relaunch(store.document(kept.grid))
    assert best.strategy == "sma_cross" and best.params == kept.grid["best_params"]
    assert (best.symbol, best.timeframe, best.venue, best.start, best.end) == (  # the study ran on a file of bars
        None, kept.grid["timeframe"], None, kept.grid["first"], _after_last(kept.grid))
    request = AdhocRequest(strategy=best.strategy, symbol="BTC/USDT", timeframe="1h", params=best.params)
    assert request.params == {k: str(v) for k, v in kept.grid["best_params"].items()}
    named = research.relaunch({"strategy": "x", "best_params": {"on": True, "n": 3}, "symbol": "ETH/USDT",
                               "timeframe": "4h"})
    assert named.params == {"on": "true", "n": 3} and (named.symbol, named.timeframe) == ("ETH/USDT", "4h")
    for report, message in (({"best_params": {"n": 3}}, "names no strategy"),
                            ({"strategy": "sma_cross"}, "no best parameters"),
                            ({"strategy": "sma_cross", "best_params": {"n": None}}, "'n' is None")):
        with pytest.raises(DataError, match=message):
            research.relaunch(report)


def _after_last(report: dict[str, Any]) -> str:
    """The end (exclusive) that keeps a study's last bar: one bar after it opened."""
    return (pd.Timestamp(report["last"]) + pd.Timedelta(report["timeframe"].replace("m", "min"))).isoformat()
