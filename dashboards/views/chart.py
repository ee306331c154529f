"""Chart: candles of a stored series with SMA 50, trade entries and exits, and the production model's
probability (scored on the fly over the shown bars by the model carrying the ``production`` alias). It opens on
the series the runtime trades (its most recently read feed), else on the series with the most bars."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboards import common
from pipeline import reports
from pipeline.domain import DataError, Timeframe
from pipeline.reports.traded import chart_default, traded_feeds

if TYPE_CHECKING:
    from pipeline.models.registry import ProductionModel

st.title("Chart")
config = common.page_settings()


@st.cache_data(ttl=common.SLOW_TTL_S, show_spinner=False)
def catalog(lake: str) -> pd.DataFrame:
    return reports.catalog(config)


@st.cache_data(ttl=common.SLOW_TTL_S, show_spinner=False)
def production_versions(uri: str) -> dict[str, str]:
    return reports.production_versions(config)


@st.cache_resource(show_spinner="Loading the production model…", max_entries=4)
def production_model(uri: str, symbol: str, timeframe: str, version: str) -> ProductionModel | None:
    return reports.load_production(config, symbol, Timeframe.parse(timeframe))


series = catalog(str(config.lake_dir))
if series.empty:
    st.info("The lake is empty: ingest data first (`tradeforge ingest ...`).")
    st.stop()
state = common.read_store(config)
default = chart_default(series, traded_feeds(state) if state is not None else [])
assert default is not None  # the lake holds series
names = sorted({f"{v} {s}" for v, s in zip(series["venue"], series["symbol"], strict=True)})
pick = st.columns([2, 1, 2, 1])
chosen = pick[0].selectbox("Symbol", names, index=names.index(default.name), key="chart_symbol",
                           help=f"Opens on {default.name} {default.timeframe}: {default.why}.")
venue, symbol = chosen.split(" ", 1)
timeframes = reports.chart_timeframes(series, venue, symbol)
opening = timeframes.index(default.timeframe) if chosen == default.name and default.timeframe in timeframes else 0
timeframe = pick[1].selectbox("Timeframe", timeframes, index=opening, key="chart_timeframe")
try:
    first, last = reports.series_span(series, venue, symbol, timeframe)
except DataError as exc:
    st.error(str(exc))
    st.stop()
default_start = max(first.date(), (last - timedelta(days=2)).date())
dates = pick[2].date_input("Range (UTC days)", value=(default_start, last.date()), min_value=first.date(),
                           max_value=last.date(), key=f"chart_range-{chosen}-{timeframe}")
max_bars = pick[3].number_input("Most bars drawn", min_value=100, max_value=20_000, value=2_000, step=100,
                                key="chart_max_bars")
if not isinstance(dates, tuple) or len(dates) != 2:
    st.info("Pick the first and the last day of the range.")
    st.stop()
start = pd.Timestamp(dates[0], tz="UTC")
end = pd.Timestamp(dates[1], tz="UTC") + pd.Timedelta(days=1)

trades = common.trades(config.state_url).frame if state is not None else None
try:
    data = reports.chart_data(config, venue, symbol, timeframe, start, end, trades, int(max_bars))
except DataError as exc:
    st.error(str(exc))
    st.stop()
if data.bars.empty:
    st.info(f"No {symbol} {timeframe} bars between {dates[0]} and {dates[1]}.")
    st.stop()

probability = None
model_note = ""
name = reports.hybrid_model_name(symbol, data.timeframe)
version = production_versions(config.mlflow_tracking_uri).get(name)
if version is None:
    model_note = f"No production model {name}: no probability to show."
elif data.source_bars > reports.models.PROBABILITY_MAX_BARS:
    model_note = (f"Model probability not scored: {data.source_bars:,} bars is more than "
                  f"{reports.models.PROBABILITY_MAX_BARS:,}; narrow the range.")
else:
    model = production_model(config.mlflow_tracking_uri, symbol, str(data.timeframe), version)
    if model is not None:
        probability = reports.chart_probability(config, model, venue, symbol, data.timeframe, data.bars,
                                                data.shown_timeframe)
        model_note = f"Probability of an up-move from {name} v{version} (production), scored over these bars."

if data.downsampled:
    st.info(f"Down-sampled: {data.source_bars:,} {data.timeframe} bars are drawn as {len(data.bars):,} "
            f"{data.shown_timeframe} bars (above {int(max_bars):,} bars the chart resamples to a coarser timeframe).")
st.caption(f"{len(data.bars):,} bars · {len(data.entries)} entries · {len(data.exits)} exits · {model_note}")

rows = 2 if probability is not None else 1
figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                       row_heights=[0.75, 0.25] if rows == 2 else [1.0])
bars = data.bars
figure.add_trace(go.Candlestick(x=bars["timestamp"], open=bars["open"], high=bars["high"], low=bars["low"],
                                close=bars["close"], name=f"{symbol} {data.shown_timeframe}"), row=1, col=1)
figure.add_trace(go.Scatter(x=bars["timestamp"], y=bars["sma"], mode="lines", name="SMA 50",
                            line={"width": 1.2, "color": "#ff9f1c"}), row=1, col=1)
if not data.entries.empty:
    figure.add_trace(go.Scatter(x=data.entries["timestamp"], y=data.entries["price"], mode="markers", name="entry",
                                marker={"symbol": "triangle-up", "size": 10, "color": "#2a9d8f"},
                                text=data.entries["sleeve"] + ": " + data.entries["reason"]), row=1, col=1)
if not data.exits.empty:
    colours = ["#2a9d8f" if pnl > 0 else "#e63946" for pnl in data.exits["pnl"]]
    figure.add_trace(go.Scatter(x=data.exits["timestamp"], y=data.exits["price"], mode="markers", name="exit",
                                marker={"symbol": "triangle-down", "size": 10, "color": colours},
                                text=data.exits["sleeve"] + ": " + data.exits["reason"]), row=1, col=1)
if probability is not None:
    figure.add_trace(go.Scatter(x=bars["timestamp"], y=probability, mode="lines", name="P(up)",
                                line={"color": "#6a4c93"}), row=2, col=1)
    figure.update_yaxes(range=[0, 1], title_text="P(up)", row=2, col=1)
figure.update_layout(height=640, xaxis_rangeslider_visible=False, margin={"l": 10, "r": 10, "t": 30, "b": 10})
st.plotly_chart(figure, width="stretch")
