"""``workflows-bridge send``: publish commands from arguments or a JSONL file.

Each command is keyed by its ``instance_id`` so that all commands of one instance land on one
partition, which is what keeps them in order through the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bridge.config import KafkaSettings
from bridge.contract.commands import ACTIONS
from bridge.contract.decode import decode_command
from bridge.errors import BridgeError, ConfigError, ContractError
from bridge.tools.common import add_kafka_arguments, started_producer, tool_settings

_PROGRESS_FROM = 200


@dataclass(slots=True)
class Summary:
    sent: int = 0
    invalid: list[str] = field(default_factory=list)


def _lines(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    for index, text in enumerate(args.commands, start=1):
        yield f"argument {index}", text
    if args.file is not None:
        with args.file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield f"{args.file}:{number}", line.rstrip("\n")


def _key(text: str) -> bytes | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    value = data.get("instance_id") if isinstance(data, dict) else None
    return value.encode() if isinstance(value, str) else None


async def publish(
    kafka: KafkaSettings,
    topic: str,
    lines: Iterable[tuple[str, str]],
    *,
    validate: bool,
    total: int | None,
) -> Summary:
    """Send every line; invalid ones are skipped (and reported) when ``validate`` is on."""
    summary = Summary()
    async with started_producer(kafka, linger_ms=5) as producer:
        with Progress(disable=total is None or total < _PROGRESS_FROM, transient=True) as progress:
            bar = progress.add_task("sending", total=total)
            pending = []
            for where, text in lines:
                if validate:
                    try:
                        decode_command(text.encode())
                    except ContractError as exc:
                        summary.invalid.append(f"{where}: {exc}")
                        continue
                pending.append(await producer.send(topic, text.encode(), key=_key(text)))
                summary.sent += 1
                progress.advance(bar)
            await asyncio.gather(*pending)
    return summary


def _send(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    if not args.commands and args.file is None:
        console.print("nothing to send: give commands as arguments or --file FILE.jsonl")
        return 2
    try:
        settings = tool_settings(args)
    except ConfigError as exc:
        console.print(f"workflows-bridge send: {exc}", markup=False, highlight=False)
        return 2
    topic = args.topic or settings.topics.commands[0]
    total = None
    if args.file is not None:
        with args.file.open(encoding="utf-8") as handle:
            total = sum(1 for line in handle if line.strip()) + len(args.commands)
    try:
        summary = asyncio.run(
            publish(settings.kafka, topic, _lines(args), validate=not args.no_validate, total=total)
        )
    except BridgeError as exc:
        console.print(f"could not publish: {exc}", markup=False, highlight=False)
        return 1
    for problem in summary.invalid:
        console.print(f"[yellow]skipped[/yellow] {problem}", markup=True, highlight=False)
    console.print(
        f"sent {summary.sent} command(s) to {topic}; skipped {len(summary.invalid)} invalid"
    )
    return 1 if summary.invalid else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "send",
        help="publish commands (JSON) to the command topic",
        description="Publish commands, keyed by instance_id; each is checked against the "
        f"contract first. Actions: {', '.join(ACTIONS)}.",
        epilog='e.g. {"action": "get", "workflow": "orders", "instance_id": "o-1", "steps": true}',
    )
    parser.add_argument("commands", nargs="*", help="commands as JSON objects")
    parser.add_argument("--file", type=Path, help="a JSONL file, one command per line")
    parser.add_argument(
        "--topic", help="default: the first of BRIDGE_TOPICS__COMMANDS (workflows.commands)"
    )
    add_kafka_arguments(parser)
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="send lines as they are, even invalid ones (to exercise the dead-letter path)",
    )
    parser.set_defaults(handler=_send)
