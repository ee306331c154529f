"""``tradeforge optimize``: a grid and a sampled study over a real file of bars; the best trial re-run as a plain
``tradeforge backtest`` gives exactly the objective the study reported; a rerun resumes the stored study; bad
input is refused naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import shared_file
from tests.tradeforge_cli.cli_helpers import assert_fails_cleanly, cli, data_dir, json_of

__all__ = ["data_dir"]

COSTS = ("--fee-bps", "7", "--slippage-bps", "2", "--cash", "50000", "--max-position", "0.5")


@pytest.fixture
def bars_file(tmp_path: Path) -> Path:
    bars = pd.read_parquet(shared_file("binance_BTC-USDT_1h.parquet")).iloc[-4_000:]
    path = tmp_path / "btc_1h.parquet"
    bars.to_parquet(path)
    return path


def _optimize(bars_file: Path, *extra: str) -> dict[str, object]:
    found = json_of(cli("optimize", "--strategy", "sma_cross", "--data", str(bars_file), "--space", "fast=4:20:4",
                        "--space", "slow=24:60:12", *COSTS, "--json", *extra))
    assert isinstance(found, dict)
    return found


def _backtest_objective(bars_file: Path, params: dict[str, int], metric: str) -> object:
    found = json_of(cli("backtest", "--strategy", "sma_cross", "--data", str(bars_file), *COSTS, "--json",
                        *(f"--param={key}={value}" for key, value in params.items())))
    return found[metric]


def test_grid_best_trial_rerun_as_a_backtest_gives_the_reported_objective(data_dir: Path, bars_file: Path) -> None:
    report = _optimize(bars_file, "--grid", "--objective", "sortino")
    assert report["trials"] == 5 * 4 and report["completed"] == 20
    assert report["best_value"] == _backtest_objective(bars_file, report["best_params"], "sortino")  # type: ignore[arg-type]
    assert report["backtest_matches"] is True
    assert "pbo" in report["overfitting"] and "deflated_sharpe" in report["overfitting"]  # type: ignore[operator]
    stored = Path(str(report["stored"]))
    assert json.loads((stored / "report.json").read_text())["best_value"] == report["best_value"]
    assert len(pd.read_parquet(stored / "trials.parquet")) == 20


def test_sampled_study_resumes_and_walk_forward_reports_every_fold(data_dir: Path, bars_file: Path) -> None:
    first = _optimize(bars_file, "--trials", "6", "--walk-forward", "2", "--seed", "3")
    assert first["trials"] == 6
    assert first["best_value"] == _backtest_objective(bars_file, first["best_params"], "sharpe")  # type: ignore[arg-type]
    folds = first["walk_forward"]["folds"]  # type: ignore[index]
    assert [fold["fold"] for fold in folds] == [1, 2]
    assert all({"in_sample_value", "out_of_sample_value", "params"} <= set(fold) for fold in folds)
    again = _optimize(bars_file, "--trials", "9", "--walk-forward", "2", "--seed", "3")
    assert again["study"] == first["study"] and again["trials"] == 9


@pytest.mark.parametrize(("extra", "fragments"), [
    (("--space", "fast=0:5"), ("--space fast=0:5", "fast")),
    (("--space", "speed=1:5"), ("no parameter 'speed'",)),
    (("--space", "fast=5:1"), ("HIGH 1 is below LOW 5",)),
    (("--space", "fast=2:8", "--objective", "sharpe +"), ("--objective",)),
    (("--space", "fast=2:8", "--objective", "alpha"), ("'alpha'", "not a metric")),
    (("--space", "fast=2:8", "--walk-forward", "1"), ("--walk-forward",)),
    (("--space", "fast=2:8", "--trials", "0"), ("--trials",)),
    (("--space", "fast=2:8", "--min-trades", "-1"), ("--min-trades",)),
    ((), ("--space",)),
])
def test_bad_input_is_refused_naming_it(data_dir: Path, bars_file: Path, extra: tuple[str, ...],
                                         fragments: tuple[str, ...]) -> None:
    result = cli("optimize", "--strategy", "sma_cross", "--data", str(bars_file), "--json", *extra)
    assert_fails_cleanly(result, *fragments)
    assert not (data_dir / "research").exists() or not any((data_dir / "research").glob("*/report.json"))


def test_a_study_in_postgresql_is_shared_by_name(data_dir: Path, bars_file: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import uuid

    import optuna

    from tests.pipeline.state.stores import PG_URL as url
    from tests.pipeline.state.stores import postgres_error

    if (error := postgres_error()) is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    monkeypatch.setenv("TRADEFORGE_OPTUNA_STORAGE", url)
    name = f"cli-{uuid.uuid4().hex[:12]}"
    try:
        first = _optimize(bars_file, "--grid", "--study", name, "--no-mlflow")
        assert first["storage"].startswith("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        again = _optimize(bars_file, "--grid", "--study", name, "--no-mlflow")
        assert again["trials"] == first["trials"] == 20 and again["best_value"] == first["best_value"]
        held = optuna.load_study(study_name=name, storage="postgresql+psycopg://postgres@127.0.0.1:5432/test")
        assert len(held.trials) == 20
    finally:
        for study in optuna.get_all_study_names("postgresql+psycopg://postgres@127.0.0.1:5432/test"):
            if study.startswith(name):
                optuna.delete_study(study_name=study, storage="postgresql+psycopg://postgres@127.0.0.1:5432/test")
