"""Trades: the closed round trips with PnL, fees, reasons and model version; filters and a CSV download."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboards import common
from pipeline import reports
from pipeline.domain import DataError

st.title("Trades")
config = common.page_settings()
store = common.read_store(config)
if store is None:
    st.stop()
url = config.state_url
everything = common.trades(url).frame
if everything.empty:
    st.info("No closed trade yet.")
    st.stop()

filters = st.columns([2, 2, 3, 2])
sleeve = filters[0].selectbox("Sleeve", ["all", *common.sleeves(url)], key="trades_sleeve")
symbol = filters[1].selectbox("Symbol", ["all", *sorted(everything["symbol"].unique())], key="trades_symbol")
first = pd.Timestamp(everything["exit_time"].min()).date()
last = pd.Timestamp(everything["exit_time"].max()).date()
span = filters[2].date_input("Exit between (UTC days)", value=(first, last), key="trades_range")
outcome = filters[3].radio("Show", reports.OUTCOMES, horizontal=True, key="trades_outcome")
days: tuple[date, ...] = span if isinstance(span, tuple) else (span,)
start = pd.Timestamp(days[0], tz="UTC") if days else None
end = pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1) if days else None
try:
    chosen = common.trades(url, None if sleeve == "all" else sleeve, None if symbol == "all" else symbol,
                           start, end, outcome)
except DataError as exc:
    st.error(str(exc))
    st.stop()

figures = st.columns(5)
figures[0].metric("Trades", f"{chosen.count:,}")
figures[1].metric("PnL (net of fees)", common.money(chosen.pnl, signed=True))
figures[2].metric("Fees", common.money(chosen.fees))
figures[3].metric("Win rate", common.percent(chosen.win_rate))
figures[4].metric("Winners / losers", f"{chosen.winners} / {chosen.losers}")
st.dataframe(
    chosen.frame, hide_index=True, width="stretch",
    column_config={
        "pnl": st.column_config.NumberColumn("PnL", format="%.2f"),
        "fees": st.column_config.NumberColumn(format="%.2f"),
        "entry_price": st.column_config.NumberColumn(format="%.2f"),
        "exit_price": st.column_config.NumberColumn(format="%.2f"),
    },
)
st.download_button("Download CSV", reports.trades_csv(chosen), file_name="trades.csv", mime="text/csv",
                   key="trades_csv")
