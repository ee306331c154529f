"""Tests of the Streamlit dashboard (``dashboards/``) with AppTest."""
