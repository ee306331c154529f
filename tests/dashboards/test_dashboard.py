"""Every dashboard page under Streamlit's AppTest, on a populated installation (real runtime state, backtests,
model registry and lake), pointed at it through TRADEFORGE_* variables."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboards import common
from pipeline import reports
from pipeline.domain.trading import Order, OrderStatus, OrderType, Side
from pipeline.models.registry import ModelRegistry
from pipeline.state import StateStore, StepRecord
from tests.conftest import REPO
from tests.fakes.populated_state import MODEL, Populated, build
from tests.registry_state import registry_kept

APP = str(REPO / "dashboards" / "app.py")
TIMEOUT = 90


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return build(tmp_path_factory.mktemp("installation"))


@pytest.fixture
def app(populated: Populated, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    for name, value in populated.env.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


@pytest.fixture
def store(populated: Populated) -> Iterator[StateStore]:
    opened = StateStore.read_only(populated.settings.state_url)
    yield opened
    opened.close()


@pytest.fixture
def own_state(populated: Populated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private copy of the installation's state database, which the app then uses (TRADEFORGE_DATABASE_URL):
    for a test that writes to the state, so that the shared installation keeps its ledger and commands."""
    source = populated.settings.state_url.removeprefix("sqlite:///")
    copy = tmp_path / "state" / "tradeforge.db"
    copy.parent.mkdir()
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as origin, \
            closing(sqlite3.connect(copy)) as target:
        origin.backup(target)
    url = f"sqlite:///{copy.as_posix()}"
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", url)
    return url


@pytest.fixture
def registry_restored(populated: Populated) -> Iterator[None]:
    """For a test that moves the production alias of the installation's model: afterwards the model has
    the versions, aliases and tags it had before (v2 in production), however the test ended."""
    with registry_kept(ModelRegistry(populated.settings.mlflow_tracking_uri), MODEL):
        yield


def _open(app: AppTest, page: str | None = None) -> AppTest:
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def _texts(app: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning", "title")
             for e in getattr(app, kind)]
    return "\n".join(str(p) for p in parts)


def test_overview_shows_the_ledgers_numbers(app: AppTest, store: StateStore) -> None:
    _open(app)
    view = reports.overview(store, datetime.now(UTC))
    metrics = _metrics(app)
    assert metrics["Mode"] == "paper"
    assert metrics["Status"] == "stopped"
    assert metrics["Equity"] == common.money(view.equity)
    assert metrics[f"PnL of {view.day}"] == common.money(view.day_pnl, signed=True)
    assert common.money(view.day_realized_pnl, signed=True) in _texts(app)
    sleeves = app.dataframe[0].value
    assert sorted(sleeves["sleeve"]) == sorted(s.sleeve for s in view.sleeves)
    trend = sleeves.loc[sleeves["sleeve"] == "trend:BTC/USDT"].iloc[0]
    assert trend["breakers"] == "consecutive_losses"
    commands = app.dataframe[-1].value
    assert commands["state"].tolist() == ["pending", "acknowledged"]


def test_overview_lists_the_orders_working_at_a_venue(app: AppTest, own_state: str) -> None:
    at = datetime(2024, 3, 1, 12, tzinfo=UTC)
    stop = Order(client_order_id="tf0-1-s", sleeve="trend:BTC/USDT", symbol="BTC/USDT", side=Side.SELL,
                 qty=Decimal("0.5"), status=OrderStatus.NEW, reason="trailing_stop", venue_order_id="9", bar=at,
                 created_at=at, kind=OrderType.STOP, stop_price=Decimal("41200"))
    done = stop.model_copy(update={"client_order_id": "tf0-1-0", "status": OrderStatus.FILLED,
                                   "kind": OrderType.MARKET, "stop_price": None})
    with StateStore(own_state) as writable:
        writable.apply_step(StepRecord(orders=[stop, done]))
    _open(app)
    working = next(d.value for d in app.dataframe if "stop" in d.value.columns)
    assert working[["kind", "side", "qty", "stop", "reason"]].values.tolist() == [
        ["stop", "sell", 0.5, 41200.0, "trailing_stop"]]  # the filled order is not working


def test_control_buttons_write_a_command_only_after_confirmation(app: AppTest, own_state: str) -> None:
    _open(app)
    with StateStore.read_only(own_state) as store:
        before = len(store.pending_commands())
    assert before == 1  # the copy holds the installation's one pending command
    app.button(key="control-flatten").click().run()
    assert any("Flatten all sleeves?" in w.value for w in app.warning)
    app.button(key="cancel-command:flatten:").click().run()
    assert not app.warning
    with StateStore.read_only(own_state) as store:
        assert len(store.pending_commands()) == before  # cancelled: nothing written

    app.selectbox(key="control_target").select("trend:BTC/USDT").run()
    app.button(key="control-pause").click().run()
    app.button(key="confirm-command:pause:trend:BTC/USDT").click().run()
    assert not app.exception
    with StateStore.read_only(own_state) as store:
        pending = store.pending_commands()
    assert len(pending) == before + 1
    newest = pending[-1]
    assert (newest.command, newest.source, newest.sleeve) == ("pause", "dashboard", "trend:BTC/USDT")
    assert any(f"#{newest.id}" in s.value for s in app.success)
    assert app.dataframe[-1].value["id"].iloc[0] == newest.id  # listed at once as pending
    assert app.dataframe[-1].value["state"].iloc[0] == "pending"


def test_chart_draws_downsampled_candles_with_trades_and_the_models_probability(
    app: AppTest, populated: Populated
) -> None:
    _open(app, "views/chart.py")
    assert app.selectbox(key="chart_symbol").value == "binance BTC/USDT"
    assert app.selectbox(key="chart_timeframe").options[:2] == ["1m", "5m"]
    texts = _texts(app)
    assert "Down-sampled:" in texts and "5m bars" in texts
    assert f"{MODEL} v{populated.production_version} (production)" in texts
    assert app.get("plotly_chart")
    app.number_input(key="chart_max_bars").set_value(10_000).run()
    assert not app.exception
    assert "Down-sampled:" not in _texts(app)


def test_trades_page_filters_and_totals(app: AppTest, store: StateStore) -> None:
    _open(app, "views/trades.py")
    everything = reports.trades(store)
    metrics = _metrics(app)
    assert metrics["Trades"] == f"{everything.count:,}"
    assert metrics["PnL (net of fees)"] == common.money(everything.pnl, signed=True)
    assert metrics["Fees"] == common.money(everything.fees)
    app.radio(key="trades_outcome").set_value("winners").run()
    winners = reports.trades(store, outcome="winners")
    assert _metrics(app)["Trades"] == f"{winners.count:,}"
    assert (app.dataframe[0].value["pnl"] > 0).all()
    app.selectbox(key="trades_sleeve").select("reversion:BTC/USDT").run()
    both = reports.trades(store, sleeve="reversion:BTC/USDT", outcome="winners")
    assert _metrics(app)["PnL (net of fees)"] == common.money(both.pnl, signed=True)
    assert app.get("download_button")


def test_backtests_page_lists_runs_and_reports_a_silent_prefect(app: AppTest, populated: Populated) -> None:
    _open(app, "views/backtests.py")
    runs = app.dataframe[0].value
    assert set(runs["run_id"]) == set(populated.backtest_ids)
    assert app.get("plotly_chart")
    app.selectbox(key="launch_strategy").select("sma_cross")
    app.text_input(key="launch_params").input("fast=5, slow=20")
    app.button(key="FormSubmitter:launch-Launch").click().run()
    assert not app.exception
    assert any("does not answer" in e.value for e in app.error)
    app.text_input(key="launch_timeframe").input("7m")
    app.button(key="FormSubmitter:launch-Launch").click().run()
    assert any("Not launched: timeframe '7m'" in e.value for e in app.error)


def test_the_launch_form_takes_a_strategy_of_your_own(app: AppTest, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my_strategies"
    folder.mkdir()
    (folder / "breakout.py").write_text((REPO / "examples" / "strategies" / "band_breakout.py").read_text())
    monkeypatch.setenv("TRADEFORGE_STRATEGY_PATHS", str(folder))
    _open(app, "views/backtests.py")
    assert "band_breakout" in app.selectbox(key="launch_strategy").options
    app.selectbox(key="launch_strategy").select("band_breakout")
    app.text_input(key="launch_params").input("window=1")
    app.button(key="FormSubmitter:launch-Launch").click().run()
    assert any("Not launched: strategy 'band_breakout' parameter 'window' (int, >= 2, <= 10000)" in e.value
               for e in app.error), [e.value for e in app.error]
    app.text_input(key="launch_params").input("window=24, band=0.02")
    app.button(key="FormSubmitter:launch-Launch").click().run()
    assert any("does not answer" in e.value for e in app.error)  # validated, then sent to the (silent) Prefect


@pytest.mark.usefixtures("registry_restored")
def test_models_page_promotes_and_rolls_back_after_confirmation(app: AppTest, populated: Populated) -> None:
    settings = populated.settings
    _open(app, "views/models.py")
    assert "Production: **v2**" in _texts(app)
    app.selectbox(key=f"version-{MODEL}").select("1").run()
    app.button(key=f"promote-{MODEL}").click().run()
    assert reports.production_versions(settings) == {MODEL: "2"}  # not before the confirmation
    app.button(key=f"confirm-promote:{MODEL}:1").click().run()
    assert reports.production_versions(settings) == {MODEL: "1"}
    assert any("production → v1" in s.value for s in app.success)
    app.button(key=f"rollback-{MODEL}").click().run()
    app.button(key=f"confirm-rollback:{MODEL}").click().run()
    assert not app.exception
    assert reports.production_versions(settings) == {MODEL: "2"}
    assert "Production: **v2**" in _texts(app.run())


def test_data_health_page_shows_coverage_and_the_quarantine(app: AppTest, populated: Populated) -> None:
    _open(app, "views/data_health.py")
    metrics = _metrics(app)
    assert metrics["Series"] == "2"
    assert metrics["Quarantined rows"] == "2"
    table = app.dataframe[0].value
    minutes = table.loc[table["timeframe"] == "1m"].iloc[0]
    assert minutes["rows"] == len(populated.bars)
    reasons = app.dataframe[1].value
    assert sorted(reasons["reason"]) == ["non-finite close", "non-positive low"]


def test_the_password_gate_blocks_every_page_until_the_password_is_given(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "correct horse battery"
    monkeypatch.setenv("TRADEFORGE_DASHBOARD_PASSWORD", secret)
    app.run()
    assert not app.exception
    assert not app.metric and not app.dataframe  # nothing of the overview
    app.text_input(key="password_input").input("wrong")
    app.button(key="FormSubmitter:login-Enter").click().run()
    assert any("Wrong password" in e.value for e in app.error)
    assert not app.metric
    with pytest.raises(ValueError, match=r"Could not find a navigation page for .*trades\.py"):  # locked: no page
        app.switch_page("views/trades.py")
    app.text_input(key="password_input").input(secret)
    app.button(key="FormSubmitter:login-Enter").click().run()
    assert not app.exception
    assert "Equity" in _metrics(app)
    app.switch_page("views/trades.py").run()
    assert "Trades" in _metrics(app)
    assert secret not in _texts(app)
    assert all(secret != getattr(t, "value", None) for t in app.text_input)


def test_without_state_the_pages_say_so(tmp_path_factory: pytest.TempPathFactory,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path_factory.mktemp("empty")
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(empty / "data"))
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{empty / 'mlruns' / 'mlflow.db'}")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    _open(app)
    assert "No runtime state to show yet" in _texts(app)
    for page, says in (("views/trades.py", "No runtime state"), ("views/chart.py", "The lake is empty"),
                       ("views/backtests.py", "No stored backtest"), ("views/models.py", "No registered model"),
                       ("views/data_health.py", "The lake is empty")):
        app.switch_page(page).run()
        assert not app.exception, page
        assert says in _texts(app), page
    assert not (empty / "mlruns").exists()
