"""``workflows-bridge send``: publish commands from arguments or a JSONL file.

Each command is keyed by its ``instance_id`` so that all commands of one instance land on one
partition, which is what keeps them in order through the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import Progress

from bridge.contract.decode import decode_command
from bridge.errors import ContractError

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
    bootstrap: str,
    topic: str,
    lines: Iterable[tuple[str, str]],
    *,
    validate: bool,
    total: int | None,
) -> Summary:
    """Send every line; invalid ones are skipped (and reported) when ``validate`` is on."""
    summary = Summary()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
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
    finally:
        await producer.stop()
    return summary


def _send(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if not args.commands and args.file is None:
        console.print("nothing to send: give commands as arguments or --file FILE.jsonl")
        return 2
    if not args.bootstrap:
        console.print("no broker: pass --bootstrap or set BRIDGE_KAFKA__BOOTSTRAP_SERVERS")
        return 2
    total = None
    if args.file is not None:
        with args.file.open(encoding="utf-8") as handle:
            total = sum(1 for line in handle if line.strip()) + len(args.commands)
    try:
        summary = asyncio.run(
            publish(
                args.bootstrap, args.topic, _lines(args), validate=not args.no_validate, total=total
            )
        )
    except KafkaError as exc:
        console.print(f"[red]could not publish:[/red] {exc}")
        return 1
    for problem in summary.invalid:
        console.print(f"[yellow]skipped[/yellow] {problem}", markup=True, highlight=False)
    console.print(
        f"sent {summary.sent} command(s) to {args.topic}; skipped {len(summary.invalid)} invalid"
    )
    return 1 if summary.invalid else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    default_topic = os.environ.get("BRIDGE_TOPICS__COMMANDS", "workflows.commands").split(",")[0]
    parser = subparsers.add_parser("send", help="publish commands (JSON) to the command topic")
    parser.add_argument("commands", nargs="*", help="commands as JSON objects")
    parser.add_argument("--file", type=Path, help="a JSONL file, one command per line")
    parser.add_argument("--topic", default=default_topic, help=f"default {default_topic}")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("BRIDGE_KAFKA__BOOTSTRAP_SERVERS"),
        help="broker host:port (default $BRIDGE_KAFKA__BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="send lines as they are, even invalid ones (to exercise the dead-letter path)",
    )
    parser.set_defaults(handler=_send)
