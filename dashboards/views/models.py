"""Models: registered versions, which one is production, out-of-sample metrics and gate tags; promote and
roll back (through the registry, each after a confirmation)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboards import common
from pipeline import reports
from pipeline.domain import DataError

st.title("Models")
config = common.page_settings()


@st.cache_data(ttl=common.SLOW_TTL_S, show_spinner="Reading the model registry…")
def versions(uri: str) -> pd.DataFrame:
    return reports.model_versions(config)


table = versions(config.mlflow_tracking_uri)
if table.empty:
    st.info(f"No registered model in {config.mlflow_tracking_uri}: train one (`tradeforge train ...`).")
    st.stop()
st.caption(f"Registry: {config.mlflow_tracking_uri} · MLflow UI: {config.mlflow_ui_url}")
for name, group in table.groupby("name", sort=True):
    st.subheader(str(name))
    production = group.loc[group["production"], "version"]
    st.write(f"Production: **v{production.iloc[0]}**" if len(production) else "Production: none")
    st.dataframe(
        group.drop(columns=["name"]), hide_index=True, width="stretch",
        column_config={n: st.column_config.NumberColumn(format="%.4f")
                       for n in ("oos_sharpe", "oos_max_drawdown", "oos_auc", "oos_accuracy", "oos_log_loss")},
    )
    actions = st.columns([1, 1, 1, 3])
    target = actions[0].selectbox("Version", list(group["version"]), key=f"version-{name}",
                                  index=len(group) - 1)
    if actions[1].button("Promote", key=f"promote-{name}"):
        common.arm(f"promote:{name}:{target}")
    if actions[2].button("Roll back", key=f"rollback-{name}"):
        common.arm(f"rollback:{name}")
    armed = st.session_state.get("armed", "")
    if not isinstance(armed, str):
        continue
    if armed.startswith(f"promote:{name}:"):
        version = armed.rsplit(":", 1)[1]
        if common.confirm(armed, f"Give {name} v{version} the production alias? The runtime trades it from its "
                                 "next poll of the registry."):
            try:
                reports.promote(config, str(name), version)
            except DataError as exc:
                st.error(str(exc))
            else:
                versions.clear()
                st.success(f"{name}: production → v{version}")
    elif armed == f"rollback:{name}" and common.confirm(
            armed, f"Give the production alias of {name} back to the previously promoted version?"):
        try:
            back = reports.rollback(config, str(name))
        except DataError as exc:
            st.error(str(exc))
        else:
            versions.clear()
            st.success(f"{name}: production → v{back} (rolled back)")
