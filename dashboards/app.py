"""The tradeforge dashboard: ``streamlit run dashboards/app.py --server.address 127.0.0.1``.

A multipage app (``st.navigation``; the page scripts live in ``views/``, not ``pages/``, so that Streamlit never
serves them on its own around the password gate): Overview, Chart, Trades, Backtests, Optimisation (the parameter
studies of ``tradeforge optimize``), Models and Data health share this sidebar. Every number
comes from ``pipeline.reports``; the state store is opened read-only, and the only writes are the control
commands of the Overview page (and, on the Models page, moving the production alias through the registry).
When ``TRADEFORGE_DASHBOARD_PASSWORD`` is set, every page asks for it first.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import make_url

from dashboards import common

PAGES = (
    ("views/overview.py", "Overview", ":material/monitoring:"),
    ("views/chart.py", "Chart", ":material/candlestick_chart:"),
    ("views/trades.py", "Trades", ":material/receipt_long:"),
    ("views/backtests.py", "Backtests", ":material/science:"),
    ("views/optimisation.py", "Optimisation", ":material/tune:"),
    ("views/models.py", "Models", ":material/model_training:"),
    ("views/data_health.py", "Data health", ":material/health_and_safety:"),
)


def main() -> None:
    st.set_page_config(page_title="tradeforge", page_icon=":material/monitoring:", layout="wide")
    config = common.settings()
    if not common.signed_in(config):
        # While locked, the sign-in form is the only page: any other page's address lands on it.
        st.navigation([st.Page(lambda: common.login(config), title="Sign in", url_path="sign-in")],
                      position="hidden").run()
        return
    pages = [st.Page(path, title=title, icon=icon, default=index == 0)
             for index, (path, title, icon) in enumerate(PAGES)]
    page = st.navigation(pages)
    with st.sidebar:
        st.caption("tradeforge")
        st.caption(f"State: `{make_url(config.state_url).render_as_string(hide_password=True)}`")
        st.caption(f"Data: `{config.data_dir}`")
        if st.button("Refresh now", key="refresh", icon=":material/refresh:"):
            st.cache_data.clear()
    page.run()


main()
