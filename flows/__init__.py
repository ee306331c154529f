"""Prefect flows: one module per scheduled job, each task a one-line call into ``pipeline``.

``flows.serve`` builds every deployment with its schedule (``python -m flows.serve``). Records of
``pipeline``'s loggers (INFO and up) reach each run's log in the Prefect UI: ``flows.common`` attaches
Prefect's API log handler to the ``pipeline`` logger.
"""
