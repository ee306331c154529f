"""Optimisation: the parameter studies ``tradeforge optimize`` kept under ``<data_dir>/research/``. Per study its
headline numbers and overfitting verdict, the trials, the objective over the trials, each parameter's importance,
a heatmap of the objective over two parameters, the walk-forward folds with the stitched out-of-sample curve, and
an ad hoc backtest of the best parameters launched through the Prefect deployment ``adhoc-backtest/adhoc-backtest``
(as on the Backtests page)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import common
from pipeline.backtest.adhoc import AdhocRequest
from pipeline.domain import DataError
from pipeline.reports import research
from pipeline.services import prefect_api

st.title("Optimisation")
config = common.page_settings()
root = research.research_root(config.data_dir)
MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def listing(folder: str) -> research.Listing:
    return research.studies(Path(folder))


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def trials(folder: str, saved: float) -> pd.DataFrame:
    return research.trials(Path(folder))


@st.cache_data(ttl=common.READ_TTL_S, show_spinner=False)
def out_of_sample(folder: str, saved: float) -> pd.DataFrame | None:
    return research.out_of_sample(Path(folder))


def value(number: float | None) -> str:
    return common.number(number, 4)


found = listing(str(root))
for folder, why in found.skipped:
    st.warning(f"Skipped the study in {folder}: {why}")
if not found.studies:
    st.info(f"No parameter study under {root} yet: run one with `tradeforge optimize --strategy NAME --space "
            "name=LOW:HIGH[:STEP] ...` (add `--walk-forward 3` for out-of-sample folds).")
    st.stop()
reports = {str(r["folder"]): r for r in found.studies}
chosen = st.selectbox("Study (newest first)", list(reports), format_func=lambda f: research.label(reports[f]),
                      key="optimisation_study")
report: dict[str, Any] = reports[chosen]
study = str(report["study"])
st.caption(f"Strategy `{report.get('strategy', '?')}` · space `{report.get('space', '?')}` · objective "
           f"`{report.get('objective', '?')}` · sampler {report.get('sampler', '?')} · {report.get('bars', '?')} bars "
           f"from {report.get('first', '?')} to {report.get('last', '?')} · kept in {chosen}")

# ------------------------------------------------------------------------------------------------ headline
head = research.headline(report)
row = st.columns(5)
row[0].metric("Best value", value(head.best_value), help=f"trial #{report.get('best_trial', '?')}: "
              f"{report.get('best_params', '?')}")
row[1].metric("Backtest value", value(head.backtest_value),
              help="the best trial's parameters re-run as a plain backtest over the same bars")
row[2].metric("Backtest matches", {True: "yes", False: "no", None: "-"}[head.backtest_matches])
row[3].metric("Trials completed", "-" if head.completed is None else f"{head.completed:,}",
              help=f"of {head.trials if head.trials is not None else '?'} finished trials, those with a value")
row[4].metric("Trials failed", "-" if head.failed is None else f"{head.failed:,}",
              help="the objective was undefined, too few trades, or the parameter model refused the set")
row = st.columns(5)
row[0].metric("DSR probability", value(head.deflated_sharpe),
              help=head.unavailable.get("deflated_sharpe", "the deflated Sharpe ratio: the probability that the best "
                                        "trial's true Sharpe ratio beats the best of as many trials without skill"))
if head.pbo is not None or "pbo" in head.unavailable:
    row[1].metric("PBO", value(head.pbo), help=head.unavailable.get(
        "pbo", "the probability of backtest overfitting: how often the in-sample winner ranks in the bottom half "
               "out of sample"))
walk_value = research.out_of_sample_value(report)
if walk_value is not None:
    row[2].metric("Out-of-sample value", value(walk_value),
                  help="the objective over the walk-forward folds' stitched out-of-sample equity")
if head.backtest_matches is False:
    st.warning("The plain backtest of the best parameters does not give the study's value.")
if head.verdict is not None:
    st.info(head.verdict)
else:
    st.caption("This study's report has no overfitting verdict.")

# ------------------------------------------------------------------------------------------------ the trials
table: pd.DataFrame | None = None
try:
    table = trials(chosen, float(report["saved"]))
except DataError as exc:
    st.warning(f"{exc}: the trials, their charts and the importance are not shown.")
if table is not None:
    names = research.parameters(table)
    st.subheader("Trials")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"number": st.column_config.NumberColumn("trial", format="%d"),
                                "value": st.column_config.NumberColumn(format="%.4f")})
    progress = research.best_so_far(table)
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=progress["number"], y=progress["value"], mode="markers", name="trial"))
    figure.add_trace(go.Scatter(x=progress["number"], y=progress["best"], mode="lines", name="best so far",
                                line={"shape": "hv"}))
    figure.update_layout(height=320, margin=MARGIN, title=f"{report.get('objective', 'objective')} per trial",
                         xaxis_title="trial", yaxis_title="value")
    st.plotly_chart(figure, width="stretch")

    st.subheader("Parameter importance")
    weights = research.importance(table, names)
    left, right = st.columns([3, 2])
    bars = go.Figure()
    bars.add_trace(go.Bar(x=weights["eta2"], y=weights["parameter"], orientation="h", name="eta²"))
    bars.add_trace(go.Bar(x=weights["epsilon2"], y=weights["parameter"], orientation="h", name="epsilon² (adjusted)"))
    bars.update_layout(height=80 + 50 * max(len(weights), 1), margin=MARGIN, barmode="group",
                       xaxis={"range": [0, 1], "tickformat": ".0%"}, yaxis={"autorange": "reversed"})
    left.plotly_chart(bars, width="stretch")
    right.dataframe(weights, hide_index=True, width="stretch",
                    column_config={"eta2": st.column_config.NumberColumn("eta²", format="%.4f"),
                                   "epsilon2": st.column_config.NumberColumn("epsilon²", format="%.4f")})
    right.caption("eta²: the share of the objective's variance across the trials with a value that the "
                  "parameter's per-value means explain (one parameter at a time). epsilon² subtracts what as many "
                  "groups of random values would explain, so a parameter with many levels and few trials does not "
                  f"look important by chance. Beyond {research.MAX_LEVELS} distinct values a parameter is cut into "
                  "quantile bins.")

    st.subheader("Objective over two parameters")
    if len(names) < 2:
        st.caption("The heatmap needs two searched parameters; this study searched "
                   f"{', '.join(names) or 'none'}.")
    else:
        axes = st.columns(2)
        x = axes[0].selectbox("Across", names, index=0, key="optimisation_x")
        y = axes[1].selectbox("Up", names, index=1, key="optimisation_y")
        if x == y:
            st.caption("Choose two different parameters.")
        else:
            cells = research.heatmap(table, x, y)
            heat = go.Figure(go.Heatmap(z=cells.to_numpy(), x=[str(c) for c in cells.columns],
                                        y=[str(i) for i in cells.index], colorbar={"title": "mean value"},
                                        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>mean value %{{z:.4f}}"
                                                      "<extra></extra>"))
            heat.update_layout(height=420, margin=MARGIN, xaxis={"title": x, "type": "category"},
                               yaxis={"title": y, "type": "category"})
            st.plotly_chart(heat, width="stretch")
            st.caption("Mean value of the trials with a value in each cell; an empty cell has no such trial.")

# ------------------------------------------------------------------------------------------------ walk-forward
folds = research.folds(report)
if not folds.empty:
    st.subheader("Walk-forward folds")
    left, right = st.columns(2)
    scatter = go.Figure()
    scatter.add_trace(go.Scatter(x=folds["in_sample_value"], y=folds["out_of_sample_value"], mode="markers+text",
                                 text=[f"fold {f}" for f in folds["fold"]], textposition="top center", name="fold"))
    ends = pd.concat([folds["in_sample_value"], folds["out_of_sample_value"]]).dropna()
    if not ends.empty:
        low, high = float(ends.min()), float(ends.max())
        scatter.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x",
                                     line={"dash": "dash"}))
    scatter.update_layout(height=360, margin=MARGIN, title="In-sample vs out-of-sample value",
                          xaxis_title="in-sample (best of the fold's study)", yaxis_title="out-of-sample")
    left.plotly_chart(scatter, width="stretch")
    curve = None
    try:
        curve = out_of_sample(chosen, float(report["saved"]))
    except DataError as exc:
        right.warning(str(exc))
    if curve is not None and not curve.empty:
        line = go.Figure(go.Scatter(x=curve["timestamp"], y=curve["equity"], mode="lines", name="equity"))
        line.update_layout(height=360, margin=MARGIN, title="Stitched out-of-sample equity")
        right.plotly_chart(line, width="stretch")
    st.dataframe(folds, hide_index=True, width="stretch",
                 column_config={"in_sample_value": st.column_config.NumberColumn(format="%.4f"),
                                "out_of_sample_value": st.column_config.NumberColumn(format="%.4f")})

# ------------------------------------------------------------------------------------------------ relaunch
st.subheader("Backtest the best parameters")
try:
    best = research.relaunch(report)
except DataError as exc:
    st.info(f"This study's best parameters cannot be backtested: {exc}.")
    st.stop()
shown = ", ".join(f"{k}={v}" for k, v in best.params.items())
st.caption(f"Runs `{best.strategy}` with {shown} through the Prefect deployment {prefect_api.FLOW}/"
           f"{prefect_api.DEPLOYMENT} at {config.prefect_api_url}; the stored run appears on the Backtests page when "
           "the flow finishes.")
if best.symbol is None or best.timeframe is None:
    st.caption("The study's report names no series (it ran on a file of bars): give the symbol and timeframe of "
               "the lake series to backtest on.")
engine = report.get("config") if isinstance(report.get("config"), dict) else {}  # the study's costs, when kept


def _setting(name: str, default: float) -> float:
    value = engine.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


with st.form(f"optimisation_launch-{study}"):
    row = st.columns(4)
    symbol = row[0].text_input("Symbol", best.symbol or "", placeholder="BTC/USDT", key=f"optimisation_symbol-{study}")
    timeframe = row[1].text_input("Timeframe", best.timeframe or "", placeholder="1h",
                                  key=f"optimisation_timeframe-{study}")
    venue = row[2].text_input("Venue (optional)", best.venue or "", key=f"optimisation_venue-{study}")
    cooldown = row[3].number_input(
        "Breaker cool-down (bars)", min_value=0, value=int(_setting("breaker_cooldown_bars", 0)), step=1,
        key=f"optimisation_cooldown-{study}",
        help="Drawdown and loss-streak breakers release by themselves after this many bars; 0 keeps them tripped.")
    row = st.columns(4)
    start = row[0].text_input("Start (UTC, optional)", best.start or "", key=f"optimisation_start-{study}")
    end = row[1].text_input("End (UTC, optional)", best.end or "", key=f"optimisation_end-{study}")
    fee_bps = row[2].number_input("Fee (bps)", min_value=0.0, max_value=1000.0, value=_setting("fee_bps", 10.0),
                                  key=f"optimisation_fee-{study}")
    slippage_bps = row[3].number_input("Slippage (bps)", min_value=0.0, max_value=1000.0,
                                       value=_setting("slippage_bps", 0.0), key=f"optimisation_slippage-{study}")
    row = st.columns(4)
    max_position = row[0].number_input("Max position", min_value=0.01, value=_setting("max_position", 0.25),
                                       key=f"optimisation_max_position-{study}")
    cash = row[1].number_input("Cash", min_value=1.0, value=_setting("cash", 100_000.0),
                               key=f"optimisation_cash-{study}")
    submitted = st.form_submit_button("Backtest the best parameters")
if submitted:
    request = None
    if not symbol.strip() or not timeframe.strip():
        st.error("Not launched: give the symbol and the timeframe to backtest on.")
    else:
        try:
            request = AdhocRequest(
                strategy=best.strategy, symbol=symbol, timeframe=timeframe, venue=venue.strip() or None,
                start=start.strip() or None, end=end.strip() or None, fee_bps=fee_bps, slippage_bps=slippage_bps,
                max_position=max_position, cash=cash, params=best.params, breaker_cooldown_bars=int(cooldown) or None)
        except DataError as exc:
            st.error(f"Not launched: {exc}")
    if request is not None:
        common.launch_backtest(config, request)
