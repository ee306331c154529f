"""``python -m runtime``: an alias of ``tradeforge runtime`` (the CLI is the composition root)."""

import runpy
import sys

if __name__ == "__main__":
    sys.argv = ["tradeforge", "runtime", *sys.argv[1:]]
    runpy.run_module("tradeforge_cli", run_name="__main__")
