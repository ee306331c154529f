"""The dashboard's sign-in under AppTest: the operator credential (the setting dashboard_password, or the one
`tradeforge up` stored for the data folder) locks every page, and signing in lands on the page whose address was
opened while locked, with its query parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.services import credential
from pipeline.settings import Settings
from tests.conftest import REPO

APP = str(REPO / "dashboards" / "app.py")
TIMEOUT = 90


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An empty installation in ``tmp_path`` with no dashboard password set (the environment beats ``.env``)."""
    monkeypatch.setenv("TRADEFORGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    monkeypatch.setenv("TRADEFORGE_DASHBOARD_PASSWORD", "")
    return Settings(data_dir=tmp_path / "data", _env_file=None)  # type: ignore[call-arg]


def _titles(app: AppTest) -> list[str]:
    return [str(t.value) for t in app.title]


def _sign_in(app: AppTest, typed: str) -> AppTest:
    app.text_input(key="password_input").input(typed)
    return app.button(key="FormSubmitter:login-Enter").click().run()


def test_the_credential_up_stored_locks_the_dashboard(installation: Settings) -> None:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert "Overview" in _titles(app)  # no credential anywhere: open, as before
    stored = credential.ensure(installation)  # what `tradeforge up` does on its first start

    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not app.exception
    assert _titles(app) == ["tradeforge"] and not app.info  # the sign-in form, nothing of the overview
    _sign_in(app, "not it")
    assert any("Wrong password" in e.value for e in app.error)
    _sign_in(app, stored)
    assert not app.exception
    assert "Overview" in _titles(app)
    assert all(stored not in str(getattr(e, "value", "")) for e in (*app.text_input, *app.markdown, *app.caption))


def test_signing_in_lands_on_the_page_opened_while_locked(installation: Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "correct horse battery"
    monkeypatch.setenv("TRADEFORGE_DASHBOARD_PASSWORD", secret)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.query_params["note"] = "kept"
    app.switch_page("views/chart.py").run()  # the address /chart?note=kept, opened while locked
    assert not app.exception
    assert _titles(app) == ["tradeforge"]  # the sign-in form at that address, not the chart
    _sign_in(app, secret)
    assert not app.exception
    assert _titles(app)[0] == "Chart"
    assert app.query_params.get("note") == "kept"
