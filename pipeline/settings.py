"""Configuration has one door: this module.

Every setting reads from the environment with the prefix ``TRADEFORGE_`` or from a ``.env`` file in the
working directory. Secrets are ``SecretStr``: they are never logged, printed or sent anywhere but their venue.

Settings are checked when they load, before anything runs: schedules are five-field cron (``pipeline.cron``),
universe entries parse (``pipeline.data.universe``), database URLs name a backend and driver that can be opened,
web and websocket URLs have the right scheme and a host (``pipeline.addresses``), numbers keep their bounds.
``load_settings`` refuses bad ones with ``SettingsError``: one line naming each ``TRADEFORGE_...`` variable and
what is wrong with it (never a secret's value, never a URL's password).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeline.addresses import (
    dask_address_problem,
    database_url_problem,
    mlflow_uri_problem,
    web_url_problem,
)
from pipeline.cron import cron_problem
from pipeline.input_errors import describe


class SettingsError(ValueError):
    """Settings that cannot be used: the message names each ``TRADEFORGE_...`` variable and what is wrong."""


def _checked(problem: Callable[[str], str | None]) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None:
            found = problem(value)
            if found is not None:
                raise ValueError(found)
        return value

    return check


def _unset_if_empty(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _web(*schemes: str, example: str) -> Callable[[str | None], str | None]:
    return _checked(lambda url: web_url_problem(url, schemes, example))


Cron = Annotated[str, AfterValidator(_checked(cron_problem))]
HttpUrl = Annotated[str, AfterValidator(_web("http", "https", example="http://HOST:PORT/PATH"))]
OptionalHttpUrl = Annotated[
    str | None, BeforeValidator(_unset_if_empty), AfterValidator(_web("http", "https", example="https://HOST/PATH"))]
OptionalWsUrl = Annotated[
    str | None, BeforeValidator(_unset_if_empty), AfterValidator(_web("ws", "wss", example="wss://HOST/PATH"))]
DatabaseUrl = Annotated[str | None, BeforeValidator(_unset_if_empty), AfterValidator(_checked(database_url_problem))]


class Settings(BaseSettings):
    """tradeforge's settings. The README's configuration table is checked against this class."""

    model_config = SettingsConfigDict(
        env_prefix="TRADEFORGE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    data_dir: Path = Field(
        default=Path("data"),
        description="Root of everything data-related: the lake, quarantine, health table, state database.",
    )
    database_url: DatabaseUrl = Field(
        default=None,
        description="State database URL; empty means SQLite at <data_dir>/state/tradeforge.db.",
    )
    mlflow_tracking_uri: Annotated[str, AfterValidator(_checked(mlflow_uri_problem))] = Field(
        default="sqlite:///mlruns/mlflow.db",
        description="MLflow tracking and registry store.",
    )
    ccxt_exchange: str = Field(default="binance", description="Default ccxt exchange id for crypto data.")
    ccxt_api_key: SecretStr | None = Field(default=None, description="ccxt API key (live trading only).")
    ccxt_api_secret: SecretStr | None = Field(default=None, description="ccxt API secret (live trading only).")
    ccxt_rest_url: OptionalHttpUrl = Field(
        default=None,
        description="Override of the exchange's REST base URL (a proxy or a local test server).",
    )
    alpaca_api_key: SecretStr | None = Field(default=None, description="Alpaca API key id.")
    alpaca_api_secret: SecretStr | None = Field(default=None, description="Alpaca API secret key.")
    alpaca_feed: Literal["iex", "sip", "otc", "delayed_sip"] = Field(
        default="iex", description="Alpaca stock data feed (iex is free; sip needs a subscription)."
    )
    alpaca_data_url: OptionalHttpUrl = Field(
        default=None, description="Override of Alpaca's market-data base URL (a proxy or a local test server)."
    )
    alpaca_stream_url: OptionalWsUrl = Field(
        default=None, description="Override of Alpaca's market-data websocket URL (a proxy or a local test server)."
    )
    http_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one request to a data venue.")
    max_retries: int = Field(
        default=5, ge=0, description="Retries of a request after a network error, timeout, 429 or 5xx."
    )
    retry_backoff_s: float = Field(
        default=1.0, ge=0,
        description="First retry delay; doubles on each further retry up to a cap, less up to 20% at random; "
                    "a venue's Retry-After is honoured.",
    )
    stale_after_bars: int = Field(
        default=3, ge=1, description="A series is stale when its last closed bar is older than this many bars."
    )
    spike_z: float = Field(
        default=30.0,
        gt=0,
        description="Robust z-score of a return, in and back out, above which a bar is quarantined as a spike.",
    )
    sample_seed: int = Field(default=7, ge=0, description="Seed of the synthetic sample market.")
    telegram_token: SecretStr | None = Field(default=None, description="Telegram bot token; empty turns Telegram off.")
    telegram_chat_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Chat ids (comma-separated) that receive notifications and may send commands.",
    )
    telegram_api_url: OptionalHttpUrl = Field(
        default=None, description="Override of the Telegram Bot API base URL (a proxy or a local test server)."
    )
    telegram_rate_per_minute: int = Field(
        default=20, ge=1,
        description="Telegram messages per minute across every chat, on average (a burst of that many may leave "
                    "at once).",
    )
    live_confirm: str = Field(
        default="", description="Must be 'yes' for live trading with real money (paper needs nothing)."
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="How often the runtime writes its heartbeat.")
    model_poll_seconds: float = Field(
        default=60.0, gt=0, description="How often the runtime asks the registry whether the production alias moved."
    )

    alpaca_trading_url: OptionalHttpUrl = Field(
        default=None,
        description="Override of Alpaca's trading API base URL (default: paper, or live when confirmed).",
    )
    feed_poll_seconds: float = Field(
        default=2.0, gt=0, description="How often a live feed asks its venue for newly closed bars."
    )
    warmup_bars: int = Field(
        default=1000, ge=1, description="Bars of history a live feed loads at start for the strategies' warm-up."
    )
    ccxt_websocket: bool = Field(
        default=False,
        description="Live crypto bars from the exchange's websocket (ccxt.pro watch_ohlcv) on top of REST history; "
        "off polls REST. An exchange without websocket support falls back to polling.",
    )
    ccxt_ws_url: OptionalWsUrl = Field(
        default=None, description="Override of the exchange's websocket base URL (a proxy or a local test server)."
    )
    reconcile_seconds: float = Field(
        default=60.0, gt=0,
        description="How often a runtime trading at a venue compares the venue's open orders, fills, positions and "
        "cash with its ledgers (also at start-up).",
    )
    reconcile_tolerance: float = Field(
        default=0.001, ge=0,
        description="Relative difference (of the ledgers' amount, at least one unit of the quote currency for cash) "
        "beyond which a reconciliation mismatch pauses the affected sleeves and raises an alert.",
    )
    api_url: HttpUrl = Field(
        default="http://127.0.0.1:8000", description="Where the bot's HTTP API (and its /docs) is served."
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the bot's HTTP API; empty serves the read-only endpoints only and refuses "
        "every control command.",
    )
    universe: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["sample:BTC/USDT:1h", "sample:ETH/USDT:1h", "sample:AAPL:1d", "sample:BTC/USDT:1m"],
        description="Series the ingest flow keeps current, comma-separated venue:SYMBOL:timeframe.",
    )
    strategy_paths: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("strategies")],
        description="Folders searched for your own strategies, comma-separated (relative to the working directory).",
    )
    prefect_api_url: HttpUrl = Field(
        default="http://127.0.0.1:4200/api", description="Prefect server API (flows, deployments, ad hoc runs)."
    )
    mlflow_ui_url: HttpUrl = Field(default="http://127.0.0.1:5000", description="Where the MLflow UI is served.")
    dashboard_url: HttpUrl = Field(default="http://127.0.0.1:8501", description="Where the dashboard is served.")
    dashboard_password: SecretStr | None = Field(
        default=None,
        description="The operator credential: the dashboard's password and, under `tradeforge up`, the Prefect "
        "server's API auth string. Empty: `tradeforge up` creates one in `<data_dir>/run/operator-credential`; the "
        "dashboard stays open only where neither exists.",
    )
    schedule_ingest: Cron = Field(default="0 * * * *", description="Cron (UTC) of the ingest flow.")
    schedule_features: Cron = Field(default="15 1 * * *", description="Cron (UTC) of the feature build.")
    schedule_train: Cron = Field(default="30 1 * * *", description="Cron (UTC) of training and promotion.")
    schedule_backtest: Cron = Field(default="30 2 * * *", description="Cron (UTC) of the nightly backtest.")
    schedule_backup: Cron = Field(default="*/5 * * * *", description="Cron (UTC) of the state backup.")
    schedule_restore_drill: Cron = Field(default="0 3 * * 0", description="Cron (UTC) of the backup restore drill.")
    schedule_summary: Cron = Field(default="5 0 * * *", description="Cron (UTC) of the daily summary.")
    schedule_parity: Cron = Field(default="20 0 * * *", description="Cron (UTC) of the parity report.")
    backup_keep: int = Field(default=100, ge=1, description="State backups kept (the newest).")
    backup_max_age_days: float = Field(default=30.0, gt=0, description="State backups older than this are removed.")
    nightly_backtest_days: int = Field(default=30, ge=1, description="Days of bars the nightly backtest covers.")
    nightly_breaker_cooldown_bars: int | None = Field(
        default=None,
        ge=1,
        description="Bars after which a drawdown or loss-streak breaker tripped in a nightly backtest releases by "
        "itself, as an operator's reset would (the engine's breaker_cooldown_bars); empty leaves it tripped, so "
        "one such trip pauses the rest of that nightly run. Daily breakers release at the next trading day "
        "either way; a portfolio file's sleeves use the file's own engine settings.",
    )

    optuna_storage: DatabaseUrl = Field(
        default=None,
        description="Optuna storage URL of the parameter studies (postgresql://... lets workers on several hosts "
        "share one study); empty keeps them in SQLite at <data_dir>/research/optuna.db.",
    )
    dask_address: Annotated[str | None, BeforeValidator(_unset_if_empty),
                            AfterValidator(_checked(dask_address_problem))] = Field(
        default=None,
        description="Address of a Dask scheduler (tcp://host:8786) the optimise flow sends its trials to; empty "
        "starts a local cluster on this machine.",
    )

    @field_validator("universe", mode="before")
    @classmethod
    def _split_universe(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("universe")
    @classmethod
    def _parse_universe(cls, value: list[str]) -> list[str]:
        from pipeline.data.universe import parse_series
        from pipeline.domain import DataError

        problems = []
        for entry in value:
            try:
                parse_series(entry)
            except DataError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("data_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{str(value)!r} is a file, not a folder")
        return value

    @field_validator("strategy_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(part.strip()).expanduser() for part in value.split(",") if part.strip()]
        return value

    @field_validator("nightly_breaker_cooldown_bars", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("telegram_chat_ids", mode="before")
    @classmethod
    def _split_chat_ids(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        ids = []
        for part in (part.strip() for part in value.replace(";", ",").split(",")):
            if not part:
                continue
            try:
                ids.append(int(part))
            except ValueError:
                raise ValueError(f"{part!r} is not a chat id: a chat id is a whole number (negative for groups and "
                                 "channels); ask the bot's getUpdates or @userinfobot for it") from None
        return ids

    @cached_property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @cached_property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @cached_property
    def health_path(self) -> Path:
        return self.data_dir / "quality" / "health.parquet"

    @cached_property
    def backup_dir(self) -> Path:
        return self.data_dir / "backups"

    @cached_property
    def study_url(self) -> str:
        """The Optuna storage URL of the parameter studies (a PostgreSQL URL gets the installed psycopg driver)."""
        if self.optuna_storage:
            return _postgres_driver(self.optuna_storage)
        return f"sqlite:///{(self.data_dir / 'research' / 'optuna.db').as_posix()}"

    @cached_property
    def state_url(self) -> str:
        if self.database_url:
            return _postgres_driver(self.database_url)
        return f"sqlite:///{(self.data_dir / 'state' / 'tradeforge.db').as_posix()}"


def _postgres_driver(url: str) -> str:
    """``url`` with the installed PostgreSQL driver (psycopg 3; plain postgresql:// would ask for psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


SECRETS = frozenset(name for name, field in Settings.model_fields.items()
                    if field.annotation is SecretStr or SecretStr in get_args(field.annotation))
"""The settings whose values are never shown."""


def variable(field: str) -> str:
    """The environment variable of a setting."""
    return f"TRADEFORGE_{field.upper()}"


def settings_problems(exc: ValidationError) -> str:
    """The problems of settings that failed to load, on one line, each named by its environment variable."""
    return describe(exc, Settings, variable, SECRETS)


def load_settings() -> Settings:
    """Settings from the environment and ``.env``; ``SettingsError`` names every one that cannot be used."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"configuration is invalid: {settings_problems(exc)}") from None
