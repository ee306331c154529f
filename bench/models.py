"""Model benchmarks: feature build time (real BTC/USDT 1m; 10 symbols x 1 year of synthetic minutes), training
samples/s on CPU, and single-window inference latency p50/p99 of an LSTM (hidden 64, sequence 64).

    python bench/models.py
"""

from __future__ import annotations

import runpy
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    print("== features ==")
    runpy.run_path(str(HERE / "features.py"), run_name="__main__")
    print("\n== training and inference ==")
    runpy.run_path(str(HERE / "inference.py"), run_name="__main__")
