"""System tests: the whole product as a user runs it (``make run``, the runtime killed against a venue, the
dashboard in a real browser). They are marked ``slow``: ``make test`` runs them, ``make test-fast`` leaves them
out."""
