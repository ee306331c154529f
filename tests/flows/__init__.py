"""Tests of the Prefect flows (``flows/``), under Prefect's test harness."""
