"""Backtests: stored runs and their metrics (breaker trips, releases and paused bars among them), equity and
drawdown of selected runs compared with their breaker events, and an ad hoc backtest launched through the Prefect
deployment ``adhoc-backtest/adhoc-backtest``."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboards import common
from pipeline import reports
from pipeline.backtest.adhoc import AdhocRequest
from pipeline.domain import DataError
from pipeline.services import prefect_api
from pipeline.strategies import REGISTRY

st.title("Backtests")
config = common.page_settings()
root = reports.backtest_root(config.data_dir)


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def runs(folder: str) -> pd.DataFrame:
    return reports.runs(root)


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def curves(folder: str, chosen: tuple[str, ...]) -> pd.DataFrame:
    return reports.curves(root, chosen)


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def breaker_events(folder: str, chosen: tuple[str, ...]) -> pd.DataFrame:
    return reports.breaker_events(root, chosen)


stored = runs(str(root))
if stored.empty:
    st.info(f"No stored backtest under {root}: run one (`tradeforge backtest ...`) or launch one below.")
else:
    st.dataframe(
        stored, hide_index=True, width="stretch",
        column_config={name: st.column_config.NumberColumn(format="%.4f")
                       for name in ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate",
                                    "profit_factor", "buy_and_hold_return")}
        | {"final_equity": st.column_config.NumberColumn(format="%.2f"),
           "fees": st.column_config.NumberColumn(format="%.2f"),
           "breaker_trips": st.column_config.NumberColumn("breaker trips", format="%d"),
           "breaker_releases": st.column_config.NumberColumn("breaker releases", format="%d"),
           "paused_bars": st.column_config.NumberColumn(
               "paused bars", format="%d", help="Bars whose new entries a circuit breaker blocked"),
           "breaker_rules": st.column_config.TextColumn("breakers tripped")},
    )
    chosen = st.multiselect("Compare runs", list(stored["run_id"]), default=list(stored["run_id"][:2]),
                            key="backtests_compare")
    if chosen:
        frame = curves(str(root), tuple(chosen))
        figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.65, 0.35],
                               subplot_titles=("Equity (growth of 1)", "Drawdown"))
        for run_id, part in frame.groupby("run_id"):
            figure.add_trace(go.Scatter(x=part["timestamp"], y=part["growth"], mode="lines", name=str(run_id)),
                             row=1, col=1)
            figure.add_trace(go.Scatter(x=part["timestamp"], y=part["drawdown"], mode="lines", name=str(run_id),
                                        showlegend=False, fill="tozeroy"), row=2, col=1)
        figure.update_yaxes(tickformat=".1%", row=2, col=1)
        figure.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10})
        st.plotly_chart(figure, width="stretch")
        events = breaker_events(str(root), tuple(chosen))
        st.markdown("**Breaker events of the selected runs**")
        if events.empty:
            st.caption("No circuit breaker tripped in the selected runs.")
        else:
            trips = int((events["action"] == "trip").sum())
            st.caption(f"{trips} trips, {len(events) - trips} releases. Daily breakers release at the next trading "
                       "day; drawdown and loss-streak breakers wait for an operator (or the run's cool-down).")
            st.dataframe(events, hide_index=True, width="stretch",
                         column_config={"value": st.column_config.NumberColumn(format="%.4g"),
                                        "threshold": st.column_config.NumberColumn(format="%.4g")})

st.subheader("Launch an ad hoc backtest")
st.caption(f"Runs the Prefect deployment {prefect_api.FLOW}/{prefect_api.DEPLOYMENT} at {config.prefect_api_url}; "
           "the stored run appears above when the flow finishes.")
with st.form("launch"):
    row = st.columns(4)
    strategy = row[0].selectbox("Strategy", REGISTRY.names(), key="launch_strategy")
    symbol = row[1].text_input("Symbol", "BTC/USDT", key="launch_symbol")
    timeframe = row[2].text_input("Timeframe", "1h", key="launch_timeframe")
    venue = row[3].text_input("Venue (optional)", "", key="launch_venue")
    row = st.columns(4)
    start = row[0].text_input("Start (UTC, optional)", "", key="launch_start")
    end = row[1].text_input("End (UTC, optional)", "", key="launch_end")
    fee_bps = row[2].number_input("Fee (bps)", min_value=0.0, max_value=1000.0, value=10.0, key="launch_fee")
    slippage_bps = row[3].number_input("Slippage (bps)", min_value=0.0, max_value=1000.0, value=0.0,
                                       key="launch_slippage")
    row = st.columns(4)
    max_position = row[0].number_input("Max position", min_value=0.01, value=0.25, key="launch_max_position")
    cash = row[1].number_input("Cash", min_value=1.0, value=100_000.0, key="launch_cash")
    cooldown = row[2].number_input(
        "Breaker cool-down (bars)", min_value=0, value=0, step=1, key="launch_cooldown",
        help="Drawdown and loss-streak breakers release by themselves after this many bars, as an operator's "
             "reset would; 0 keeps them tripped for the rest of the run. Daily breakers release each new day.")
    params_text = row[3].text_input("Parameters (name=value, comma-separated)", "", key="launch_params")
    submitted = st.form_submit_button("Launch")
if submitted:
    try:
        params = {}
        for item in filter(None, (part.strip() for part in params_text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise DataError(f"parameter {item!r} is not of the form name=value")
            params[key.strip()] = value.strip()
        request = AdhocRequest(
            strategy=strategy, symbol=symbol, timeframe=timeframe, venue=venue or None, start=start or None,
            end=end or None, fee_bps=fee_bps, slippage_bps=slippage_bps, max_position=max_position, cash=cash,
            params=params, breaker_cooldown_bars=int(cooldown) or None)
    except DataError as exc:
        st.error(f"Not launched: {exc}")
    else:
        common.launch_backtest(config, request)
