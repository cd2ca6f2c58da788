"""The ``workflows-bridge`` command.

The service's own sub-commands (``run``, ``schema``) are defined here. Everything else is
tooling — ``send``, ``dev``, the API emulator — and lives in :mod:`bridge.tools` or
:mod:`bridge.local`; a tool's module is imported only when its sub-command is chosen, so the
service never loads tooling code or its dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__
from bridge.config import environment_variables, load_settings, secret_values
from bridge.contract import schema
from bridge.errors import ConfigError
from bridge.logs import configure, register_secret
from bridge.ops import tracing
from bridge.pipeline.service import Bridge
from bridge.runtime import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, run_until_signalled

#: Tool sub-commands: name -> (module with a ``register(subparsers)``, extra it needs, help).
TOOLS: dict[str, tuple[str, str, str]] = {
    "send": ("bridge.tools.send", "tools", "publish commands (JSON) to the command topic"),
    "check": (
        "bridge.tools.check",
        "tools",
        "check configuration, broker, topics, token and workflows; non-zero exit if not ready",
    ),
    "topics": ("bridge.tools.topics", "tools", "create the production topics"),
    "dlq": ("bridge.tools.dlq", "tools", "replay dead letters with their original command ids"),
    "conformance": (
        "bridge.tools.conformance.cli",
        "tools",
        "check the API emulator's assumptions against an API (production included)",
    ),
    "watch": (
        "bridge.tools.watch",
        "tools",
        "tail the output topic: each instance's current state and timeline",
    ),
    "states": (
        "bridge.tools.states",
        "tools",
        "the instance-state stream: set up its event subscriptions (states subscribe)",
    ),
    "dev": (
        "bridge.local.dev",
        "local",
        "run broker, emulator and bridge locally with a live demo (nothing else needed)",
    ),
    "emulator": (
        "bridge.local.emulator.cli",
        "local",
        "serve a local emulation of the Cloudflare Workflows instances REST API",
    ),
}


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        configure()
        print(f"workflows-bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure(fmt=settings.log_format, level=settings.log_level)
    for secret in secret_values(settings):
        register_secret(secret)
    shutdown_tracing = tracing.configure_export()
    try:
        return run_until_signalled(Bridge(settings).run)
    finally:
        shutdown_tracing()


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
    if not args.name:  # one valid JSON document: every schema by its file name
        sys.stdout.write(schema.render(documents))
        return EXIT_OK
    if args.name not in documents:
        print(f"unknown schema {args.name!r}; choose from {', '.join(documents)}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(schema.render(documents[args.name]))
    return EXIT_OK


def _chosen(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflows-bridge",
        description="Drive Cloudflare Workflows from Kafka command topics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)

    run = subparsers.add_parser(
        "run",
        help="consume commands and drive the Workflows API",
        description="Configuration comes from BRIDGE_* environment variables (README, "
        "'Running it'), optionally on top of a TOML file. A secret may also come from a file "
        "named by <NAME>_FILE, or from BRIDGE_SECRETS_DIR/<NAME>.",
        epilog="variables:\n  " + "\n  ".join(environment_variables()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, help="TOML file; environment variables win over it")
    run.set_defaults(handler=_run)

    show = subparsers.add_parser("schema", help="print or write the message contract's schemas")
    show.add_argument("name", nargs="?", help="one document, e.g. command.schema.json")
    show.add_argument("--write", type=Path, metavar="DIR", help="write every document into DIR")
    show.add_argument("--check", type=Path, metavar="DIR", help="fail if DIR's documents are stale")
    show.set_defaults(handler=_schema)

    chosen = _chosen(argv)
    for name, (module, extra, summary) in TOOLS.items():
        if name == chosen:
            _register_tool(subparsers, name, module, extra)
        else:  # listed in --help, loaded only when chosen
            subparsers.add_parser(name, help=summary)
    return parser


def _register_tool(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    module: str,
    extra: str,
) -> None:
    try:
        importlib.import_module(module).register(subparsers)
    except ImportError as exc:
        missing = exc.name or str(exc)

        def unavailable(_: argparse.Namespace) -> int:
            print(
                f"workflows-bridge {name} needs the '{extra}' extra ({missing} is missing): "
                f"pip install 'workflows-bridge[{extra}]'",
                file=sys.stderr,
            )
            return EXIT_CONFIG

        # Takes any arguments (none of them are options here) so the message is what is shown.
        stand_in = subparsers.add_parser(name, add_help=False, prefix_chars="\0")
        stand_in.add_argument("rest", nargs="*")
        stand_in.set_defaults(handler=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns the process exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser(words).parse_args(words)
        code: int = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``… | head``): stop quietly. Later flushes of stdout (at exit)
        # must not fail again, so it now points at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
