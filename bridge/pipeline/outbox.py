"""The outbox: every command's one owner, from consumption until its offset is finished.

A command is registered when consumed (:meth:`Outbox.accept`, with the number of jobs it was
planned into) and each job hands its records over when it ends (:meth:`Outbox.job_done`) or
is dropped unrun because its partition was revoked (:meth:`Outbox.job_dropped`). After its last
job the command is settled exactly once:

* finished — all its records acknowledged by the broker; its offset may be committed;
* abandoned — its partition was revoked; the next owner redoes it;
* failed — the broker would not take a record: the bridge stops so the command is redelivered.

Commits move only over each partition's finished prefix (at-least-once). With a transactional
id the records are held instead and written, with the offsets of the finished prefix, in one
Kafka transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from bridge.config import Settings
from bridge.errors import BridgeError, KafkaUnavailable
from bridge.pipeline import kafka_io
from bridge.pipeline.offsets import OffsetTracker
from bridge.pipeline.translate import Origin, OutRecord

log = structlog.get_logger(__name__)


@dataclass(slots=True, eq=False)
class PendingCommand:
    """A consumed command until it is settled. Only the outbox changes it."""

    origin: Origin
    tp: TopicPartition
    #: Jobs not ended yet; the command settles when this reaches 0.
    remaining: int
    records: list[OutRecord] = field(default_factory=list)
    acks: list[asyncio.Future[Any]] = field(default_factory=list)
    abandoned: bool = False


class Outbox:
    """Publishes records, settles commands, tracks finished offsets and commits them."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._producer = producer
        self._transactional = bool(settings.kafka.transactional_id)
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._open: dict[TopicPartition, int] = defaultdict(int)
        self._settle_changed = asyncio.Event()
        self._held: dict[TopicPartition, dict[int, list[OutRecord]]] = defaultdict(dict)
        self._commit_lock = asyncio.Lock()
        #: Set when a record could not be written; the bridge stops on it.
        self.fatal: BridgeError | None = None

    @property
    def pending(self) -> int:
        """Commands consumed and not finished."""
        return self._tracker.pending()

    def accept(self, tp: TopicPartition, origin: Origin, *, jobs: int) -> PendingCommand:
        """Own the command consumed at ``origin``, which ends after ``jobs`` jobs (at least 1)."""
        if jobs < 1:
            raise ValueError("a command ends with at least one job")
        self._tracker.add(tp, origin.offset)
        self._open[tp] += 1
        return PendingCommand(origin, tp, remaining=jobs)

    async def job_done(self, command: PendingCommand, records: list[OutRecord]) -> None:
        """One job of ``command`` ended with ``records``: send them (or hold them)."""
        if self._transactional or command.abandoned:
            command.records.extend(records)
        else:
            try:
                command.acks.extend(await self._send_all(records))
            except BridgeError as exc:
                # Never finish this offset: the bridge stops and the command is redelivered.
                command.abandoned = True
                self.stop_for(exc)
        self._count_down(command)

    def job_dropped(self, command: PendingCommand) -> None:
        """A job of ``command`` will never run (its partition was revoked)."""
        command.abandoned = True
        self._count_down(command)

    def stop_for(self, error: BridgeError) -> None:
        """Stop the bridge (a record could not be written, or a bug): what is unfinished is
        redelivered to the partitions' next owner."""
        if self.fatal is None:
            log.error("bridge_stopping", error=str(error), error_type=type(error).__name__)
            self.fatal = error
        self._settle_changed.set()

    async def wait_settled(self, partitions: set[TopicPartition] | None, within: float) -> bool:
        """Until every command of ``partitions`` (None: all) is settled; False on time-out.

        Returns at once when the bridge is stopping for an error: nothing more can be written.
        """

        def idle() -> bool:
            keys = self._open.keys() if partitions is None else partitions
            return self.fatal is not None or all(self._open.get(tp, 0) <= 0 for tp in keys)

        deadline = time.monotonic() + within
        while not idle():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._settle_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle_changed.wait(), left)
        return True

    async def commit(
        self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition] | None = None
    ) -> None:
        """Commit each partition's finished prefix (of ``partitions``, or all)."""
        offsets = self._tracker.to_commit(partitions)
        if not offsets:
            return
        async with self._commit_lock:
            if self._transactional:
                await self._commit_transaction(offsets)
            else:
                try:
                    await consumer.commit(
                        {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}
                    )
                except KafkaError as exc:
                    log.warning("commit_failed", error=str(exc))
                    return
            self._tracker.committed(offsets)

    def forget(self, tp: TopicPartition) -> None:
        """A revoked partition: its unfinished commands belong to the next owner."""
        self._tracker.forget(tp)
        self._open.pop(tp, None)
        self._held.pop(tp, None)

    # -- internals -----------------------------------------------------------------------

    def _count_down(self, command: PendingCommand) -> None:
        command.remaining -= 1
        if command.remaining > 0:
            return
        if command.abandoned:
            self._settle(command.tp)
        elif self._transactional:
            # Written, with the offsets, by the next transaction over the finished prefix.
            self._held[command.tp][command.origin.offset] = command.records
            self._tracker.finish(command.tp, command.origin.offset)
            self._settle(command.tp)
        else:
            self._finish_on_acks(command)

    async def _send_all(self, records: list[OutRecord]) -> list[asyncio.Future[Any]]:
        topics = self._settings.topics
        futures = []
        for record in records:
            topic = topics.dlq if record.dead_letter else topics.output
            futures.append(await kafka_io.send(self._producer, topic, record))
        return futures

    def _finish_on_acks(self, command: PendingCommand) -> None:
        """Finish once the broker has every record: callbacks on the producer's futures, since
        a task per command was a tenth of the CPU at thousands of commands a second."""
        waiting = len(command.acks)

        def acked(_: asyncio.Future[Any]) -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                self._acked(command)

        if waiting == 0:
            self._acked(command)
        for future in command.acks:
            future.add_done_callback(acked)

    def _acked(self, command: PendingCommand) -> None:
        for future in command.acks:
            error = None if not future.cancelled() else "cancelled"
            if error is None and future.exception() is not None:
                error = str(future.exception())
            if error is not None:
                self.stop_for(KafkaUnavailable(f"the broker did not take a record: {error}"))
                break
        else:
            self._tracker.finish(command.tp, command.origin.offset)
        self._settle(command.tp)

    def _settle(self, tp: TopicPartition) -> None:
        self._open[tp] -= 1
        self._settle_changed.set()

    async def _commit_transaction(self, offsets: dict[TopicPartition, int]) -> None:
        records: list[OutRecord] = []
        for tp, frontier in offsets.items():
            held = self._held[tp]
            for offset in sorted(o for o in held if o < frontier):
                records.extend(held.pop(offset))
        try:
            async with self._producer.transaction():
                futures = await self._send_all(records)
                await self._producer.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()},
                    self._settings.kafka.group_id,
                )
            await kafka_io.acknowledged(futures)
        except KafkaError as exc:
            raise KafkaUnavailable(f"transaction failed: {exc}") from exc
