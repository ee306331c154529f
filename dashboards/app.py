"""The tradeforge dashboard: ``streamlit run dashboards/app.py --server.address 127.0.0.1``.

A multipage app (``st.navigation``; the page scripts live in ``views/``, not ``pages/``, so that Streamlit never
serves them on its own around the password gate): Overview, Chart, Trades, Backtests, Optimisation (the parameter
studies of ``tradeforge optimize``), Models and Data health share this sidebar. Every number
comes from ``pipeline.reports``; the state store is opened read-only, and the only writes are the control
commands of the Overview page (and, on the Models page, moving the production alias through the registry).
When an operator credential exists (``TRADEFORGE_DASHBOARD_PASSWORD``, or the one ``tradeforge up`` stored for this
data folder), every page asks for it first; the page whose address was opened (with its query parameters) is where
the operator lands after signing in.
"""

from __future__ import annotations

from pathlib import Path

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


def _url_path(path: str) -> str:
    """A page's address: its file's name (``views/data_health.py`` → ``data_health``)."""
    return Path(path).stem


def main() -> None:
    st.set_page_config(page_title="tradeforge", page_icon=":material/monitoring:", layout="wide")
    config = common.settings()
    if not common.signed_in(config):
        # While locked, every page's address shows the sign-in form and nothing else; the address (and its query
        # parameters) stays, so that signing in reruns the app on the page that was opened.
        st.navigation([st.Page(lambda: common.login(config), title="Sign in", url_path=_url_path(path),
                               default=index == 0)
                       for index, (path, _title, _icon) in enumerate(PAGES)], position="hidden").run()
        return
    pages = [st.Page(path, title=title, icon=icon, url_path=_url_path(path), default=index == 0)
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
