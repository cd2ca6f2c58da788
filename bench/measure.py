"""Watching a contestant's output topic: how many results, when the first and last were written.

Throughput is taken from the broker's record timestamps (``CreateTime``, set by the contestant's
producer when it queued the result): ``(N − 1) / (last − first)``, i.e. commands per second
from the first result to the last. Start-up (imports, group join) is left out for every
contestant alike. The final count is taken after the contestant has stopped, reading up to
every partition's high watermark, so a duplicate written during shutdown is counted too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import BenchError, stop_within
from bench.procs import Contestant

#: Longer than a fetch may wait at the broker (aiokafka's fetch_max_wait_ms is 500).
_QUIET = 0.7
_OUTCOME = re.compile(rb'"outcome":\s*"([a-z_]+)"')
_COMMAND_ID = re.compile(rb'"command_id":\s*"([^"]*)"')


@dataclass(slots=True)
class Observed:
    """What arrived on one output topic."""

    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Contestant CPU time over wall time between the first and the last result seen, and the
    #: CPU seconds themselves (all the contestant's processes together).
    cpu_busy: float | None = None
    cpu_seconds: float | None = None
    #: When the first result of each command was written (ms), if asked to keep them.
    result_at: dict[str, int] = field(default_factory=dict)

    def rate(self) -> float | None:
        """Commands per second from the first result to the last."""
        if self.count < 2 or self.first_ms is None or self.last_ms is None:
            return None
        return (self.count - 1) / max(self.last_ms - self.first_ms, 1) * 1000

    @property
    def span_seconds(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms) / 1000


class OutputWatcher:
    """Reads one topic from its beginning, without a group, while a contestant runs."""

    def __init__(self, bootstrap: str, topic: str, *, keep_times: bool = False) -> None:
        self.topic = topic
        self._keep_times = keep_times
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            client_id="bench-watcher",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.seen = Observed()

    async def __aenter__(self) -> Self:
        try:
            await asyncio.wait_for(self._consumer.start(), 30)
        except TimeoutError:
            await stop_within(self._consumer.stop(), 5, "the output watcher")
            raise BenchError(f"could not start a consumer of {self.topic} within 30 s") from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await stop_within(self._consumer.stop(), 10, "the output watcher")

    async def _poll(self, timeout_ms: int) -> None:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        seen = self.seen
        for records in batches.values():
            for record in records:
                seen.count += 1
                stamp = record.timestamp
                if seen.first_ms is None or stamp < seen.first_ms:
                    seen.first_ms = stamp
                if seen.last_ms is None or stamp > seen.last_ms:
                    seen.last_ms = stamp
                found = _OUTCOME.search(record.value or b"")
                seen.outcomes[found.group(1).decode() if found else "forwarded"] += 1
                if self._keep_times:
                    command = _COMMAND_ID.search(record.value or b"")
                    if command is not None:
                        seen.result_at.setdefault(command.group(1).decode(), stamp)

    async def wait_for(
        self,
        expected: int,
        *,
        within: float,
        contestant: Contestant | Sequence[Contestant],
        sample_rss: bool = False,
        done: Callable[[], bool] | None = None,
    ) -> Observed:
        """Read until ``expected`` results arrived (or ``done()`` says so); fail clearly on a
        timeout or a crash. Several contestants (replicas) are watched and counted together."""
        group = [contestant] if isinstance(contestant, Contestant) else list(contestant)
        deadline = time.monotonic() + within
        cpu_start: tuple[float, float] | None = None
        while not (done() if done is not None else self.seen.count >= expected):
            for one in group:
                one.check_alive()
                if sample_rss:
                    one.sample_rss()
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"{group[0].name}: {self.seen.count:,} of {expected:,} results after "
                    f"{within:g} s; giving up. Its log ends:\n{group[0].log_tail()}"
                )
            await self._poll(int(min(left, 0.1) * 1000))
            if cpu_start is None and self.seen.count:
                cpu = _cpu(group)
                cpu_start = None if cpu is None else (cpu, time.monotonic())
        cpu = _cpu(group)
        if cpu_start is not None and cpu is not None:
            wall = time.monotonic() - cpu_start[1]
            if wall > 0.2:  # shorter intervals say nothing at 10 ms clock ticks
                self.seen.cpu_busy = (cpu - cpu_start[0]) / wall
                self.seen.cpu_seconds = cpu - cpu_start[0]
        return self.seen

    async def final_count(self, *, within: float = 15.0) -> int:
        """Every record in the topic, once the writer has stopped: read up to each partition's
        high watermark (from the fetch answers; Tansu's ListOffsets is not reliable), and check
        that the count matches the sum of the watermarks (offsets are dense without
        transactions)."""
        try:
            async with asyncio.timeout(within + 5):
                return await self._read_to_end(within)
        except TimeoutError:
            raise BenchError(
                f"could not read {self.topic} to its end within {within:g} s"
            ) from None

    async def _read_to_end(self, within: float) -> int:
        consumer = self._consumer
        partitions = [
            TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()
        ]
        deadline = time.monotonic() + within
        settled: tuple[list[int | None], float] | None = None
        while True:
            await self._poll(100)
            marks: list[int | None] = [consumer.highwater(tp) for tp in partitions]
            caught_up = False
            if all(mark is not None for mark in marks):
                positions = [await consumer.position(tp) for tp in partitions]
                caught_up = all(p >= (m or 0) for p, m in zip(positions, marks, strict=True))
            if not caught_up or settled is None or settled[0] != marks:
                settled = (marks, time.monotonic()) if caught_up else None
            elif time.monotonic() - settled[1] >= _QUIET:
                # Caught up, and no fetch answer for longer than the broker may hold one has
                # moved a watermark: nothing more is coming.
                total = sum(int(mark or 0) for mark in marks)
                if total != self.seen.count:
                    raise BenchError(
                        f"{self.topic}: read {self.seen.count:,} records but the high "
                        f"watermarks add up to {total:,}"
                    )
                return total
            if time.monotonic() > deadline:
                raise BenchError(f"could not read {self.topic} to its end within {within:g} s")


def _cpu(group: Sequence[Contestant]) -> float | None:
    """CPU seconds of every process in ``group`` so far, or None once one is gone."""
    total = 0.0
    for one in group:
        seconds = one.cpu_seconds()
        if seconds is None:
            return None
        total += seconds
    return total


async def count_records(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` (sum of end offsets); used for the dead-letter topic."""
    async with OutputWatcher(bootstrap, topic) as watcher:
        return await watcher.final_count()
