"""The ``workflows-bridge`` command: one sub-command per module that owns the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from bridge.emulator import cli as emulator_cli

    parser = argparse.ArgumentParser(
        prog="workflows-bridge",
        description="Drive Cloudflare Workflows from Kafka command topics.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    emulator_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns the process exit code."""
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
