"""Market-data sources. Each returns canonical bar frames (see ``pipeline.domain``) of closed bars only."""
