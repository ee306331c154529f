"""``python -m runtime.api``: serve the bot's HTTP API at ``api_url`` (``TRADEFORGE_API_URL``) until SIGINT or
SIGTERM. Exit codes: 0 stopped, 1 the settings are invalid, 2 a usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.domain import DataError
from pipeline.settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m runtime.api",
        description="Serve the bot's HTTP API (OpenAPI docs at /docs) at the setting api_url, over the state at "
                    "state_url. With TRADEFORGE_API_TOKEN set every endpoint needs 'Authorization: Bearer "
                    "<token>'; without it reads are served and control commands refused.",
    ).parse_args(list(sys.argv[1:] if argv is None else argv))
    from runtime.api.server import serve

    try:
        settings = load_settings()
        serve(settings)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
