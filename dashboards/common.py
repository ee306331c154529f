"""What every page shares: settings, the read-only state store, cached report queries, formatting, the
password gate and control commands (the dashboard's only writes to the state store)."""

from __future__ import annotations

import hmac
from datetime import datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from pipeline import reports
from pipeline.backtest.adhoc import AdhocRequest
from pipeline.clock import SystemClock
from pipeline.services import credential, prefect_api
from pipeline.settings import Settings, load_settings
from pipeline.state import StateError, StateStore

READ_TTL_S = 5
SLOW_TTL_S = 60


def settings() -> Settings:
    """Settings from the environment and ``.env`` (read on every run, so a changed variable is seen)."""
    return load_settings()


def now() -> datetime:
    return SystemClock().now().to_pydatetime()


# ------------------------------------------------------------------------------------------------ the state


@st.cache_resource(show_spinner=False)
def _read_store(url: str) -> StateStore:
    return StateStore.read_only(url)


def read_store(config: Settings) -> StateStore | None:
    """The state store opened read-only, or None (with a note on the page) when there is no state yet."""
    try:
        return _read_store(config.state_url)
    except StateError as exc:
        st.info(f"No runtime state to show yet: {exc}. Start the runtime (`tradeforge runtime ... --fresh`).")
        return None


def send_command(config: Settings, command: str, sleeve: str | None) -> int:
    """Queue a control command for the runtime (source ``dashboard``); returns its id."""
    with StateStore(config.state_url, create=False) as store:
        return store.add_command(command, source="dashboard", sleeve=sleeve)


def overview(url: str, at: datetime) -> reports.Overview:
    return reports.overview(_read_store(url), at)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def equity_curve(url: str, sleeve: str) -> pd.DataFrame:
    return reports.equity_curve(_read_store(url), sleeve)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def commands(url: str) -> pd.DataFrame:
    return reports.commands(_read_store(url), limit=20)


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def sleeves(url: str) -> list[str]:
    return reports.sleeves(_read_store(url))


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def trades(url: str, sleeve: str | None = None, symbol: str | None = None, start: Any = None, end: Any = None,
           outcome: reports.trading.Outcome = "all") -> reports.TradeSelection:
    return reports.trades(_read_store(url), sleeve, symbol, start, end, outcome)


# ------------------------------------------------------------------------------------------------ formatting


def money(value: Decimal | float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{float(value):+,.2f}" if signed else f"{float(value):,.2f}"


def percent(value: float | None, signed: bool = False) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:+.2%}" if signed else f"{value:.2%}"


def number(value: float | int | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(value: datetime | pd.Timestamp | None) -> str:
    return "-" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------------------------ the gate


def _password(config: Settings) -> str | None:
    """The operator credential the dashboard asks for: ``dashboard_password`` when set, else the one ``tradeforge
    up`` stored for this data folder (which also opens Prefect); None leaves the dashboard open."""
    try:
        return credential.operator_credential(config)
    except credential.CredentialError as exc:  # unreadable: stay locked, say why (never the value)
        st.error(f"{exc}. The dashboard stays locked.")
        st.stop()


def password_required(config: Settings) -> bool:
    return _password(config) is not None


def signed_in(config: Settings) -> bool:
    """True when no credential is set, or this session entered it."""
    return not password_required(config) or st.session_state.get("authenticated") is True


def login(config: Settings) -> None:
    """The sign-in form; the correct credential (compared in constant time) opens the dashboard on the page whose
    address was opened (with its query parameters)."""
    secret = _password(config)
    assert secret is not None
    st.title("tradeforge")
    with st.form("login"):
        typed = st.text_input("Password", type="password", key="password_input",
                              help="The operator credential: TRADEFORGE_DASHBOARD_PASSWORD when set, else the file "
                                   "data/run/operator-credential that `tradeforge up` wrote (it also opens Prefect).")
        entered = st.form_submit_button("Enter")
    if entered:
        if hmac.compare_digest(typed.encode(), secret.encode()):
            st.session_state["authenticated"] = True
            st.session_state.pop("password_input", None)
            st.rerun()
        st.error("Wrong password.")


def page_settings() -> Settings:
    """The settings for a page; stops the page when the dashboard is locked (a second line behind the
    sign-in page, so that no page renders without the password even if reached directly)."""
    config = settings()
    if not signed_in(config):
        st.error("Sign in first.")
        st.stop()
    return config


# ------------------------------------------------------------------------------------------- confirmations


def confirm(key: str, question: str) -> bool:
    """Two-step confirmation of an action armed with ``arm(key, ...)``: True once the user confirms."""
    if st.session_state.get("armed") != key:
        return False
    st.warning(question)
    yes, no = st.columns(2)
    if yes.button("Confirm", key=f"confirm-{key}", type="primary"):
        st.session_state.pop("armed", None)
        return True
    if no.button("Cancel", key=f"cancel-{key}"):
        st.session_state.pop("armed", None)
        st.rerun()
    return False


def arm(key: str) -> None:
    st.session_state["armed"] = key


def launch_backtest(config: Settings, request: AdhocRequest) -> None:
    """Send ``request`` to the ad hoc backtest deployment and say what became of it (the Backtests and the
    Optimisation pages' one way to launch a backtest)."""
    with st.spinner("Asking Prefect…"):
        launch = prefect_api.launch_backtest(config.prefect_api_url, request, timeout_s=config.http_timeout_s,
                                             auth=credential.client_auth_string(config))
    if launch.ok:
        st.success(f"Launched: {launch.message} (flow run id {launch.flow_run_id}).")
    else:
        st.error(f"Not launched: {launch.message}")
