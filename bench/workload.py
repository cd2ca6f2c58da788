"""The command records each scenario feeds the contestants, and publishing them quickly.

Every command is keyed by its instance id, as ``workflows-bridge send`` does, so all commands of
one instance land on one partition and stay in order through any contestant.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import BenchError, stop_within

#: The workflow every scenario drives; the emulator accepts any name.
WORKFLOW = "bench-flow"
#: The event type the emulated workflow waits for; never sent, so instances stay live.
NEVER_SENT_EVENT = "bench-never"

#: What one instance of the mixed scenario goes through, in order: 1 create, 4 events,
#: 2 pauses, 2 resumes, 1 terminate. Every step succeeds on an instance that waits for an event.
MIXED_SEQUENCE: tuple[str, ...] = (
    "create",
    "send_event",
    "pause",
    "send_event",
    "resume",
    "send_event",
    "pause",
    "resume",
    "send_event",
    "terminate",
)
#: Instances whose commands are interleaved together in the topic, so that any prefix of the
#: topic (what the naive baseline samples) holds every kind of command.
MIXED_WAVE = 50


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes


@dataclass(slots=True)
class Workload:
    """Records to publish, what they ask for, and the instances that must exist beforehand."""

    records: list[Record]
    actions: Counter[str] = field(default_factory=Counter)
    existing_instances: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def describe(self) -> str:
        return ", ".join(f"{count:,} {action}" for action, count in sorted(self.actions.items()))


def _record(command: dict[str, Any]) -> Record:
    value = json.dumps(command, separators=(",", ":")).encode()
    return Record(str(command["instance_id"]).encode(), value)


def creates(count: int, *, prefix: str) -> Workload:
    """``count`` single creates, each of a new instance with small params."""
    records = [
        _record(
            {
                "action": "create",
                "workflow": WORKFLOW,
                "instance_id": f"{prefix}-{index}",
                "params": {"order": index, "note": "bench"},
            }
        )
        for index in range(count)
    ]
    return Workload(records, Counter({"create": count}))


def mixed(count: int, *, prefix: str) -> Workload:
    """Whole :data:`MIXED_SEQUENCE` runs over ``count / len(sequence)`` instances."""
    per_instance = len(MIXED_SEQUENCE)
    if count % per_instance:
        raise ValueError(f"the mixed workload needs a multiple of {per_instance} commands")
    instances = [f"{prefix}-{index}" for index in range(count // per_instance)]
    records: list[Record] = []
    actions: Counter[str] = Counter()
    for start in range(0, len(instances), MIXED_WAVE):
        wave = instances[start : start + MIXED_WAVE]
        for step, action in enumerate(MIXED_SEQUENCE):
            for instance_id in wave:
                records.append(_record(_mixed_command(action, instance_id, step)))
                actions[action] += 1
    return Workload(records, actions)


def _mixed_command(action: str, instance_id: str, step: int) -> dict[str, Any]:
    command: dict[str, Any] = {"action": action, "workflow": WORKFLOW, "instance_id": instance_id}
    if action == "create":
        command["params"] = {"note": "bench"}
    elif action == "send_event":
        command["event_type"] = "bench-ping"
        command["payload"] = {"step": step}
    return command


def terminates(count: int, *, prefix: str) -> Workload:
    """``count`` creates, then a terminate of each of those instances (issue #9's scenario)."""
    ids = [f"{prefix}-{index}" for index in range(count)]
    records = [
        _record({"action": "create", "workflow": WORKFLOW, "instance_id": i}) for i in ids
    ] + [_record({"action": "terminate", "workflow": WORKFLOW, "instance_id": i}) for i in ids]
    return Workload(records, Counter({"create": count, "terminate": count}))


def events(count: int, *, instances: int, prefix: str) -> Workload:
    """``count`` events spread round-robin over ``instances`` instances that already exist."""
    ids = [f"{prefix}-{index}" for index in range(instances)]
    records = [
        _record(
            {
                "action": "send_event",
                "workflow": WORKFLOW,
                "instance_id": ids[index % instances],
                "event_type": "bench-ping",
                "payload": {"n": index},
            }
        )
        for index in range(count)
    ]
    return Workload(records, Counter({"send_event": count}), existing_instances=ids)


def identified(work: Workload, prefix: str) -> Workload:
    """``work`` with a ``command_id`` (``<prefix>-<n>``) in every command, to time each one."""
    records = []
    for index, record in enumerate(work.records):
        command = json.loads(record.value)
        command["command_id"] = f"{prefix}-{index}"
        records.append(Record(record.key, json.dumps(command, separators=(",", ":")).encode()))
    return Workload(records, Counter(work.actions), list(work.existing_instances))


async def publish(
    bootstrap: str,
    topic: str,
    records: Sequence[Record],
    *,
    within: float,
    partition: int | None = None,
) -> None:
    """Write every record (acks=all; to ``partition`` if given, else by key) and wait until the
    broker has them all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="bench-feeder",
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    try:
        async with asyncio.timeout(within):
            await producer.start()
            pending = [
                await producer.send(topic, record.value, key=record.key, partition=partition)
                for record in records
            ]
            await asyncio.gather(*pending)
    except TimeoutError:
        raise BenchError(
            f"publishing {len(records):,} commands to {topic} took longer than {within:g} s"
        ) from None
    finally:
        await stop_within(producer.stop(), 10.0, "the feeding producer")


async def paced(
    bootstrap: str, topic: str, records: Sequence[Record], *, rate: float, within: float
) -> dict[str, int]:
    """Write the records one by one at ``rate`` per second, each as soon as it is due (light
    load); returns when the broker stamped each, in ms, by command id."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, client_id="bench-feeder", acks="all", linger_ms=0
    )
    written: dict[str, int] = {}
    try:
        async with asyncio.timeout(within):
            await producer.start()
            loop = asyncio.get_running_loop()
            start = loop.time()
            for index, record in enumerate(records):
                delay = start + index / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                meta = await (await producer.send(topic, record.value, key=record.key))
                written[json.loads(record.value)["command_id"]] = meta.timestamp
    except TimeoutError:
        raise BenchError(
            f"pacing {len(records):,} commands took longer than {within:g} s"
        ) from None
    finally:
        await stop_within(producer.stop(), 10.0, "the pacing producer")
    return written
