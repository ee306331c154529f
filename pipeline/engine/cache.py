"""The compiled engine's on-disk cache, dropped whenever any of the engine's compiled sources changes.

numba keys a cached function to its own source file only: ``kernel.step`` cached once keeps the constants of
``layout.py`` and the code of ``booking.py`` and ``breakers.py`` it was compiled with, even after those files
change. ``refresh`` (run when ``pipeline.engine`` is imported, before anything is compiled) keeps a
fingerprint of every compiled module's source beside the cache and drops the engine's cached functions when
the fingerprint differs, so the next call compiles them afresh.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

COMPILED_SOURCES = ("layout.py", "breakers.py", "booking.py", "kernel.py", "portfolio_kernel.py")
"""The engine modules whose code (or constants) numba compiles into one another."""
STAMP = "engine-sources.sha256"


def refresh(folder: Path = Path(__file__).parent) -> bool:
    """Drop the cached compiled functions in ``folder/__pycache__`` if the sources changed since they were
    cached; returns whether it did. A folder that cannot be written is left as it is."""
    digest = hashlib.sha256()
    for name in COMPILED_SOURCES:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    fingerprint = digest.hexdigest()
    cache = folder / "__pycache__"
    stamp = cache / STAMP
    try:
        if stamp.is_file() and stamp.read_text() == fingerprint:
            return False
        cache.mkdir(exist_ok=True)
        for cached in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            cached.unlink(missing_ok=True)
        stamp.write_text(fingerprint)
    except OSError:
        return False
    return True
