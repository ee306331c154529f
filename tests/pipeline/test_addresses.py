"""What the settings' address checks show and accept: passwords masked whatever they hold; MLflow's store in any
database SQLAlchemy can open here."""

from __future__ import annotations

import pytest

from pipeline.addresses import masked, mlflow_uri_problem


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://trader:s3cret@db:5432/state", "postgresql://trader:***@db:5432/state"),
    ("postgress://trader:pa/ss@db/state", "postgress://trader:***@db/state"),
    ("https://user:s3cr/et@proxy:8080/path", "https://user:***@proxy:8080/path"),
    ("postgresql://trader:p@ss@db/state", "postgresql://trader:***@db/state"),
    ("sqlite:///data/state/tradeforge.db", "sqlite:///data/state/tradeforge.db"),
])
def test_a_password_is_masked_whatever_it_holds(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_mlflow_takes_any_database_whose_driver_is_installed_and_names_one_that_is_not() -> None:
    assert mlflow_uri_problem("sqlite:///mlruns/mlflow.db") is None
    assert mlflow_uri_problem("postgresql+psycopg://mlflow@db/mlflow") is None
    assert mlflow_uri_problem("file:./mlruns") is None and mlflow_uri_problem("http://127.0.0.1:5000") is None
    problem = mlflow_uri_problem("mysql+nodriver://u:secret@db/mlflow")
    assert problem is not None and "'mysql+nodriver' cannot be used" in problem and "secret" not in problem
