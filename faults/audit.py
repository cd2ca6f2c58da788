"""Reading back what the bridge wrote, and counting it against what was sent."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from bridge.contract.deadletter import HEADER_PREFIX


@dataclass
class Output:
    """Result records and dead letters, read from the beginning, as they arrive."""

    #: (partition, offset) of the command -> instance id named by each result, in order read.
    results: dict[tuple[int, int], list[str | None]] = field(default_factory=dict)
    #: Results whose source is not a command topic record we know of.
    foreign: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_lettered: set[tuple[int, int]] = field(default_factory=set)
    records: int = 0
    #: Broker time (ms) each command's first result arrived, for latencies.
    first_at: dict[tuple[int, int], int] = field(default_factory=dict)
    #: Outcome of each result, in step with ``results``.
    outcomes: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    token_hits: int = 0

    def duplicates(self) -> int:
        """Result records beyond the first for the same command record and instance."""
        return sum(sum(n - 1 for n in Counter(ids).values()) for ids in self.results.values())


class OutputReader:
    """Follows the output and dead-letter topics of one bridge group."""

    def __init__(
        self,
        bootstrap: str,
        *,
        commands: str,
        output: str,
        dlq: str,
        isolation_level: str,
        token: str = "",
    ) -> None:
        self._commands, self._output, self._dlq = commands, output, dlq
        self._token = token.encode()
        self._consumer = AIOKafkaConsumer(
            output,
            dlq,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
            request_timeout_ms=120_000,
        )
        self.seen = Output()

    async def __aenter__(self) -> OutputReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, wait: float = 0.5) -> int:
        batches = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=5000)
        count = 0
        for records in batches.values():
            for record in records:
                count += 1
                self._note(record)
        return count

    async def read_to_end(self, within: float = 60.0) -> None:
        """Read until every partition's end offset, as it was when this was called."""
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            positions = {tp: await self._consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                return
            await self.poll(0.2)
        raise TimeoutError(f"could not read {self._output} to its end within {within:g} s")

    def _note(self, record: Any) -> None:
        seen = self.seen
        seen.records += 1
        if self._token and (
            self._token in (record.value or b"") or any(self._token in v for _, v in record.headers)
        ):
            seen.token_hits += 1
        if record.topic == self._dlq:
            error = dict(record.headers)
            reason = (
                error.get(HEADER_PREFIX + "stage", b"?").decode(errors="replace")
                + "/"
                + error.get(HEADER_PREFIX + "class_name", b"?").decode(errors="replace")
            )
            seen.dead_letters[reason] += 1
            try:
                where = (
                    int(error[HEADER_PREFIX + "partition"]),
                    int(error[HEADER_PREFIX + "offset"]),
                )
            except (KeyError, ValueError):
                return
            seen.dead_lettered.add(where)
            return
        try:
            result = json.loads(record.value or b"")
            source = result["source"]
            if result.get("kind") != "result":
                return
        except (ValueError, KeyError, TypeError):
            seen.foreign += 1
            return
        if source.get("topic") != self._commands:
            seen.foreign += 1
            return
        key = (int(source["partition"]), int(source["offset"]))
        seen.results.setdefault(key, []).append(result.get("instance_id"))
        seen.outcomes.setdefault(key, []).append(str(result.get("outcome")))
        seen.first_at.setdefault(key, record.timestamp)
