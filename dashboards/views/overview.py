"""Overview: the runtime's status, equity, the day's PnL, breakers, the flow runs that failed in the last day,
positions, working orders (a resting stop included), its last reconciliation with the venue, and its control
commands."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import common
from pipeline.reports.flow_runs import flow_failures
from pipeline.reports.trading import Reconciliation

COMMANDS = {
    "pause": ("Pause", "Pause {target}? No new entries are made until resumed; open positions stay."),
    "resume": ("Resume", "Resume {target}? New entries are allowed again."),
    "flatten": ("Flatten", "Flatten {target}? Every open position is closed at the next fill."),
    "reset_breaker": ("Reset breakers", "Reset the latched breakers of {target}? Trading may start again."),
}

st.title("Overview")
config = common.page_settings()
store = common.read_store(config)
if store is None:
    st.stop()
url = config.state_url


@st.fragment(run_every=5)
def status() -> None:
    view = common.overview(url, common.now())
    day = "-" if view.day is None else view.day.isoformat()
    top = st.columns(5)
    top[0].metric("Mode", view.mode)
    top[1].metric("Status", view.status, help=view.status_reason or None)
    top[2].metric("Heartbeat age", common.age(view.heartbeat_age_s),
                  help=f"last heartbeat {common.when(view.heartbeat_at)}")
    top[3].metric("Equity", common.money(view.equity), help="the portfolio ledger's equity at the last mark")
    top[4].metric(f"PnL of {day}", common.money(view.day_pnl, signed=True),
                  help="equity change over the day of the last processed bar (UTC)")
    st.caption(
        f"Status: {view.status} ({view.status_reason or 'no reason given'}). Last mark {common.when(view.last_mark)}; "
        f"realized PnL of {day}: {common.money(view.day_realized_pnl, signed=True)} over {view.day_trades} "
        "closed trade(s)."
    )
    if view.portfolio_tripped:
        st.error("The portfolio drawdown breaker is latched: no sleeve makes new entries.")
    failed_flows()
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Sleeves")
        sleeves = pd.DataFrame(
            [{"sleeve": s.sleeve, "equity": float(s.equity), "cash": float(s.cash), "units": float(s.units),
              "breakers": ", ".join(s.tripped) or "ok", "bars": s.bars_seen} for s in view.sleeves],
            columns=["sleeve", "equity", "cash", "units", "breakers", "bars"],
        )
        st.dataframe(sleeves, hide_index=True, width="stretch",
                     column_config={"equity": st.column_config.NumberColumn(format="%.2f"),
                                    "cash": st.column_config.NumberColumn(format="%.2f")})
    with right:
        st.subheader("Open positions")
        if view.positions.empty:
            st.write("No open positions.")
        else:
            st.dataframe(view.positions, hide_index=True, width="stretch")
        st.subheader("Working orders")
        if view.working.empty:
            st.write("No order is working at a venue.")
        else:
            st.dataframe(view.working, hide_index=True, width="stretch")
    reconciliation(view.reconciliation)
    curve = common.equity_curve(url, "portfolio")
    if not curve.empty:
        figure = go.Figure(go.Scatter(x=curve["timestamp"], y=curve["equity"], mode="lines", name="equity"))
        figure.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10}, title="Portfolio equity")
        st.plotly_chart(figure, width="stretch")


def failed_flows() -> None:
    """The flows whose runs failed in the last 24 hours: which flow, how often, when last and why."""
    assert store is not None
    failures = flow_failures(store, common.now())
    if failures.empty:
        st.caption("No flow run failed in the last 24 h.")
        return
    for row in failures.itertuples(index=False):
        times = "once" if row.failures == 1 else f"{row.failures} times"
        st.error(f"Flow {row.flow} failed {times} in the last 24 h, last {common.when(row.last_at)}: {row.reason}")


def reconciliation(last: Reconciliation | None) -> None:
    """The last reconciliation with the venue: when, its verdict, what it compared, the latest findings."""
    st.subheader("Reconciliation with the venue")
    if last is None:
        st.write("No reconciliation yet (a paper runtime has no venue to reconcile with).")
        return
    headline = f"Last reconciliation {common.when(last.at)}: {last.verdict}"
    if last.verdict == "ok":
        st.success(headline)
    elif last.verdict == "mismatch":
        st.error(headline + " (the sleeves concerned are paused until an operator resumes them)")
    else:
        st.warning(headline)
    st.caption(last.detail)
    if not last.findings.empty:
        st.dataframe(last.findings, hide_index=True, width="stretch")


status()

st.subheader("Control")
targets = ["all sleeves", *common.sleeves(url)]
target = st.selectbox("Apply to", targets, key="control_target")
sleeve = None if target == "all sleeves" else target
buttons = st.columns(len(COMMANDS))
for column, (command, (label, _)) in zip(buttons, COMMANDS.items(), strict=True):
    if column.button(label, key=f"control-{command}"):
        common.arm(f"command:{command}:{sleeve or ''}")
armed = st.session_state.get("armed", "")
if isinstance(armed, str) and armed.startswith("command:"):
    _, command, armed_sleeve = armed.split(":", 2)
    question = COMMANDS[command][1].format(target=armed_sleeve or "all sleeves")
    if common.confirm(armed, question):
        number = common.send_command(config, command, armed_sleeve or None)
        common.commands.clear()
        st.success(f"Command {command} queued (#{number}); the runtime applies it within one loop and "
                   "acknowledges it below.")

st.subheader("Commands")
recent = common.commands(url)
if recent.empty:
    st.write("No command sent yet.")
else:
    pending = int((recent["state"] == "pending").sum())
    st.caption(f"{pending} pending, {len(recent) - pending} acknowledged (the last {len(recent)}).")
    st.dataframe(recent, hide_index=True, width="stretch")
