"""Settings a careful new user gets wrong: each refused when the settings load, by every command (``config show``
and ``doctor`` included), on one line naming the ``TRADEFORGE_...`` variable and what is wrong (with what would be
accepted), never showing a secret, with every stored file untouched.

The working folder holds a real installation (``refusal_setup``): a lake of real BTC/USDT bars, a paper runtime's
state and an MLflow store.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from pipeline.addresses import database_schemes
from pipeline.cron import cron_problem
from pipeline.settings import Settings, SettingsError, load_settings
from tests.tradeforge_cli import refusal_setup
from tests.tradeforge_cli.cli_helpers import cli
from tests.tradeforge_cli.refusals import Refusal, check_refused

installation, work = refusal_setup.installation, refusal_setup.work
RUN = ("runtime", "--strategy", "sma_cross", "--symbol", "BTC/USDT", "--timeframe", "1m")
INGEST = ("ingest", "--symbol", "BTC/USDT", "--timeframe", "1h")
PASSWORD = "hunter2-db-password"


def setting(case_id: str, command: tuple[str, ...], names: tuple[str, ...], json_error: bool = False,
            **env: str) -> Refusal:
    return Refusal(case_id, command, names, env={f"TRADEFORGE_{k.upper()}": v for k, v in env.items()},
                   json_error=json_error)


CRON = [
    setting("cron-four-fields", ("config", "show"),
            ("TRADEFORGE_SCHEDULE_BACKUP", "'*/5 * * *' has 4 fields", "a cron expression has 5"),
            schedule_backup="*/5 * * *"),
    setting("cron-four-fields-doctor", ("doctor",), ("TRADEFORGE_SCHEDULE_BACKUP", "has 4 fields"),
            schedule_backup="*/5 * * *"),
    setting("cron-minute-60", RUN, ("TRADEFORGE_SCHEDULE_INGEST", "minute field '60'", "0-59"),
            schedule_ingest="60 * * * *"),
    setting("cron-with-seconds", ("doctor", "--json"), ("TRADEFORGE_SCHEDULE_SUMMARY", "has 6 fields"),
            json_error=True, schedule_summary="0 5 0 * * *"),
    setting("cron-quartz-question-mark", ("config", "show"),
            ("TRADEFORGE_SCHEDULE_TRAIN", "day-of-week field '?'", "not standard cron"),
            schedule_train="30 1 * * ?"),
    setting("cron-february-30", ("models", "list"), ("TRADEFORGE_SCHEDULE_RESTORE_DRILL", "day-of-month field '30'"),
            schedule_restore_drill="0 3 30 2 *"),
    setting("cron-hour-24", ("runtime", "ctl", "pause"), ("TRADEFORGE_SCHEDULE_FEATURES", "hour field '24'", "0-23"),
            schedule_features="0 24 * * *"),
]

UNIVERSE = [
    setting("universe-entry-without-timeframe", ("data", "health"),
            ("TRADEFORGE_UNIVERSE", "'sample:BTC/USDT'", "venue:SYMBOL:timeframe"),
            universe="sample:BTC/USDT:1h,sample:BTC/USDT"),
    setting("universe-two-bad-entries", ("doctor",),
            ("TRADEFORGE_UNIVERSE", "'binance:BTC/USDT:1w'", "'alpaca:ETH/USD:1h'", "alpaca serves US stocks"),
            universe="sample:BTC/USDT:1h,binance:BTC/USDT:1w,alpaca:ETH/USD:1h"),
    setting("universe-file-entry-without-path", ("config", "show"), ("'file:BTC/USDT:1h@'", "nothing after '@'"),
            universe="file:BTC/USDT:1h@"),
]

DATABASES = [
    setting("database-url-misspelt-scheme", ("runtime", "ctl", "pause"),
            ("TRADEFORGE_DATABASE_URL", "'postgress'", "accepted schemes: sqlite", "postgresql+psycopg"),
            database_url=f"postgress://trader:{PASSWORD}@127.0.0.1:5432/tradeforge"),
    setting("database-url-a-path", RUN, ("TRADEFORGE_DATABASE_URL", "is not a database URL", "sqlite:///"),
            database_url="data/state/tradeforge.db"),
    setting("database-url-sqlite-two-slashes", ("doctor",),
            ("TRADEFORGE_DATABASE_URL", "three slashes", "sqlite:///data/state/tradeforge.db"),
            database_url="sqlite://data/state/tradeforge.db"),
    setting("database-url-mysql", ("config", "show", "--json"), ("TRADEFORGE_DATABASE_URL", "'mysql'", "PostgreSQL"),
            json_error=True, database_url="mysql://trader@127.0.0.1/tradeforge"),
    setting("database-url-driver-not-installed", ("runtime", "ctl", "resume"),
            ("'postgresql+psycopg2'", "not installed", "did you mean 'postgresql+psycopg'?"),
            database_url="postgresql+psycopg2://trader@127.0.0.1/tradeforge"),
    setting("optuna-storage-misspelt", ("config", "show"), ("TRADEFORGE_OPTUNA_STORAGE", "'sqllite'", "sqlite"),
            optuna_storage="sqllite:///research/optuna.db"),
    setting("mlflow-uri-a-file-path", ("models", "list"),
            ("TRADEFORGE_MLFLOW_TRACKING_URI", "write it as a URL, sqlite:///mlruns/mlflow.db"),
            mlflow_tracking_uri="mlruns/mlflow.db"),
]

ADDRESSES_AND_NUMBERS = [
    setting("prefect-url-without-scheme", ("config", "show"),
            ("TRADEFORGE_PREFECT_API_URL", "'127.0.0.1:4200/api'", "http or https"),
            prefect_api_url="127.0.0.1:4200/api"),
    setting("alpaca-stream-url-https", ("doctor",), ("TRADEFORGE_ALPACA_STREAM_URL", "ws or wss"),
            alpaca_stream_url="https://stream.data.alpaca.markets/v2/iex"),
    setting("api-url-port-out-of-range", ("config", "show"), ("TRADEFORGE_API_URL", "port", "65535"),
            api_url="http://127.0.0.1:80000"),
    setting("telegram-chat-id-a-handle", ("doctor",), ("TRADEFORGE_TELEGRAM_CHAT_IDS", "'@desk'", "whole number"),
            telegram_chat_ids="12345,@desk"),
    setting("timeout-zero", INGEST, ("TRADEFORGE_HTTP_TIMEOUT_S '0' is out of range", "> 0"), http_timeout_s="0"),
    setting("warmup-in-scientific-notation", RUN, ("TRADEFORGE_WARMUP_BARS", "valid integer", "'1e3'"),
            warmup_bars="1e3"),
    setting("alpaca-feed-in-capitals", ("config", "show"),
            ("TRADEFORGE_ALPACA_FEED", "one of iex, sip, otc, delayed_sip", "did you mean 'sip'?"), alpaca_feed="SIP"),
    setting("websocket-flag-not-a-boolean", RUN, ("TRADEFORGE_CCXT_WEBSOCKET", "valid boolean", "'sometimes'"),
            ccxt_websocket="sometimes"),
    setting("data-dir-a-file", ("data", "health"), ("TRADEFORGE_DATA_DIR", "is a file, not a folder"),
            data_dir="{work}/incoming/btc-1h.parquet"),
    setting("sample-seed-negative", INGEST, ("TRADEFORGE_SAMPLE_SEED '-1' is out of range", ">= 0"), sample_seed="-1"),
    setting("two-settings-wrong", ("config", "show"),
            ("TRADEFORGE_SCHEDULE_BACKUP", "TRADEFORGE_BACKUP_KEEP '0'", ">= 1"),
            schedule_backup="every 5 minutes", backup_keep="0"),
    setting("strategies-list-with-a-bad-setting", ("strategies", "list"), ("TRADEFORGE_SCHEDULE_PARITY",),
            schedule_parity="20 0 * *"),
    Refusal("setting-in-dot-env", ("doctor",), ("TRADEFORGE_SCHEDULE_PARITY", "has 4 fields"),
            files={".env": "TRADEFORGE_SCHEDULE_PARITY=20 0 * *\n"}),
]


@pytest.mark.parametrize("case", [case.param() for case in CRON])
def test_a_bad_schedule_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("case", [case.param() for case in UNIVERSE])
def test_a_bad_universe_entry_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("case", [case.param() for case in DATABASES])
def test_a_bad_database_url_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("case", [case.param() for case in ADDRESSES_AND_NUMBERS])
def test_a_bad_address_or_number_is_refused(case: Refusal, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(case, work, monkeypatch)


@pytest.mark.parametrize("command", [("config", "show", "--json"), ("doctor",), ("runtime", "ctl", "stop")])
def test_a_refused_database_url_never_shows_its_password(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                         command: tuple[str, ...]) -> None:
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"postgress://trader:{PASSWORD}@127.0.0.1:5432/tradeforge")

    result = cli(*command)

    assert result.exit_code == 1
    assert "TRADEFORGE_DATABASE_URL" in result.stderr and "postgress://trader:***@127.0.0.1" in result.stderr
    assert PASSWORD not in result.output


def test_config_show_masks_the_password_of_every_url(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEFORGE_DATABASE_URL", f"postgresql://trader:{PASSWORD}@127.0.0.1:1/tradeforge")
    monkeypatch.setenv("TRADEFORGE_MLFLOW_TRACKING_URI", f"http://trader:{PASSWORD}@127.0.0.1:1")

    result = cli("config", "show", "--json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["database_url"] == "postgresql://trader:***@127.0.0.1:1/tradeforge"
    assert shown["mlflow_tracking_uri"] == "http://trader:***@127.0.0.1:1"
    assert PASSWORD not in result.output


SCHEDULES = [name for name in Settings.model_fields if name.startswith("schedule_")]


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_setting_is_checked(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"TRADEFORGE_{name.upper()}", "0 1 * *")

    with pytest.raises(SettingsError) as refused:
        load_settings()

    assert f"TRADEFORGE_{name.upper()}: '0 1 * *' has 4 fields" in str(refused.value)


ACCEPTED_CRON = ["*/5 * * * *", "0 * * * *", "15 1 * * *", "0 3 * * 0", "0 3 * * sun", "0 9 * * mon-fri",
                 "0 9 1,15 * *", "*/10 8-18 * jan-jun *", "0 0 29 2 *", "@hourly", "@daily", "@weekly"]


@pytest.mark.parametrize("expression", ACCEPTED_CRON + [Settings.model_fields[name].default for name in SCHEDULES])
def test_a_schedule_the_settings_accept_is_one_prefect_schedules(expression: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    assert cron_problem(expression) is None
    assert CronSchedule(cron=expression, timezone="UTC").cron == expression


def test_the_accepted_database_schemes_are_those_whose_driver_is_installed() -> None:
    schemes = database_schemes()

    assert {"sqlite", "postgresql", "postgresql+psycopg"} <= set(schemes)  # psycopg 3 is a dependency
    assert ("postgresql+psycopg2" in schemes) == (importlib.util.find_spec("psycopg2") is not None)
    assert not any("aiosqlite" in scheme or "asyncpg" in scheme for scheme in schemes)
