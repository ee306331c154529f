"""``build-features``: the default feature set of every universe series, stored in the feature store."""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.common import NO_CACHING, report_failure, say, settings
from pipeline.data.catalog import read_bars
from pipeline.data.universe import parse_series
from pipeline.domain import symbol_key
from pipeline.features.build import FeatureSpec, build_features, store_features


@task(name="build-series-features", cache_policy=NO_CACHING, timeout_seconds=3600,
      task_run_name="features {entry}")
def build_entry(entry: str) -> dict[str, Any]:
    config, spec, features = settings(), parse_series(entry), FeatureSpec()
    bars = read_bars(config, spec.symbol, spec.timeframe, venue=spec.venue(config))
    frame = build_features(bars, features, spec.asset_class)
    path = store_features(frame, features, config.data_dir, spec.venue(config), symbol_key(spec.symbol),
                          str(spec.timeframe))
    return {"series": entry, "spec_hash": features.hash(), "rows": len(frame), "path": str(path)}


@flow(name="build-features", log_prints=True, on_failure=[report_failure], on_crashed=[report_failure])
def features_flow(universe: list[str] | None = None) -> list[dict[str, Any]]:
    """Build and store features for ``universe`` (default: the ``universe`` setting)."""
    built = [build_entry(entry) for entry in (universe or settings().universe)]
    for item in built:
        say(f"{item['series']}: {item['rows']} feature rows (spec {item['spec_hash']})")
    return built
