"""The engine core: the only implementation of fills, risk checks, circuit breakers and the ledger."""

from pipeline.engine.config import EngineConfig
from pipeline.engine.core import Engine, run
from pipeline.engine.results import EngineResult

__all__ = ["Engine", "EngineConfig", "EngineResult", "run"]
