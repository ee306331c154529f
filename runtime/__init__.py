"""tradeforge runtime (filled by later work; see README)."""
