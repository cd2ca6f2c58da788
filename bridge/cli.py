"""The ``workflows-bridge`` command: one sub-command per module that owns the work."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge import sender
from bridge.config import load_settings
from bridge.contract import schema
from bridge.errors import ConfigError
from bridge.logs import configure, register_secret
from bridge.runtime import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, run_until_signalled
from bridge.service import Bridge


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        configure()
        print(f"workflows-bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure(fmt=settings.log_format, level=settings.log_level)
    register_secret(settings.cloudflare.api_token.get_secret_value())
    return run_until_signalled(Bridge(settings).run)


def _schema(args: argparse.Namespace) -> int:
    if args.write is not None:
        for path in schema.write(args.write):
            print(path)
        return EXIT_OK
    if args.check is not None:
        stale = schema.stale(args.check)
        for name in stale:
            print(f"stale: {args.check / name}", file=sys.stderr)
        return EXIT_FAILED if stale else EXIT_OK
    documents = schema.documents()
    names = [args.name] if args.name else list(documents)
    for name in names:
        if name not in documents:
            print(f"unknown schema {name!r}; choose from {', '.join(documents)}", file=sys.stderr)
            return EXIT_FAILED
        sys.stdout.write(schema.render(documents[name]))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflows-bridge",
        description="Drive Cloudflare Workflows from Kafka command topics.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)

    run = subparsers.add_parser(
        "run",
        help="consume commands and drive the Workflows API",
        description="Configuration comes from BRIDGE_* environment variables (see README), "
        "optionally on top of a TOML file.",
    )
    run.add_argument("--config", type=Path, help="TOML file; environment variables win over it")
    run.set_defaults(handler=_run)

    show = subparsers.add_parser("schema", help="print or write the message contract's schemas")
    show.add_argument("name", nargs="?", help="one document, e.g. command.schema.json")
    show.add_argument("--write", type=Path, metavar="DIR", help="write every document into DIR")
    show.add_argument("--check", type=Path, metavar="DIR", help="fail if DIR's documents are stale")
    show.set_defaults(handler=_schema)

    sender.register(subparsers)
    for module, name in (("bridge.dev", "dev"), ("bridge.emulator.cli", "emulator")):
        _register_local(subparsers, module, name)
    return parser


def _register_local(subparsers: Any, module: str, name: str) -> None:
    """Sub-commands that need the ``local`` extra (emulator, embedded broker)."""
    try:
        importlib.import_module(module).register(subparsers)
    except ImportError as exc:
        missing = exc.name or str(exc)

        def unavailable(_: argparse.Namespace) -> int:
            print(
                f"workflows-bridge {name} needs the 'local' extra ({missing} is missing): "
                "pip install 'workflows-bridge[local]'",
                file=sys.stderr,
            )
            return EXIT_CONFIG

        subparsers.add_parser(
            name, help="(needs: pip install 'workflows-bridge[local]')"
        ).set_defaults(handler=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns the process exit code."""
    args = _parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
