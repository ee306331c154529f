"""Data health: coverage per stored series (rows, gaps, missing bars, staleness) and the quarantine."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import common
from pipeline import reports

st.title("Data health")
config = common.page_settings()


@st.cache_data(ttl=common.SLOW_TTL_S, show_spinner="Checking the lake…")
def health(lake: str, minute: pd.Timestamp) -> pd.DataFrame:
    return reports.data_health(config, minute)


@st.cache_data(ttl=common.SLOW_TTL_S, show_spinner=False)
def quarantine(folder: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return reports.quarantine_reasons(config), reports.quarantine_rows(config, limit=500)


table = health(str(config.lake_dir), pd.Timestamp(common.now()).floor("min"))
if table.empty:
    st.info("The lake is empty: ingest data first (`tradeforge ingest ...`).")
    st.stop()
top = st.columns(4)
top[0].metric("Series", f"{len(table)}")
top[1].metric("Stale series", f"{int(table['stale'].sum())}")
top[2].metric("Missing bars", f"{int(table['missing_bars'].sum()):,}")
top[3].metric("Quarantined rows", f"{int(table['quarantined'].sum()):,}")
if table["sample"].any():
    st.caption("Series flagged sample hold synthetic market data, not real prices.")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"coverage": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                         format="percent")})
labels = table["venue"] + " " + table["symbol"] + " " + table["timeframe"]
figure = go.Figure(go.Bar(x=labels, y=table["coverage"], text=[common.percent(v) for v in table["coverage"]]))
figure.update_layout(height=260, yaxis={"range": [0, 1], "tickformat": ".0%"}, title="Coverage per series",
                     margin={"l": 10, "r": 10, "t": 40, "b": 10})
st.plotly_chart(figure, width="stretch")

st.subheader("Quarantine")
reasons, rows = quarantine(str(config.quarantine_dir))
if reasons.empty:
    st.write("Nothing is quarantined.")
else:
    st.dataframe(reasons, hide_index=True, width="stretch")
    st.caption(f"The {len(rows)} most recently quarantined rows:")
    st.dataframe(rows, hide_index=True, width="stretch")
