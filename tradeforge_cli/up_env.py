"""What each child of ``tradeforge up`` finds in its environment: only what it uses (least secrets).

Every child's environment is built from an allow-list (:class:`Receives`), never by copying the environment of
``up``. Every child gets the basics a process needs (``PATH``, ``HOME``, the locale, the CA bundles, Python's and the
maths libraries' knobs, the instance tag of ``up``); then

* the Prefect server gets Prefect's settings (``PREFECT_*``), the MLflow UI MLflow's (``MLFLOW_*``) and the cloud
  clients' (``AWS_*``, ``AZURE_*``, ``GOOGLE_*``: artifacts may live there): no ``TRADEFORGE_*`` setting at all;
* every child that opens the state database gets libpq's variables (``PG*``: a PostgreSQL URL may rely on them),
  and every child that reads MLflow the cloud clients';
* the dashboard gets Streamlit's and MLflow's settings, the settings that are not secrets, and the operator
  credential ``dashboard_password`` when it is set (the sign-in form checks it);
* the deployments' server (which runs the flows) and the runtime get the settings that are not secrets, the venue
  keys, the Telegram token and the proxies of the environment (they reach venues and Telegram);
* the bot's API gets the settings that are not secrets and its bearer token ``api_token``.

``PREFECT_API_KEY`` (Prefect Cloud's key, which Prefect's clients would send instead of the local server's auth
string) reaches no child. A secret the operator keeps in ``.env`` is read by the children that use it themselves.

The pool the children's environments are picked from (:func:`base_env`) adds to ``up``'s environment: telemetry
off, Prefect's home and API, the Prefect server's protection (the operator credential as its API auth string, CSRF
tokens on every change, cross-origin requests from its own UI's origin only), the same credential for Prefect's
clients, and the tag of this ``up``.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from pipeline.services import credential
from pipeline.settings import Settings
from tradeforge_cli.up_guard import INSTANCE_VARIABLE

SETTINGS_PREFIX = "TRADEFORGE_"
BASICS = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "TERM", "NO_COLOR",
    "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "DO_NOT_TRACK", INSTANCE_VARIABLE,
})
BASIC_PREFIXES = ("LC_", "PYTHON", "OPENBLAS_", "OMP_", "MKL_", "NVPL_", "NUMBA_", "TORCH_", "CUDA_")
PROXIES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"})
STATE_STORE = ("PG",)
"""libpq's own variables (PGPASSWORD, PGSERVICE, PGSSLMODE...): a PostgreSQL state URL may rely on them."""
ARTIFACT_STORES = ("AWS_", "AZURE_", "GOOGLE_")
"""The cloud clients' variables: an MLflow store whose artifacts live in S3, Azure or GCS relies on them."""
NEVER = frozenset({"PREFECT_API_KEY"})

VENUE_SECRETS = frozenset({"ccxt_api_key", "ccxt_api_secret", "alpaca_api_key", "alpaca_api_secret"})
TELEGRAM_SECRETS = frozenset({"telegram_token"})


def secret_settings() -> frozenset[str]:
    """The names of the settings that are secrets (``SecretStr``)."""
    return frozenset(name for name, field in Settings.model_fields.items()
                     if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation))


@dataclass(frozen=True)
class Receives:
    """The allow-list of one child: the configuration namespaces of the tools it runs (``prefixes``), whether it
    reads tradeforge's settings (``settings``: those that are not secrets), the secret settings it uses (``secrets``,
    by field name) and whether it reaches the network through the environment's proxies (``proxies``)."""

    prefixes: tuple[str, ...] = ()
    settings: bool = False
    secrets: frozenset[str] = frozenset()
    proxies: bool = False

    def __post_init__(self) -> None:
        unknown = self.secrets - secret_settings()
        if unknown:
            raise ValueError(f"not secret settings: {', '.join(sorted(unknown))}")

    def allows(self, name: str) -> bool:
        upper = name.upper()
        if upper in NEVER:
            return False
        if name in BASICS or name.startswith(BASIC_PREFIXES):
            return True
        if self.proxies and upper in PROXIES:
            return True
        if upper.startswith(SETTINGS_PREFIX):
            field = upper.removeprefix(SETTINGS_PREFIX).lower()
            if field not in Settings.model_fields:
                return False
            return field in self.secrets if field in secret_settings() else self.settings
        return name.startswith(self.prefixes)

    def pick(self, environment: Mapping[str, str]) -> dict[str, str]:
        """The part of ``environment`` this child receives."""
        return {name: value for name, value in environment.items() if self.allows(name)}


PREFECT_SERVER = Receives(prefixes=("PREFECT_",))
MLFLOW_UI = Receives(prefixes=("MLFLOW_", *ARTIFACT_STORES))
DASHBOARD = Receives(prefixes=("STREAMLIT_", "MLFLOW_", *STATE_STORE, *ARTIFACT_STORES), settings=True,
                     secrets=frozenset({"dashboard_password"}))
FLOW_RUNNER = Receives(prefixes=("PREFECT_", "MLFLOW_", "DASK_", *STATE_STORE, *ARTIFACT_STORES), settings=True,
                       secrets=VENUE_SECRETS | TELEGRAM_SECRETS, proxies=True)
RUNTIME = Receives(prefixes=("MLFLOW_", *STATE_STORE, *ARTIFACT_STORES), settings=True,
                   secrets=VENUE_SECRETS | TELEGRAM_SECRETS, proxies=True)
BOT_API = Receives(prefixes=STATE_STORE, settings=True, secrets=frozenset({"api_token"}))


def origin(url: str) -> str:
    """The web origin (``scheme://host:port``) of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def ui_origins(url: str) -> str:
    """The origins the Prefect UI at ``url`` is opened from, comma-separated: its own, and on a loopback address
    every name of the loopback with the same port (``localhost:4200`` opens the same UI)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return origin(url)
    port = f":{parts.port}" if parts.port else ""
    return ",".join(f"{parts.scheme}://{name}{port}" for name in LOOPBACK_NAMES)


def base_env(settings: Settings, home: Path, instance: str) -> dict[str, str]:
    """``up``'s environment and what it adds for its children (the credential is created on first start unless
    ``dashboard_password`` is set; raises ``CredentialError`` when it cannot be read or written); ``instance`` is
    the tag of this ``up``, which the processes the children start inherit."""
    secret = credential.ensure(settings)
    env = dict(os.environ)
    env.update({
        INSTANCE_VARIABLE: instance,
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(env.get("PREFECT_HOME") or home / ".prefect"),
        "PREFECT_API_URL": settings.prefect_api_url,
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_UI_API_URL": settings.prefect_api_url,
        "PREFECT_SERVER_API_AUTH_STRING": secret,
        credential.CLIENT_VARIABLE: secret,
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "true",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ui_origins(settings.prefect_api_url),
        "TRADEFORGE_DATA_DIR": str(settings.data_dir),
        "TRADEFORGE_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    return env


OWN_ENV = ("PREFECT_HOME", "PREFECT_API_URL", credential.CLIENT_VARIABLE, "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED",
           "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED")


def own_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of :func:`base_env` that ``up`` itself needs (its bootstrap flow runs talk to the Prefect server)."""
    return {name: env[name] for name in OWN_ENV}
