"""``workflows-bridge dlq replay``: put dead letters back on their command topic, with their
original command id.

Each dead letter's key, value and original headers go back to the topic it came from (its
``workflows_bridge.errors.topic`` header, or ``--to``), with a ``workflows_bridge.command_id``
header naming the command id it had. The bridge honours that header over the offset-derived
default, so a replayed ``create`` without an instance id derives the same instance id again and
never makes a second instance. Filters: ``--since`` / ``--until`` (when the letter was written),
``--outcome``, ``--error-class``; ``--dry-run`` only counts.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from rich.console import Console
from rich.progress import Progress

from bridge.config import KafkaSettings
from bridge.contract.deadletter import HEADER_PREFIX
from bridge.errors import BridgeError, ConfigError
from bridge.pipeline.translate import COMMAND_ID_HEADER
from bridge.tools.common import (
    add_kafka_arguments,
    started_admin,
    started_consumer,
    started_producer,
    tool_settings,
)

_FETCH = 500


@dataclass(frozen=True, slots=True)
class Filters:
    since_ms: int | None = None
    until_ms: int | None = None
    outcome: str | None = None
    error_class: str | None = None

    def accepts(self, headers: dict[str, bytes], timestamp_ms: int) -> bool:
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and timestamp_ms > self.until_ms:
            return False
        if self.outcome is not None and _text(headers, "outcome") != self.outcome:
            return False
        return self.error_class is None or _text(headers, "class_name") == self.error_class


@dataclass
class Summary:
    read: int = 0
    matched: int = 0
    replayed: int = 0
    skipped: list[str] = field(default_factory=list)
    by_class: Counter[str] = field(default_factory=Counter)


def _text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(HEADER_PREFIX + name)
    return None if value is None else value.decode("utf-8", errors="replace")


def replay_record(
    record: ConsumerRecord[bytes, bytes], to: str | None
) -> tuple[str, list[tuple[str, bytes]]] | str:
    """Where a dead letter goes back to and with which headers, or why it cannot."""
    headers = dict(record.headers)
    topic = to or _text(headers, "topic")
    if not topic:
        return f"offset {record.offset}: no {HEADER_PREFIX}topic header (not a dead letter?)"
    if _text(headers, "value_omitted") is not None:
        return (
            f"offset {record.offset}: the value was too large to copy; replay the original at "
            f"{_text(headers, 'topic')}/{_text(headers, 'partition')}/{_text(headers, 'offset')}"
        )
    command_id = _text(headers, "command_id") or (
        f"{_text(headers, 'topic')}-{_text(headers, 'partition')}-{_text(headers, 'offset')}"
    )
    kept = [
        (k, v)
        for k, v in record.headers
        if not k.startswith(HEADER_PREFIX) and k != COMMAND_ID_HEADER
    ]
    return topic, [*kept, (COMMAND_ID_HEADER, command_id.encode())]


async def _partitions(kafka: KafkaSettings, dlq: str) -> list[int]:
    async with started_admin(kafka) as admin:
        # Describe it only if it exists: naming a missing topic could make the broker create it.
        if dlq not in await admin.list_topics():
            raise ConfigError(f"dead-letter topic {dlq} does not exist (BRIDGE_TOPICS__DLQ)")
        [described] = await admin.describe_topics([dlq])
    return sorted(p["partition"] for p in described["partitions"])


async def _ends(
    consumer: AIOKafkaConsumer, dlq: str, partitions: list[int]
) -> dict[TopicPartition, int]:
    tps = [TopicPartition(dlq, p) for p in partitions]
    consumer.assign(tps)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    return ends


async def replay(
    kafka: KafkaSettings,
    dlq: str,
    filters: Filters,
    *,
    to: str | None,
    dry_run: bool,
    console: Console,
) -> Summary:
    """Read the DLQ up to its end at the start and replay what the filters accept."""
    summary = Summary()
    partitions = await _partitions(kafka, dlq)
    async with (
        # "earliest": newly assigned partitions start at the beginning. (Seeking there after
        # assign() races with aiokafka's own reset to the default, "latest", and can lose.)
        started_consumer(
            kafka, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        ) as consumer,
        started_producer(kafka, linger_ms=5) as producer,
    ):
        ends = await _ends(consumer, dlq, partitions)
        await _seek(consumer, ends, filters.since_ms)
        starts = {tp: await consumer.position(tp) for tp in ends}
        total = sum(max(0, end - starts[tp]) for tp, end in ends.items())
        pending = []
        with Progress(console=console, transient=True, disable=total < 1) as progress:
            bar = progress.add_task("reading dead letters", total=total)
            remaining = {tp for tp, end in ends.items() if starts[tp] < end}
            fetched: set[TopicPartition] = set()
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_FETCH)
                for tp, records in batches.items():
                    if tp not in fetched:
                        # Some brokers (Tansu) answer ListOffsets below the high watermark; the
                        # first fetch's high watermark is the end as it was at the start.
                        fetched.add(tp)
                        highwater = consumer.highwater(tp)
                        if highwater is not None and highwater > ends[tp]:
                            progress.update(bar, total=total + highwater - ends[tp])
                            total += highwater - ends[tp]
                            ends[tp] = highwater
                    for record in records:
                        if record.offset >= ends[tp]:
                            remaining.discard(tp)
                            break
                        summary.read += 1
                        progress.advance(bar)
                        future = _one(record, filters, to, dry_run, summary)
                        if future is not None:
                            topic, headers = future
                            pending.append(
                                await producer.send(
                                    topic, value=record.value, key=record.key, headers=headers
                                )
                            )
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            await asyncio.gather(*pending)
    return summary


def _one(
    record: ConsumerRecord[bytes, bytes],
    filters: Filters,
    to: str | None,
    dry_run: bool,
    summary: Summary,
) -> tuple[str, list[tuple[str, bytes]]] | None:
    headers = dict(record.headers)
    if not filters.accepts(headers, record.timestamp):
        return None
    summary.matched += 1
    summary.by_class[_text(headers, "class_name") or "unknown"] += 1
    target = replay_record(record, to)
    if isinstance(target, str):
        summary.skipped.append(target)
        return None
    if dry_run:
        return None
    summary.replayed += 1
    return target


async def _seek(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], since_ms: int | None
) -> None:
    tps = list(ends)
    for tp in tps:
        await consumer.position(tp)  # let the reset to the earliest offset finish
    if since_ms is None:
        return
    found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    for tp, at in found.items():
        consumer.seek(tp, at.offset if at is not None else ends[tp])


def _instant(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _replay(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    try:
        settings = tool_settings(args)
    except ConfigError as exc:
        console.print(f"workflows-bridge dlq replay: {exc}", markup=False, highlight=False)
        return 2
    filters = Filters(args.since, args.until, args.outcome, args.error_class)
    dlq = args.dlq or settings.topics.dlq
    try:
        summary = asyncio.run(
            replay(settings.kafka, dlq, filters, to=args.to, dry_run=args.dry_run, console=console)
        )
    except ConfigError as exc:
        console.print(f"workflows-bridge dlq replay: {exc}", markup=False, highlight=False)
        return 2
    except BridgeError as exc:
        console.print(f"could not replay: {exc}", markup=False, highlight=False)
        return 1
    for reason in summary.skipped:
        console.print(f"skipped {reason}", markup=False, highlight=False)
    classes = ", ".join(f"{name} {count}" for name, count in summary.by_class.most_common())
    verb = "would replay" if args.dry_run else "replayed"
    count = summary.matched - len(summary.skipped) if args.dry_run else summary.replayed
    console.print(
        f"read {summary.read} dead letter(s) from {dlq}; {summary.matched} matched"
        f"{f' ({classes})' if classes else ''}; {verb} {count}; skipped {len(summary.skipped)}",
        markup=False,
        highlight=False,
    )
    return 1 if summary.skipped else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dlq", help="work with the dead-letter topic (replay)")
    actions = parser.add_subparsers(dest="dlq_action", required=True)
    replay_parser = actions.add_parser(
        "replay",
        help="put dead letters back on their command topic with their original command id",
    )
    replay_parser.add_argument(
        "--since", type=_instant, help="only letters written at or after (ISO-8601)"
    )
    replay_parser.add_argument("--until", type=_instant, help="only letters written up to")
    replay_parser.add_argument("--outcome", choices=("rejected", "failed"), help="only these")
    replay_parser.add_argument(
        "--error-class", help="only this error class (e.g. TransportError, NotFound)"
    )
    replay_parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    replay_parser.add_argument("--dlq", help="dead-letter topic (default: BRIDGE_TOPICS__DLQ)")
    replay_parser.add_argument("--to", help="topic to replay into (default: each letter's own)")
    add_kafka_arguments(replay_parser)
    replay_parser.set_defaults(handler=_replay)


__all__: Sequence[str] = ("Filters", "register", "replay", "replay_record")
