"""Answers already written: read back on assignment, so a crash does not repeat API calls.

A replica that crashes after a command's result was written but before its offset was committed
leaves that command to the partition's next owner. Creates are safe to redo (deterministic ids),
status edits are idempotent, but an event would be sent twice: the API has no idempotency key.
So when a replica takes partitions, it reads the output and dead-letter topics for answers to
commands past the committed offsets, and those commands are not carried out again (their
offsets are committed past). Only a crash between an API call and the acknowledgement of its
result can still repeat the call.

The scan is bounded. Every commit carries, in its metadata, a time before which nothing for the
partition's uncommitted commands can have been written (when the first unfinished command was
consumed); the scan starts there on every output partition (``offsets_for_times``) and stops at
the end offsets seen when it began. Partitions whose committed offset is their end are not
scanned at all. ``max_records`` and ``timeout`` cap the rest; an answer the scan misses only
means its command is carried out again, as before.

With a transactional id the scan reads ``read_committed``: an aborted transaction's results
were never seen by anyone, so their commands must be answered again.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bridge.config import Settings
from bridge.contract.deadletter import HEADER_PREFIX
from bridge.contract.results import Outcome
from bridge.errors import KafkaUnavailable
from bridge.pipeline import kafka_io
from bridge.pipeline.translate import Job

log = structlog.get_logger(__name__)

_METADATA = re.compile(r"^wb1 t=(\d+)$")
#: Results carry the writer's clock (CreateTime); allow for clocks and LogAppendTime this far off.
CLOCK_MARGIN_SECONDS = 10.0
_UNAPPLIED = frozenset({Outcome.REJECTED.value, Outcome.FAILED.value})


def commit_metadata(since: float) -> str:
    """The metadata of a commit: nothing past it was written before ``since`` (epoch seconds)."""
    return f"wb1 t={max(0, int(since * 1000))}"


def metadata_time(metadata: str | None) -> float | None:
    """The time in a commit's metadata, or None when it has none of ours."""
    found = _METADATA.match(metadata or "")
    return int(found.group(1)) / 1000 if found else None


@dataclass(slots=True)
class Answers:
    """What is already on the topics for one command record."""

    #: Result records by instance id (None when the record named none), with their outcome.
    results: dict[str | None, str] = field(default_factory=dict)
    #: Dead letters, by the ``field`` header they carry (None without one).
    dead_letters: set[str | None] = field(default_factory=set)

    def complete_for_invalid(self) -> bool:
        """An invalid record is answered once both its result and its dead letter are there."""
        return bool(self.results) and bool(self.dead_letters)

    def unanswered(self, jobs: Sequence[Job]) -> list[Job]:
        """The jobs still to be carried out: those without a result, and those whose result
        needed a dead letter that is missing."""
        remaining = []
        for job in jobs:
            outcome = self.results.get(job.instance_id)
            if outcome is None:
                remaining.append(job)
            elif outcome in _UNAPPLIED:
                where = None if job.item is None else f"instances[{job.item}]"
                if where not in self.dead_letters:
                    remaining.append(job)
        return remaining


@dataclass(slots=True)
class Ledger:
    """Answers found past the committed offsets, by command partition and offset."""

    answers: dict[TopicPartition, dict[int, Answers]] = field(default_factory=dict)

    def take(self, tp: TopicPartition, offset: int) -> Answers | None:
        """The answers for the record at ``offset``, removed from the ledger."""
        found = self.answers.get(tp)
        if not found:
            return None
        answers = found.pop(offset, None)
        if not found:
            del self.answers[tp]
        return answers

    def forget(self, tp: TopicPartition) -> None:
        self.answers.pop(tp, None)

    def merge(self, other: Ledger) -> None:
        for tp, by_offset in other.answers.items():
            self.answers[tp] = by_offset

    def count(self) -> int:
        return sum(len(by_offset) for by_offset in self.answers.values())

    def note_result(self, value: bytes | None, backlog: dict[TopicPartition, int]) -> None:
        """Record one output-topic record if it answers a command in ``backlog``."""
        try:
            record = json.loads(value or b"")
            source = record["source"]
            if record.get("kind") != "result":
                return
            tp = TopicPartition(source["topic"], int(source["partition"]))
            offset = int(source["offset"])
            instance_id, outcome = record.get("instance_id"), str(record["outcome"])
        except (ValueError, KeyError, TypeError):
            return  # not one of our results
        if offset >= backlog.get(tp, offset + 1):
            self._answers(tp, offset).results[instance_id] = outcome

    def note_dead_letter(
        self, headers: Iterable[tuple[str, bytes]], backlog: dict[TopicPartition, int]
    ) -> None:
        """Record one dead letter if it answers a command in ``backlog``."""
        error = {
            k.removeprefix(HEADER_PREFIX): v for k, v in headers if k.startswith(HEADER_PREFIX)
        }
        try:
            tp = TopicPartition(error["topic"].decode(), int(error["partition"]))
            offset = int(error["offset"])
        except (KeyError, ValueError, UnicodeDecodeError):
            return
        if offset >= backlog.get(tp, offset + 1):
            where = error.get("field")
            self._answers(tp, offset).dead_letters.add(
                None if where is None else where.decode(errors="replace")
            )

    def _answers(self, tp: TopicPartition, offset: int) -> Answers:
        return self.answers.setdefault(tp, {}).setdefault(offset, Answers())


@dataclass(frozen=True, slots=True)
class Scan:
    """What one read-back found, and from when it read."""

    ledger: Ledger
    #: The time the scan read from, per scanned command partition, with the last answered
    #: offset: commits up to that offset must keep saying "since" no later than this.
    floors: dict[TopicPartition, tuple[float, int]]
    records: int = 0


class ReadBack:
    """Reads answers for partitions a replica takes; an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        pipeline = settings.pipeline
        self._max_records = pipeline.readback_max_records
        self._timeout = pipeline.readback_timeout_seconds
        #: Without our metadata (an older commit, a broker that drops it), look back this far.
        self._fallback = pipeline.retry_deadline_seconds + pipeline.drain_timeout_seconds
        self._committed_only = bool(settings.kafka.transactional_id)
        self._reader = kafka_io.make_reader(settings)
        self._admin = kafka_io.make_admin(settings)

    async def __aenter__(self) -> Self:
        if self._max_records:
            try:
                await self._admin.start()
                await self._reader.start()
            except KafkaError as exc:
                await self._close()
                raise KafkaUnavailable(f"cannot start the read-back clients: {exc}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        await self._reader.stop()
        await self._admin.close()

    async def scan(self, partitions: set[TopicPartition]) -> Scan:
        """Answers already written for commands of ``partitions`` past their committed offsets."""
        if not self._max_records or not partitions:
            return Scan(Ledger(), {})
        # Right after a broker restart or pause the group coordinator or a leader may not be
        # there yet: retry within the time the read-back may take, then give up.
        deadline, delay = time.monotonic() + self._timeout, 0.25
        while True:
            try:
                return await self._scan(partitions)
            except KafkaError as exc:
                if time.monotonic() + delay >= deadline:
                    raise KafkaUnavailable(f"reading back answers failed: {exc}") from exc
                log.info("readback_retry", error=str(exc), retry_in_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _scan(self, partitions: set[TopicPartition]) -> Scan:
        started = time.monotonic()
        group = self._settings.kafka.group_id
        committed = await self._admin.list_consumer_group_offsets(
            group, partitions=sorted(partitions)
        )
        ends = await self._reader.end_offsets(sorted(partitions))
        backlog: dict[TopicPartition, int] = {}
        since = time.time()
        for tp in partitions:
            mark = committed.get(tp)
            offset = mark.offset if mark is not None and mark.offset >= 0 else 0
            if ends.get(tp, 0) <= offset:
                continue  # nothing uncommitted: the common case after a clean hand-over
            backlog[tp] = offset
            hinted = metadata_time(mark.metadata if mark is not None else None)
            since = min(since, hinted if hinted is not None else time.time() - self._fallback)
        if not backlog:
            return Scan(Ledger(), {})
        ledger, read = await self._read(backlog, since - CLOCK_MARGIN_SECONDS)
        floors = {}
        for tp in backlog:
            answered = ledger.answers.get(tp)
            if answered:
                floors[tp] = (since, max(answered))
        log.info(
            "readback",
            partitions=len(backlog),
            records=read,
            answered=ledger.count(),
            since_seconds=round(time.time() - since, 1),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return Scan(ledger, floors, read)

    async def _read(self, backlog: dict[TopicPartition, int], since: float) -> tuple[Ledger, int]:
        ranges = await self._ranges(since)
        ledger, read = Ledger(), 0
        if not ranges:
            return ledger, read
        reader, dlq = self._reader, self._settings.topics.dlq
        reader.assign(list(ranges))
        try:
            for tp, (start, _) in ranges.items():
                reader.seek(tp, start)
            deadline = time.monotonic() + self._timeout
            left = set(ranges)
            first_hw: dict[TopicPartition, int] = {}
            while left:
                if time.monotonic() >= deadline:
                    log.warning("readback_incomplete", partitions_left=len(left), records=read)
                    break
                batches = await reader.getmany(*left, timeout_ms=200, max_records=5000)
                for tp, records in batches.items():
                    read += len(records)
                    for record in records:
                        if tp.topic == dlq:
                            ledger.note_dead_letter(record.headers, backlog)
                        else:
                            ledger.note_result(record.value, backlog)
                left = {tp for tp in left if not await self._reached(tp, ranges[tp][1], first_hw)}
        finally:
            reader.unsubscribe()
        return ledger, read

    async def _reached(
        self, tp: TopicPartition, end: int, first_hw: dict[TopicPartition, int]
    ) -> bool:
        """Whether everything written before the scan began has been read.

        The target is the high watermark the first fetch reported (``end_offsets`` may answer
        short: Tansu's does, and read_committed's stops at the last stable offset). Reading
        ``read_committed``, every transaction open at that moment must be decided first: an
        earlier owner that crashed mid-transaction keeps the last stable offset back until its
        transaction is aborted (its restart, or ``BRIDGE_KAFKA__TRANSACTION_TIMEOUT_MS``), and
        the answers after it are not visible until then.
        """
        reader = self._reader
        highwater = reader.highwater(tp)
        if highwater is None:
            return False  # no fetch answered yet
        target = max(end, first_hw.setdefault(tp, highwater))
        if self._committed_only:
            stable = reader.last_stable_offset(tp)
            if stable is None or stable < target:
                return False
        position: int = await reader.position(tp)
        return position >= target

    async def _ranges(self, since: float) -> dict[TopicPartition, list[int]]:
        """``[start, end)`` per output and dead-letter partition: from ``since`` to the end."""
        topics = self._settings.topics
        outputs = await self._partitions_of([topics.output, topics.dlq])
        if not outputs:
            return {}
        starts = await self._reader.offsets_for_times({tp: int(since * 1000) for tp in outputs})
        ends = await self._reader.end_offsets(outputs)
        ranges = {}
        for tp in outputs:
            found: Any = starts.get(tp)
            # None: nothing visible since then; but reading read_committed, records of a
            # transaction still open may follow the end, so the partition is still followed.
            start = ends[tp] if found is None else found.offset
            ranges[tp] = [start, max(start, ends[tp])]
        total = sum(end - start for start, end in ranges.values())
        if total > self._max_records:
            share = self._max_records // len(ranges)
            for bounds in ranges.values():
                bounds[0] = max(bounds[0], bounds[1] - share)
            log.warning("readback_truncated", records=total, kept=self._max_records)
        return ranges

    async def _partitions_of(self, topics: list[str]) -> list[TopicPartition]:
        described = await self._admin.describe_topics(topics)
        found = []
        for topic in described:
            if topic.get("error_code"):
                continue
            for partition in topic.get("partitions", ()):
                found.append(TopicPartition(topic["topic"], int(partition["partition"])))
        return found
