"""``workflows-bridge watch``: tail the output topic and show what became of each instance.

It reads the output topic (and ``BRIDGE_TOPICS__STATES`` when that is another topic) from the
beginning and prints one line per record — a command's result or a state change — then keeps
following until Ctrl-C (or, with ``--no-follow``, stops at the end). At the end it shows each
instance's current state and its timeline. ``--instance`` and ``--workflow`` (repeatable) narrow
it down; ``--json`` prints the records themselves, one JSON object a line, for other tools.

:class:`Timelines` is also what ``workflows-bridge dev`` draws its live table from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from bridge.config import ToolSettings
from bridge.errors import BridgeError, ConfigError
from bridge.tools.common import (
    add_kafka_arguments,
    started_admin,
    started_consumer,
    tool_settings,
)

FINAL = frozenset({"complete", "errored", "terminated"})


@dataclass
class Timeline:
    """What the stream said about one instance, in topic order."""

    workflow: str
    instance_id: str
    #: The status of the last state record, else of the last result that had one.
    status: str | None = None
    #: Every state record's status, in order.
    states: list[str] = field(default_factory=list)
    #: ``action → outcome`` of each result.
    results: list[str] = field(default_factory=list)
    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def steps(self) -> str:
        return " → ".join(self.states) if self.states else "(no state yet)"


class Timelines:
    """Instances' timelines from output-topic records, filtered by instance and workflow."""

    def __init__(self, *, instances: Iterable[str] = (), workflows: Iterable[str] = ()) -> None:
        self._instances = frozenset(instances)
        self._workflows = frozenset(workflows)
        self.by_instance: dict[tuple[str, str], Timeline] = {}

    def wanted(self, record: dict[str, Any]) -> bool:
        if self._instances and record.get("instance_id") not in self._instances:
            return False
        return not self._workflows or record.get("workflow") in self._workflows

    def add(self, record: dict[str, Any]) -> Timeline | None:
        """Take one record; returns the timeline it changed (None: not a wanted record)."""
        workflow, instance_id = record.get("workflow"), record.get("instance_id")
        if not isinstance(workflow, str) or not isinstance(instance_id, str):
            return None
        if not self.wanted(record):
            return None
        timeline = self.by_instance.setdefault(
            (workflow, instance_id), Timeline(workflow, instance_id)
        )
        if record.get("kind") == "state":
            timeline.status = record.get("status")
            timeline.states.append(str(record.get("status")))
            if record.get("output") is not None:
                timeline.output = record["output"]
            if record.get("error") is not None:
                timeline.error = record["error"]
        elif record.get("kind") == "result":
            shown = f"{record.get('action')} → {record.get('outcome')}"
            snapshot = record.get("instance")
            if isinstance(snapshot, dict):  # a get: what the instance's state was
                steps = snapshot.get("steps") or []
                shown += f" ({snapshot.get('status')}, {len(steps)} steps)"
            timeline.results.append(shown)
            if not timeline.states and record.get("status"):
                timeline.status = record["status"]
        return timeline

    def table(self, title: str = "instances") -> Table:
        table = Table(title=title)
        for column in ("workflow", "instance", "state", "timeline", "results"):
            table.add_column(column)
        for timeline in sorted(
            self.by_instance.values(), key=lambda t: (t.workflow, t.instance_id)
        ):
            table.add_row(
                timeline.workflow,
                timeline.instance_id,
                timeline.status or "-",
                timeline.steps(),
                ", ".join(timeline.results[-3:]),
            )
        return table


def describe(record: dict[str, Any]) -> str:
    """One line for a record of the output topic."""
    who = f"{record.get('workflow')}/{record.get('instance_id')}"
    if record.get("kind") == "state":
        at = str(record.get("event_at") or record.get("at") or "")
        flags = " (inferred)" if record.get("inferred") else ""
        extra = ""
        if record.get("error"):
            error = record["error"]
            extra = f" {error.get('name')}: {error.get('message')}"
        elif record.get("output") is not None:
            extra = " output=" + json.dumps(record["output"], separators=(",", ":"))[:80]
        return (
            f"{at}  {who}  state  {record.get('previous_status') or '∅'} → "
            f"{record.get('status')}  [{record.get('source')}]{flags}{extra}"
        )
    status = f" ({record.get('status')})" if record.get("status") else ""
    return (
        f"{record.get('at', '')}  {who}  result {record.get('action')} → "
        f"{record.get('outcome')}{status}"
    )


async def watch(
    settings: ToolSettings,
    timelines: Timelines,
    *,
    as_json: bool,
    follow: bool,
    out: TextIO,
    stop: asyncio.Event,
) -> None:
    """Print every wanted record of the output (and states) topic until ``stop`` (or, without
    ``follow``, until the end of the topics as they were at the start)."""
    topics = sorted({settings.topics.output, settings.topics.states or settings.topics.output})
    async with started_consumer(
        settings.kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    ) as consumer:
        partitions = await _assign(settings, consumer, topics)
        ends = await consumer.end_offsets(partitions) if not follow else {}
        while not stop.is_set():
            if not follow and await _at_end(consumer, ends):
                return
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for message in records:
                    try:
                        record = json.loads(message.value or b"")
                    except ValueError:
                        continue
                    if not isinstance(record, dict) or timelines.add(record) is None:
                        continue
                    line = (
                        json.dumps(record, separators=(",", ":")) if as_json else describe(record)
                    )
                    out.write(line + "\n")
            out.flush()


async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _assign(
    settings: ToolSettings, consumer: AIOKafkaConsumer, topics: list[str]
) -> list[TopicPartition]:
    async with started_admin(settings.kafka) as admin:
        described = await admin.describe_topics(topics)
    partitions = [
        TopicPartition(entry["topic"], int(partition["partition"]))
        for entry in described
        if not entry.get("error_code")
        for partition in entry.get("partitions", ())
    ]
    if not partitions:
        raise ConfigError(f"no such topic: {', '.join(topics)}")
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return partitions


def _watch(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        settings = tool_settings(args)
    except ConfigError as exc:
        console.print(f"workflows-bridge watch: {exc}", markup=False, highlight=False)
        return 2
    timelines = Timelines(instances=args.instance or (), workflows=args.workflow or ())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Off the main thread (in-process callers) there are no signals to handle.
            with contextlib.suppress(RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        await watch(
            settings,
            timelines,
            as_json=args.json,
            follow=not args.no_follow,
            out=sys.stdout,
            stop=stop,
        )

    try:
        asyncio.run(main())
    except (BridgeError, ConfigError) as exc:
        console.print(f"workflows-bridge watch: {exc}", markup=False, highlight=False)
        return 1
    if not args.json:
        Console().print(timelines.table())
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="tail the output topic: each instance's current state and timeline",
        description="Reads the output topic (and BRIDGE_TOPICS__STATES) from the beginning and "
        "prints every result and state change, then each instance's state and timeline.",
    )
    parser.add_argument(
        "--instance", action="append", metavar="ID", help="only this instance (repeatable)"
    )
    parser.add_argument(
        "--workflow", action="append", metavar="NAME", help="only this workflow (repeatable)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the records themselves, one JSON a line"
    )
    parser.add_argument(
        "--no-follow", action="store_true", help="stop at the end of the topic instead of waiting"
    )
    add_kafka_arguments(parser)
    parser.set_defaults(handler=_watch)
