"""The engine core: the only implementation of fills, risk checks, circuit breakers and the ledger.

``core`` (``Engine``, ``run``) and ``ledger`` (``Ledger``) are the API; ``kernel`` (the per-bar step),
``booking`` (fills into the ledger), ``breakers`` and ``portfolio_kernel`` are the compiled code, on the state
laid out in ``layout``; ``portfolio_ledger`` drives a portfolio of sleeves. ``cache`` keeps numba's on-disk cache
of the compiled code in step with its sources.
"""

from pipeline.engine import cache
from pipeline.engine.config import EngineConfig
from pipeline.engine.core import Engine, run
from pipeline.engine.ledger import Ledger
from pipeline.engine.results import EngineResult

__all__ = ["Engine", "EngineConfig", "EngineResult", "Ledger", "run"]

cache.refresh()
