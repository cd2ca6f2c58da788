"""The outbox: every command's one owner, from consumption until its offset is finished.

A command is registered when consumed (:meth:`Outbox.accept`, with the number of jobs it was
planned into) and each job hands its records over when it ends (:meth:`Outbox.job_done`) or
is dropped unrun because its partition was revoked (:meth:`Outbox.job_dropped`). After its last
job the command is settled exactly once:

* finished — all its records acknowledged by the broker; its offset may be committed;
* abandoned — its partition was revoked; the next owner redoes it;
* failed — the broker would not take a record: the bridge stops so the command is redelivered.

Commits move only over each partition's finished prefix (at-least-once); each commit's metadata
says since when anything past it may have been written (see :mod:`bridge.pipeline.readback`).

With a transactional id, records go into an open transaction as soon as their command ends, and
each commit writes the finished prefix's offsets into it and commits it: results become visible
within a commit interval, and a command whose result is visible but whose offset is not yet
committed is found by the next owner's read-back instead of being carried out again.
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
from bridge.pipeline.readback import commit_metadata
from bridge.pipeline.translate import Origin, OutRecord

log = structlog.get_logger(__name__)


@dataclass(slots=True, eq=False)
class PendingCommand:
    """A consumed command until it is settled. Only the outbox changes it."""

    origin: Origin
    tp: TopicPartition
    #: Jobs not ended yet; the command settles when this reaches 0.
    remaining: int
    acks: list[asyncio.Future[Any]] = field(default_factory=list)
    abandoned: bool = False
    #: The partition's ownership it was consumed under (see :meth:`Outbox.forget`).
    epoch: int = 0


class Outbox:
    """Publishes records, settles commands, tracks finished offsets and commits them."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._producer = producer
        self._transactional = bool(settings.kafka.transactional_id)
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._open: dict[TopicPartition, int] = defaultdict(int)
        self._settle_changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._in_transaction = False
        #: Bumped when a partition is given up: commands consumed before are no longer ours.
        self._epochs: dict[TopicPartition, int] = defaultdict(int)
        #: A transaction failed: the producer is unusable and the bridge is stopping.
        self._broken = False
        #: Per partition, from a read-back: commits up to the offset keep saying "since" no
        #: later than the time (answers written by an earlier owner are older than our intake).
        self._floors: dict[TopicPartition, tuple[float, int]] = {}
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
        self._tracker.add(tp, origin.offset, time.time())
        self._open[tp] += 1
        return PendingCommand(origin, tp, remaining=jobs, epoch=self._epochs[tp])

    async def job_done(self, command: PendingCommand, records: list[OutRecord]) -> None:
        """One job of ``command`` ended with ``records``: send them (into the open transaction,
        with a transactional id); the offset finishes once the broker has them all.

        A command of a partition given up meanwhile writes nothing: its new owner answers it
        (found by the fault run: a job still running when the drain timed out wrote its result
        after the new owner's read-back, which then answered the command a second time)."""
        if command.epoch != self._epochs[command.tp]:
            command.abandoned = True
        if not command.abandoned and records:
            try:
                if self._transactional:
                    async with self._commit_lock:
                        await self._begin()
                        command.acks.extend(await self._send_all(records))
                else:
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
        async with self._commit_lock:
            offsets = self._tracker.to_commit(partitions)
            if self._transactional:
                if offsets or self._in_transaction:
                    await self._commit_transaction(self._marked(offsets))
            elif offsets:
                try:
                    await consumer.commit(self._marked(offsets))
                except KafkaError as exc:
                    log.warning("commit_failed", error=str(exc))
                    return
            self._tracker.committed(offsets)

    async def abandon(self) -> None:
        """Partitions were lost: with a transactional id, abort the open transaction, so none
        of its results become visible (their commands belong to the new owners now)."""
        if not self._transactional:
            return
        async with self._commit_lock:
            if not self._in_transaction or self._broken:
                return
            try:
                await self._producer.abort_transaction()
            except KafkaError as exc:
                self._broken = True
                self.stop_for(KafkaUnavailable(f"cannot abort the transaction: {exc}"))
            finally:
                self._in_transaction = False

    def keep_floor(self, tp: TopicPartition, since: float, through: int) -> None:
        """A read-back found answers up to offset ``through`` among those written since
        ``since``: commits before passing it must not claim a later time."""
        self._floors[tp] = (since, through)

    def forget(self, tp: TopicPartition) -> None:
        """A revoked partition: its unfinished commands belong to the next owner."""
        self._tracker.forget(tp)
        self._open.pop(tp, None)
        self._floors.pop(tp, None)
        self._epochs[tp] += 1

    # -- internals -----------------------------------------------------------------------

    def _count_down(self, command: PendingCommand) -> None:
        command.remaining -= 1
        if command.remaining > 0:
            return
        if command.abandoned:
            self._settle(command)
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
        self._settle(command)

    def _settle(self, command: PendingCommand) -> None:
        if command.epoch == self._epochs[command.tp]:  # a given-up partition counts no more
            self._open[command.tp] -= 1
        self._settle_changed.set()

    def _marked(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """Offsets with metadata: since when anything for the commands past them was written."""
        now = time.time()
        marked = {}
        for tp, offset in offsets.items():
            since = self._tracker.oldest_unfinished_at(tp)
            since = now if since is None else since
            floor = self._floors.get(tp)
            if floor is not None:
                if offset <= floor[1]:
                    since = min(since, floor[0])
                else:
                    del self._floors[tp]
            marked[tp] = OffsetAndMetadata(offset, commit_metadata(since))
        return marked

    async def _begin(self) -> None:
        """Open a transaction for records to go into, unless one is open (lock held)."""
        if self._in_transaction:
            return
        if self._broken:
            raise KafkaUnavailable("an earlier transaction failed; nothing more can be written")
        try:
            await self._producer.begin_transaction()
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot begin a transaction: {exc}") from exc
        self._in_transaction = True

    async def _commit_transaction(self, offsets: dict[TopicPartition, Any]) -> None:
        """Commit the open transaction (records already in it) with ``offsets`` (lock held)."""
        try:
            await self._begin()
            if offsets:
                await self._producer.send_offsets_to_transaction(
                    offsets, self._settings.kafka.group_id
                )
            await self._producer.commit_transaction()
        except KafkaError as exc:
            self._broken = True
            raise KafkaUnavailable(f"transaction failed: {exc}") from exc
        finally:
            self._in_transaction = False
