"""Shared bits for the examples: the engine URL from --url / $III_URL."""

from __future__ import annotations

import argparse
import os


def engine_url(description: str) -> str:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--url",
        default=os.environ.get("III_URL", "ws://127.0.0.1:49134"),
        help="engine URL (start one with: iii-trio engine)",
    )
    return str(parser.parse_args().url)
