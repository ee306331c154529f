"""Market data: sources (venues and files), the quality gate, ingestion, the Parquet lake and its DuckDB
catalog, resampling, and the universe of series the scheduled jobs keep current."""
