"""One replica at work: consume commands, carry them out, publish results, commit, rebalance.

Flow of one record (each step is a module of :mod:`bridge.pipeline`)::

    intake ─► decode ─┬─ invalid ──────────────────────────────► rejected result + dead letter
    (here)  (contract) └─ plan ─► keyed run ─► execute (API) ─► result (+ dead letter)
                       (translate)  (keyed)     (executor)               │
    commit ◄─────────────────── outbox (acks, finished prefix) ◄────────┘
    (offsets)

:class:`Replica` holds the running parts, built together by
:func:`bridge.pipeline.service.open_replica`, and owns intake, flow control, shutdown and
rebalancing (with the read-back of answers on assignment). The outbox owns each command from
intake until it is settled.

An unexpected exception while decoding, planning, executing or answering a command is a bug:
the command is answered ``failed`` with a dead letter naming the stage and the exception class,
so one poison record cannot stall its partition. An exception that escapes even that (the outbox
itself) stops the replica, and the command is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from bridge.config import Settings
from bridge.contract.decode import decode_command
from bridge.errors import (
    BridgeError,
    ContractError,
    InternalError,
    KafkaUnavailable,
)
from bridge.ops.metrics import Metrics
from bridge.ops.tracing import Tracing
from bridge.pipeline import kafka_io
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.executor import Executor
from bridge.pipeline.keyed import KeyedRunner
from bridge.pipeline.outbox import Outbox, PendingCommand
from bridge.pipeline.readback import Ledger, ReadBack
from bridge.pipeline.share_exchange import ShareExchange
from bridge.pipeline.translate import (
    Job,
    Origin,
    OutRecord,
    plan,
    records_for_crash,
    records_for_invalid,
    records_for_job,
)
from bridge.states.role import StateRole

log = structlog.get_logger(__name__)


#: Seconds between log lines with the budget's state (remaining, waiting, time blocked).
_REPORT_EVERY = 30.0


@dataclass(slots=True)
class _Work:
    job: Job
    command: PendingCommand


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands aiokafka's rebalance callbacks to the replica."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._replica.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._replica.on_assigned(set(assigned))


class Replica:
    """The running parts of one replica, which exist together from construction on."""

    def __init__(
        self,
        settings: Settings,
        *,
        budget: RequestBudget,
        gate: AuthGate,
        executor: Executor,
        outbox: Outbox,
        consumer: AIOKafkaConsumer,
        readback: ReadBack,
        shares: ShareExchange | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        states: StateRole | None = None,
    ) -> None:
        """``shares`` agrees this replica's part of the group's budget with the other replicas;
        without it the replica takes its partitions' share."""
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.tracing = tracing if tracing is not None else Tracing()
        #: The instance-state stream's role (None when it is turned off).
        self.states = states
        self.budget = budget
        self.gate = gate
        self.shares = shares
        self.executor = executor
        self.outbox = outbox
        self.consumer = consumer
        self.readback = readback
        #: Answers an earlier owner already wrote for commands not yet committed.
        self.ledger = Ledger()
        self.runner: KeyedRunner[tuple[str, str], _Work] = KeyedRunner(
            self._handle, workers=settings.pipeline.max_concurrency, on_crash=self._crashed
        )
        self._paused = False
        #: Partitions whose answers are being read back: nothing of them may be consumed yet.
        self._reading_back: set[TopicPartition] = set()
        #: Read-backs running, with the partitions each reads.
        self._readbacks: dict[asyncio.Task[None], set[TopicPartition]] = {}
        self._allowed_workflows = frozenset(settings.cloudflare.workflows)
        # Bound once, after logging is configured: the per-command lines then cost nothing when
        # their level is filtered out (the lazy proxy would re-bind on every call).
        self._command_log = log.bind()

    # -- serving -----------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (or the outbox fails), then drain and commit."""
        try:
            await self._consume(stop)
        finally:
            await self._drain()
        if self.outbox.fatal is not None:
            raise self.outbox.fatal

    async def _consume(self, stop: asyncio.Event) -> None:
        consumer, outbox = self.consumer, self.outbox
        commit_every = self.settings.pipeline.commit_interval_seconds
        next_commit = time.monotonic() + commit_every
        next_report = time.monotonic() + _REPORT_EVERY
        while not stop.is_set() and outbox.fatal is None:
            self._backpressure()
            room = self.settings.pipeline.max_pending - outbox.pending
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=min(500, max(room, 1)))
            except KafkaError as exc:
                raise KafkaUnavailable(f"fetching commands failed: {exc}") from exc
            for tp, messages in batches.items():
                for message in messages:
                    await self._accept(tp, message)
            if time.monotonic() >= next_commit:
                await outbox.commit(consumer)
                await self._observe_lag()
                next_commit = time.monotonic() + commit_every
            if time.monotonic() >= next_report:
                log.info("budget", pending=outbox.pending, **self.budget.snapshot())
                next_report = time.monotonic() + _REPORT_EVERY

    async def _drain(self) -> None:
        """Stop taking work, let in-flight commands finish within the grace period, commit."""
        consumer, outbox = self.consumer, self.outbox
        if consumer.assignment():
            consumer.pause(*consumer.assignment())
        await self._stop_reading_back()
        timeout = self.settings.pipeline.drain_timeout_seconds
        if not await outbox.wait_settled(None, timeout):
            log.warning("drain_timeout", pending=outbox.pending)
        with contextlib.suppress(BridgeError):
            await outbox.commit(consumer)
        log.info("bridge_drained", pending=outbox.pending)

    async def _observe_lag(self) -> None:
        """Per assigned partition: records on the broker not yet fetched by this replica."""
        consumer = self.consumer
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await consumer.position(tp)
            except (KafkaError, AssertionError):  # not fetchable now (e.g. being revoked)
                continue
            lags[(tp.topic, tp.partition)] = max(0, highwater - position)
        self.metrics.set_lag(lags)

    @property
    def _sharing(self) -> str:
        return "static" if self.shares is None else self.shares.mode

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        partitions = len(self.consumer.assignment())
        detail: dict[str, Any] = {
            "api_token_ok": self.gate.is_open,
            "api_token_verified": self.gate.verified,
            "partitions": partitions,
            "pending": self.outbox.pending,
            "budget": self.budget.snapshot(),
            "budget_sharing": self._sharing,
        }
        if self.gate.last_error is not None:
            detail["api_error"] = str(self.gate.last_error)
        if self.states is not None:
            detail["states"] = self.states.snapshot()
        return self.gate.is_open and self.gate.verified and partitions > 0, detail

    # -- intake ------------------------------------------------------------------------

    async def _accept(self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes]) -> None:
        origin = Origin(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=tuple((k, v if v is not None else b"") for k, v in message.headers),
            timestamp_ms=message.timestamp,
        )
        answers = self.ledger.take(tp, message.offset) if self.ledger.answers else None
        stage = "decode"
        try:
            command = decode_command(message.value)
            stage = "plan"
            jobs = plan(command, origin, self._allowed_workflows)
        except ContractError as exc:
            if answers is not None and answers.complete_for_invalid():
                await self._answered_before(tp, origin)
                return
            await self._answer_now(tp, origin, records_for_invalid(origin, exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug: answer it, do not stall the partition
            await self._answer_now(tp, origin, records_for_crash(origin, stage, exc))
            return
        if answers is not None:
            jobs = answers.unanswered(jobs)
            if not jobs:
                await self._answered_before(tp, origin)
                return
        held = self.outbox.accept(tp, origin, jobs=len(jobs))
        for job in jobs:
            self.runner.submit(job.key, _Work(job, held))

    async def _answer_now(
        self, tp: TopicPartition, origin: Origin, records: list[OutRecord]
    ) -> None:
        command = self.outbox.accept(tp, origin, jobs=1)
        self._command_log.warning("command_rejected", **records[0].log)
        with self.tracing.command(origin, None):
            records = self.tracing.stamp(records)
        await self._finish(command, records)

    async def _answered_before(self, tp: TopicPartition, origin: Origin) -> None:
        """An earlier owner answered this command: move past it without carrying it out."""
        command = self.outbox.accept(tp, origin, jobs=1)
        self._command_log.info(
            "command_answered_before",
            topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
        )
        await self.outbox.job_done(command, [])

    async def _handle(self, work: _Work) -> None:
        job, command = work.job, work.command
        started = time.monotonic()
        stage = "execute"
        with self.tracing.command(command.origin, job):
            try:
                done = await self.executor.run(job)
                stage = "answer"
                records = records_for_job(job, done, command.origin)
            except Exception as exc:  # a bug: answer the command, do not stall its partition
                log.exception("command_crashed", stage=stage, instance_id=job.instance_id)
                records = records_for_crash(command.origin, stage, exc, job)
            records = self.tracing.stamp(records)
        for record in records:
            if record.log:
                self._command_log.info(
                    "command_done",
                    duration_ms=round((time.monotonic() - started) * 1000, 1),
                    **record.log,
                )
        await self._finish(command, records)

    async def _finish(self, command: PendingCommand, records: list[OutRecord]) -> None:
        """Count the command's answer, then hand its records to the outbox."""
        self.metrics.answered(
            ((r.log.get("action"), r.log.get("outcome", "unknown")) for r in records if r.log),
            (dict(r.headers) for r in records if r.dead_letter),
            command.origin.timestamp_ms,
        )
        await self.outbox.job_done(command, records)

    def _crashed(self, work: _Work, error: Exception) -> None:
        """Even answering failed: stop, so the command is redelivered to a fresh replica."""
        self.outbox.stop_for(
            InternalError(f"could not answer a command: {type(error).__name__}: {error}")
        )

    # -- flow control --------------------------------------------------------------------

    def _backpressure(self) -> None:
        consumer = self.consumer
        pending = self.outbox.pending
        limit = self.settings.pipeline.max_pending
        stalled = self.budget.blocked_for > 0 or not self.gate.is_open
        if not self._paused and (pending >= limit or stalled):
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.info(
                "consumption_paused",
                pending=pending,
                budget=self.budget.snapshot(),
                auth_ok=self.gate.is_open,
            )
        elif self._paused and pending < max(1, int(limit * 0.8)) and not stalled:
            # Partitions still being read back stay paused: on_assigned resumes them.
            consumer.resume(*(consumer.assignment() - self._reading_back))
            self._paused = False
            log.info("consumption_resumed", pending=pending)

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Give up partitions: drop their queued work, finish the running work, commit."""
        if not revoked:
            return
        outbox = self.outbox
        await self._stop_reading_back(revoked)
        dropped = self.runner.drop(lambda work: work.command.tp in revoked)
        for work in dropped:
            outbox.job_dropped(work.command)
        if kafka_io.membership_lost(self.consumer):
            # Found by the fault run: a member expelled while the broker was away drained and
            # committed partitions already given to others, answering commands a second time.
            # Nothing more is written or committed for them; the new owners answer the rest.
            await outbox.abandon()
            for tp in revoked:
                outbox.forget(tp)
                self.ledger.forget(tp)
            if self.states is not None:
                await self.states.on_revoked(revoked)
            log.warning(
                "partitions_lost",
                partitions=sorted(str(tp) for tp in revoked),
                dropped=len(dropped),
            )
            return
        settled = await outbox.wait_settled(revoked, self.settings.pipeline.drain_timeout_seconds)
        with contextlib.suppress(BridgeError):
            await outbox.commit(self.consumer, revoked)
        for tp in revoked:
            outbox.forget(tp)
            self.ledger.forget(tp)
        if self.states is not None:
            await self.states.on_revoked(revoked)
        log.info(
            "partitions_revoked",
            partitions=sorted(str(tp) for tp in revoked),
            dropped=len(dropped),
            drained=settled,
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start reading back what is already answered, and tell the budget the partitions.

        The new partitions stay paused until their read-back is done. It runs beside the group
        protocol, not in this callback: a read-back that waits for open transactions would hold
        the consumer's coordinator, its membership would expire meanwhile, and it would then
        work on partitions already given to another member (found by the fault run).
        """
        if assigned:
            self.consumer.pause(*assigned)
            self._start_reading_back(assigned)
        self._share(assigned)

    def _start_reading_back(self, partitions: set[TopicPartition]) -> None:
        self._reading_back |= partitions
        task = asyncio.create_task(self._read_back(partitions), name="readback")
        self._readbacks[task] = partitions
        task.add_done_callback(lambda done: self._readbacks.pop(done, None))

    async def _read_back(self, assigned: set[TopicPartition]) -> None:
        """Read back, then let the partitions still ours be consumed. It never raises: a failed
        read-back is logged and the commands are carried out as if it had found nothing."""
        consumer = self.consumer
        try:
            scan = await self.readback.scan(assigned)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("readback_failed", error=str(exc), error_type=type(exc).__name__)
            scan = None
        mine = assigned & self._reading_back & consumer.assignment()
        if scan is not None:
            for tp in mine:
                answers = scan.ledger.answers.get(tp)
                if answers:
                    self.ledger.answers[tp] = answers
                floor = scan.floors.get(tp)
                if floor is not None:
                    self.outbox.keep_floor(tp, *floor)
        self._reading_back -= assigned
        if mine and not self._paused:
            consumer.resume(*mine)

    async def _stop_reading_back(self, partitions: set[TopicPartition] | None = None) -> None:
        """Cancel the read-backs of ``partitions`` (None: all); they stay paused. Partitions a
        cancelled read-back also read and that are kept get a read-back of their own."""
        cancelled = {
            task: reading
            for task, reading in self._readbacks.items()
            if partitions is None or reading & partitions
        }
        for task in cancelled:
            task.cancel()
        if cancelled:
            await asyncio.gather(*cancelled, return_exceptions=True)
        for reading in cancelled.values():
            self._reading_back -= reading
            kept = set() if partitions is None else reading - partitions
            if kept:
                self._start_reading_back(kept)

    def _hold_share(self, held: set[TopicPartition]) -> float:
        """Tell the budget (or the share exchange) the part of all partitions ``held`` is;
        returns that part."""
        total = 0
        for topic in self.settings.topics.commands:
            partitions = self.consumer.partitions_for_topic(topic)
            total += len(partitions) if partitions else 0
        share = len(held) / total if total else 1.0
        if self.shares is None:
            self.budget.set_share(share)
        else:
            self.shares.set_partitions(len(held), total)
        return share

    def _share(self, assigned: set[TopicPartition]) -> None:
        """Tell the budget shares which part of all partitions this replica holds now."""
        consumer = self.consumer
        share = self._hold_share(consumer.assignment())
        if self._paused:
            consumer.pause(*consumer.assignment())
        if self.states is not None:
            self.states.on_assigned(set(consumer.assignment()))
        log.info(
            "partitions_assigned",
            partitions=sorted(str(tp) for tp in assigned),
            partition_share=round(share, 4),
            budget_sharing=self._sharing,
        )
