"""Steady mixed load with its ground truth: what was sent where, and what must come back.

Each instance lives through ``create → event → event → pause → resume → event → terminate``
(a third are created in ``create_batch`` commands of three, some without an id), keyed by
instance id so its commands stay in order. Every event carries a payload no other event has, so
the emulator can tell an event delivered twice. Hostile records are mixed in at a fixed share.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from bridge.pipeline.translate import derived_instance_id
from faults.hostile import Raw, hostile

WORKFLOW = "faults"


@dataclass(slots=True)
class Sent:
    """One record on the command topic and what its answer must hold."""

    partition: int
    offset: int
    #: Instance ids a result must name (one per batch item); empty for hostile records.
    instances: tuple[str, ...]
    hostile: bool
    sent_at: float


@dataclass(slots=True)
class Truth:
    """Everything sent, by (partition, offset), and the instances meant to exist."""

    sent: dict[tuple[int, int], Sent] = field(default_factory=dict)
    instances: set[str] = field(default_factory=set)
    events: int = 0
    failed_sends: int = 0

    @property
    def valid(self) -> int:
        return sum(1 for s in self.sent.values() if not s.hostile)


class MixedLoad:
    """An endless supply of commands (and some hostile records), ``active`` instances at once."""

    def __init__(self, seed: int, *, prefix: str, active: int = 40, hostile_share: float = 0.05):
        self._rnd = random.Random(seed)
        self._prefix = prefix
        self._hostile_share = hostile_share
        self._lives: deque[Iterator[dict[str, Any]]] = deque()
        self._active = active
        self._born = 0
        self._events = 0

    def next(self) -> tuple[Raw, tuple[str, ...]]:
        """The next record and the instance ids its result(s) must name."""
        if self._rnd.random() < self._hostile_share:
            return hostile(self._rnd), ()
        while len(self._lives) < self._active:
            self._lives.extend(self._births())
        life = self._lives[self._rnd.randrange(len(self._lives))]
        command = next(life, None)
        if command is None:
            self._lives.remove(life)
            return self.next()
        ids = tuple(command.pop("_ids"))
        key = command.pop("_key")
        return (key.encode(), json.dumps(command).encode(), []), ids

    def _births(self) -> list[Iterator[dict[str, Any]]]:
        n = self._born
        self._born += 3
        ids = [f"{self._prefix}-{n + k}" for k in range(3)]
        if self._rnd.random() < 1 / 3:
            # One batch creates three instances; each then lives on its own.
            # Their commands share the batch's key, hence its partition, hence its order.
            batch = {
                "action": "create_batch",
                "workflow": WORKFLOW,
                "instances": [{"instance_id": i, "params": {"i": i}} for i in ids],
                "_ids": ids,
            }
            return [self._family(ids, batch)]
        creates = []
        for instance_id in ids:
            if self._rnd.random() < 0.3:  # no id: the bridge derives it from the command id
                command_id = f"{instance_id}-create"
                derived = derived_instance_id(command_id)
                create = {"action": "create", "workflow": WORKFLOW, "command_id": command_id}
                creates.append(self._life(derived, {**create, "_ids": [derived]}, derived))
            else:
                create = {"action": "create", "workflow": WORKFLOW, "instance_id": instance_id}
                creates.append(
                    self._life(instance_id, {**create, "_ids": [instance_id]}, instance_id)
                )
        return creates

    def _family(self, ids: list[str], batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield {**batch, "_key": ids[0]}
        lives = [self._life(i, None, ids[0]) for i in ids]
        while lives:
            life = lives[self._rnd.randrange(len(lives))]
            command = next(life, None)
            if command is None:
                lives.remove(life)
            else:
                yield command

    def _life(
        self, instance_id: str, create: dict[str, Any] | None, key: str
    ) -> Iterator[dict[str, Any]]:
        if create is not None:
            yield {**create, "_key": key}
        base = {
            "workflow": WORKFLOW,
            "instance_id": instance_id,
            "_ids": [instance_id],
            "_key": key,
        }
        for action in ("event", "event", "pause", "resume", "event", "terminate"):
            if action == "event":
                self._events += 1
                yield {
                    **base,
                    "action": "send_event",
                    "event_type": "go",
                    "payload": {"seq": self._events, "of": instance_id},
                }
            else:
                yield {**base, "action": action}


async def offer(
    producer: AIOKafkaProducer,
    topic: str,
    load: MixedLoad,
    truth: Truth,
    *,
    rate: float,
    seconds: float,
) -> None:
    """Send ``rate`` records a second for ``seconds``, recording each acknowledged one.

    A broker outage blocks sends; the schedule then catches up at the pace the broker takes.
    """
    pending: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    count = 0
    while (now := time.monotonic()) - started < seconds:
        due = started + count / rate
        if due > now:
            await asyncio.sleep(due - now)
        (key, value, headers), ids = load.next()
        count += 1
        sent_at = time.time()
        future = await producer.send(topic, value=value, key=key, headers=headers)
        task = asyncio.create_task(_record(future, ids, truth, sent_at))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def _record(
    future: asyncio.Future[Any], ids: tuple[str, ...], truth: Truth, sent_at: float
) -> None:
    try:
        meta = await future
    except Exception:  # noqa: BLE001 - an unacknowledged record does not count as sent
        truth.failed_sends += 1
        return
    truth.sent[(meta.partition, meta.offset)] = Sent(
        meta.partition, meta.offset, ids, not ids, sent_at
    )
    truth.instances.update(ids)
