"""Tests of the trading process (``runtime/``): the node, recovery, decisions, feeds, brokers, notifications and
safety rules."""
