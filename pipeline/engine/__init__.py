"""The engine core: the only implementation of fills, risk checks, circuit breakers and the ledger."""

from pipeline.engine.config import EngineConfig
from pipeline.engine.core import Engine, EngineResult, run

__all__ = ["Engine", "EngineConfig", "EngineResult", "run"]
