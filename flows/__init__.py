"""tradeforge flows (filled by later work; see README)."""
