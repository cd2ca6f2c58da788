"""Reading the instance-state stream back in tests, and judging its chains.

A chain is the state records of one instance in topic order. It is *whole* when it starts
with ``previous_status`` null, each record's ``previous_status`` is the status before it, no
status repeats its predecessor, it ends in exactly one final status, and that final record
carries the output (``complete``) or error (``errored``) when outputs are fetched.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer

from bridge.config import StateSettings
from bridge.contract.results import StateRecord
from bridge.contract.rules import FINAL_STATUSES


def fast_states(**changes: Any) -> StateSettings:
    """State settings for tests: short intervals (the budget lane still applies)."""
    values: dict[str, Any] = {
        "enabled": True,
        "poll_interval_seconds": 0.3,
        "reconcile_interval_seconds": 2.0,
        "reorder_window_seconds": 0.5,
    }
    values.update(changes)
    return StateSettings(**values)


class StateReader:
    """Every state record of a topic, from the beginning, as :class:`StateRecord`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        self.records: list[StateRecord] = []
        #: The broker's timestamp of each record (ms), in the same order.
        self.timestamps: list[int] = []

    async def __aenter__(self) -> StateReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, seconds: float = 0.2) -> None:
        batches = await self._consumer.getmany(timeout_ms=int(seconds * 1000))
        for records in batches.values():
            for record in records:
                value = json.loads(record.value or b"null")
                if isinstance(value, dict) and value.get("kind") == "state":
                    self.records.append(StateRecord.model_validate(value))
                    self.timestamps.append(record.timestamp)

    def chains(self) -> dict[str, list[StateRecord]]:
        grouped: dict[str, list[StateRecord]] = {}
        for record in self.records:
            grouped.setdefault(record.instance_id, []).append(record)
        return grouped

    def final(self, instance_id: str) -> StateRecord | None:
        for record in self.chains().get(instance_id, []):
            if record.status in FINAL_STATUSES:
                return record
        return None

    async def until_final(self, instances: Iterable[str], *, within: float = 120.0) -> None:
        """Read until each instance has a final state record."""
        wanted = set(instances)
        deadline = time.monotonic() + within
        while missing := {i for i in wanted if self.final(i) is None}:
            if time.monotonic() > deadline:
                shown = {i: [r.status for r in self.chains().get(i, [])] for i in sorted(missing)}
                raise AssertionError(f"no final state within {within}s for {shown}")
            await self.poll()

    async def settle(self, quiet: float = 1.0) -> None:
        """Read until nothing new arrives for ``quiet`` seconds (late duplicates would show)."""
        seen = -1
        while seen != len(self.records):
            seen = len(self.records)
            await self.poll(quiet)
            await asyncio.sleep(0)


def chain_problems(
    chain: list[StateRecord], *, outputs: bool = True, from_queued: bool = True
) -> list[str]:
    """What is wrong with one instance's chain (empty: it is whole). ``from_queued``: it must
    also begin at ``queued`` (the instance was seen from its creation)."""
    problems: list[str] = []
    if not chain:
        return ["no records"]
    statuses = [r.status for r in chain]
    if chain[0].previous_status is not None:
        problems.append(f"starts after {chain[0].previous_status}: {statuses}")
    if from_queued and chain[0].status != "queued":
        problems.append(f"does not start at queued: {statuses}")
    for before, after in itertools.pairwise(chain):
        if after.previous_status != before.status:
            problems.append(f"{after.previous_status} != {before.status} in {statuses}")
        if after.status == before.status:
            problems.append(f"{after.status} repeated in {statuses}")
    finals = [r for r in chain if r.status in FINAL_STATUSES]
    if len(finals) != 1 or chain[-1].status not in FINAL_STATUSES:
        problems.append(f"not exactly one final, at the end: {statuses}")
    elif outputs:
        end = finals[0]
        if end.status == "complete" and end.output is None:
            problems.append("complete without output")
        if end.status == "errored" and end.error is None:
            problems.append("errored without error")
    return problems
