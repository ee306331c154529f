"""Market data: sources (venues and files), the quality gate, ingestion, the Parquet lake and its DuckDB
catalog, resampling, the universe of series the scheduled jobs keep current, and whether an ingest that wrote no
bar should have (``freshness``)."""
