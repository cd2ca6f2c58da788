"""The bridge: consume commands, carry them out, publish results, commit — and stop cleanly.

Flow of one record::

    consume ─► decode ─┬─ invalid ──────────────────────────────► rejected result + dead letter
                       └─ plan ─► jobs ─► KeyedRunner (per-instance order) ─► Executor (API)
                                                                   │
    commit ◄── offsets tracker ◄── broker acks ◄── publish ◄───────┘  result (+ dead letter)

A command's offset counts as finished only when every record it produced is acknowledged by the
broker, and commits move only over a finished prefix (at-least-once). With a transactional id,
the records of a finished prefix and its offsets are written in one Kafka transaction instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from bridge import kafka_io
from bridge.budget import RequestBudget
from bridge.cloudflare.client import WorkflowsClient
from bridge.coalesce import CreateCoalescer
from bridge.config import Settings
from bridge.contract.decode import decode_command
from bridge.errors import BridgeError, ContractError, KafkaUnavailable
from bridge.executor import AuthGate, Executor
from bridge.health import HealthServer
from bridge.keyed import KeyedRunner
from bridge.offsets import OffsetTracker
from bridge.translate import Job, Origin, OutRecord, plan, records_for_invalid, records_for_job

log = structlog.get_logger(__name__)

#: Seconds between log lines with the budget's state (remaining, waiting, time blocked).
_REPORT_EVERY = 30.0


@dataclass(slots=True, eq=False)
class _Command:
    """A consumed command until its offset is finished (or abandoned on revocation)."""

    origin: Origin
    tp: TopicPartition
    remaining: int
    started: float
    records: list[OutRecord] = field(default_factory=list)
    acks: list[asyncio.Future[Any]] = field(default_factory=list)
    abandoned: bool = False


@dataclass(slots=True)
class _Work:
    job: Job
    command: _Command


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._bridge.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._bridge.on_assigned(set(assigned))


class Bridge:
    """One replica of the bridge; ``await Bridge(settings).run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        cf = settings.cloudflare
        self.budget = RequestBudget(
            requests=cf.budget_requests,
            window_seconds=cf.budget_window_seconds,
            creations_per_workflow=cf.creations_per_second_per_workflow,
            creations_per_account=cf.creations_per_second_per_account,
        )
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._open: dict[TopicPartition, int] = defaultdict(int)
        self._settle_changed = asyncio.Event()
        self._held: dict[TopicPartition, dict[int, list[OutRecord]]] = defaultdict(dict)
        self._finishers: set[asyncio.Task[None]] = set()
        self._fatal: BaseException | None = None
        self._paused = False
        self._transactional = bool(settings.kafka.transactional_id)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runner: KeyedRunner[tuple[str, str], _Work] | None = None
        self._executor: Executor | None = None
        self._output_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        # Bound once, after logging is configured: the per-command lines then cost nothing when
        # their level is filtered out (the lazy proxy would re-bind on every call).
        self._command_log = log.bind()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain, commit and close everything."""
        cf, pipeline = self.settings.cloudflare, self.settings.pipeline
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                WorkflowsClient(
                    account_id=cf.account_id,
                    api_token=cf.api_token.get_secret_value(),
                    base_url=cf.base_url,
                    timeout=httpx.Timeout(cf.request_timeout_seconds, connect=5.0),
                    limits=httpx.Limits(
                        max_connections=cf.max_connections,
                        max_keepalive_connections=cf.max_connections,
                    ),
                    on_response=self.budget.observe,
                )
            )
            coalescer = await stack.enter_async_context(
                CreateCoalescer(client, self.budget, linger_seconds=pipeline.batch_linger_ms / 1000)
            )
            probe_workflow = "workflows-bridge-auth-probe"

            async def probe() -> object:
                async with self.budget.slot():
                    return await client.list_page(probe_workflow, per_page=1)

            gate = AuthGate(probe, interval=pipeline.auth_probe_seconds)
            stack.push_async_callback(gate.aclose)
            self.gate = gate
            self._executor = Executor(client, self.budget, coalescer, gate, pipeline)
            self._producer = await self._start_producer(stack)
            self._runner = await stack.enter_async_context(
                KeyedRunner(self._handle, workers=pipeline.max_concurrency)
            )
            await self._start_consumer(stack)
            if self.settings.health_port:
                await stack.enter_async_context(
                    HealthServer(self.readiness, port=self.settings.health_port)
                )
            self.ready.set()
            log.info(
                "bridge running",
                topics=self.settings.topics.commands,
                group=self.settings.kafka.group_id,
            )
            try:
                await self._consume(stop)
            finally:
                self.ready.clear()
                await self._drain()
        if self._fatal is not None:
            raise self._fatal

    async def _start_producer(self, stack: contextlib.AsyncExitStack) -> AIOKafkaProducer:
        producer = kafka_io.make_producer(self.settings)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise KafkaUnavailable(f"cannot start the producer: {exc}") from exc
        stack.push_async_callback(producer.stop)
        return producer

    async def _start_consumer(self, stack: contextlib.AsyncExitStack) -> AIOKafkaConsumer:
        consumer = kafka_io.make_consumer(self.settings)
        consumer.subscribe(self.settings.topics.commands, listener=_Listener(self))
        self._consumer = consumer  # the group may assign partitions before start() returns
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise KafkaUnavailable(f"cannot start the consumer: {exc}") from exc
        stack.push_async_callback(consumer.stop)
        return consumer

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        commit_every = self.settings.pipeline.commit_interval_seconds
        next_commit = time.monotonic() + commit_every
        next_report = time.monotonic() + _REPORT_EVERY
        while not stop.is_set() and self._fatal is None:
            self._backpressure()
            room = self.settings.pipeline.max_pending - self._tracker.pending()
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=min(500, max(room, 1)))
            except KafkaError as exc:
                raise KafkaUnavailable(f"fetching commands failed: {exc}") from exc
            for tp, messages in batches.items():
                for message in messages:
                    self._accept(tp, message)
            if time.monotonic() >= next_commit:
                await self._commit()
                next_commit = time.monotonic() + commit_every
            if time.monotonic() >= next_report:
                log.info("budget", pending=self._tracker.pending(), **self.budget.snapshot())
                next_report = time.monotonic() + _REPORT_EVERY

    async def _drain(self) -> None:
        """Stop taking work, let in-flight commands finish within the grace period, commit."""
        consumer = self._consumer
        if consumer is not None and consumer.assignment():
            consumer.pause(*consumer.assignment())
        timeout = self.settings.pipeline.drain_timeout_seconds
        settled = await self._wait_settled(None, timeout)
        if not settled:
            log.warning(
                "drain timed out; unfinished commands will be redelivered",
                pending=self._tracker.pending(),
            )
        with contextlib.suppress(BridgeError):
            await self._commit()
        log.info("bridge drained", pending=self._tracker.pending())

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this replica can do its work now, and why not."""
        consumer = self._consumer
        detail: dict[str, Any] = {
            "running": self.ready.is_set(),
            "api_token_ok": self.gate.is_open,
            "partitions": len(consumer.assignment()) if consumer is not None else 0,
            "pending": self._tracker.pending(),
            "budget": self.budget.snapshot(),
        }
        if self.gate.last_error is not None:
            detail["api_error"] = str(self.gate.last_error)
        return self.ready.is_set() and self.gate.is_open, detail

    # -- intake ------------------------------------------------------------------------

    def _accept(self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes]) -> None:
        origin = Origin(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=tuple((k, v if v is not None else b"") for k, v in message.headers),
        )
        self._tracker.add(tp, message.offset)
        self._open[tp] += 1
        try:
            command = decode_command(message.value)
        except ContractError as exc:
            held = _Command(origin, tp, remaining=0, started=time.monotonic())
            held.records = records_for_invalid(origin, exc)
            self._command_log.warning("command rejected", **held.records[0].log)
            self._spawn_finish(held)
            return
        jobs = plan(command, origin)
        held = _Command(origin, tp, remaining=len(jobs), started=time.monotonic())
        assert self._runner is not None
        for job in jobs:
            self._runner.submit(job.key, _Work(job, held))

    async def _handle(self, work: _Work) -> None:
        assert self._executor is not None
        command = work.command
        started = time.monotonic()
        done = await self._executor.run(work.job)
        records = records_for_job(work.job, done, command.origin)
        for record in records:
            if record.log:
                self._command_log.info(
                    "command done",
                    duration_ms=round((time.monotonic() - started) * 1000, 1),
                    **record.log,
                )
        if self._transactional or command.abandoned:
            command.records.extend(records)
        else:
            command.acks.extend(await self._send_all(records))
        command.remaining -= 1
        if command.remaining == 0:
            self._spawn_finish(command)

    async def _send_all(self, records: list[OutRecord]) -> list[asyncio.Future[Any]]:
        assert self._producer is not None
        topics = self.settings.topics
        futures = []
        for record in records:
            topic = topics.dlq if record.dead_letter else topics.output
            futures.append(await kafka_io.send(self._producer, topic, record))
        return futures

    def _spawn_finish(self, command: _Command) -> None:
        """Mark a command's offset finished once its records are on the broker.

        Done with callbacks on the producer's futures rather than a task per command: at
        thousands of commands a second the task, gather and wake-ups were a tenth of the CPU.
        """
        if command.abandoned:
            self._settle(command.tp)
        elif self._transactional:
            # Written, with the offsets, by the next transaction over the finished prefix.
            self._held[command.tp][command.origin.offset] = command.records
            self._tracker.finish(command.tp, command.origin.offset)
            self._settle(command.tp)
        elif command.records:  # not sent yet (an invalid command's answer)
            task = asyncio.create_task(self._send_then_finish(command))
            self._finishers.add(task)
            task.add_done_callback(self._finishers.discard)
        else:
            self._finish_on_acks(command)

    async def _send_then_finish(self, command: _Command) -> None:
        try:
            command.acks.extend(await self._send_all(command.records))
        except BridgeError as exc:
            self._stop_for(exc)
            self._settle(command.tp)
            return
        self._finish_on_acks(command)

    def _finish_on_acks(self, command: _Command) -> None:
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

    def _acked(self, command: _Command) -> None:
        for future in command.acks:
            error = None if not future.cancelled() else "cancelled"
            if error is None and future.exception() is not None:
                error = str(future.exception())
            if error is not None:
                self._stop_for(KafkaUnavailable(f"the broker did not take a record: {error}"))
                break
        else:
            self._tracker.finish(command.tp, command.origin.offset)
        self._settle(command.tp)

    def _stop_for(self, error: BridgeError) -> None:
        log.error(
            "results could not be written; stopping so the commands are redelivered",
            error=str(error),
        )
        self._fatal = error

    def _settle(self, tp: TopicPartition) -> None:
        self._open[tp] -= 1
        self._settle_changed.set()

    async def _wait_settled(self, partitions: set[TopicPartition] | None, within: float) -> bool:
        def idle() -> bool:
            keys = self._open.keys() if partitions is None else partitions
            return all(self._open.get(tp, 0) <= 0 for tp in keys)

        deadline = time.monotonic() + within
        while not idle():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._settle_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle_changed.wait(), left)
        return True

    # -- flow control --------------------------------------------------------------------

    def _backpressure(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        pending = self._tracker.pending()
        limit = self.settings.pipeline.max_pending
        stalled = self.budget.blocked_for > 0 or not self.gate.is_open
        if not self._paused and (pending >= limit or stalled):
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.info(
                "consumption paused",
                pending=pending,
                budget=self.budget.snapshot(),
                auth_ok=self.gate.is_open,
            )
        elif self._paused and pending < max(1, int(limit * 0.8)) and not stalled:
            consumer.resume(*consumer.assignment())
            self._paused = False
            log.info("consumption resumed", pending=pending)

    # -- commits -------------------------------------------------------------------------

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets = self._tracker.to_commit(partitions)
        if not offsets:
            return
        async with self._output_lock:
            if self._transactional:
                await self._commit_transaction(offsets)
            else:
                try:
                    await self._consumer.commit(
                        {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}
                    )
                except KafkaError as exc:
                    log.warning("offset commit failed; will retry", error=str(exc))
                    return
            self._tracker.committed(offsets)

    async def _commit_transaction(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._producer is not None
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
                    self.settings.kafka.group_id,
                )
            await kafka_io.acknowledged(futures)
        except KafkaError as exc:
            raise KafkaUnavailable(f"transaction failed: {exc}") from exc

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Give up partitions: drop their queued work, finish the running work, commit."""
        if not revoked or self._runner is None:
            return
        dropped = self._runner.drop(lambda work: work.command.tp in revoked)
        for work in dropped:
            work.command.abandoned = True
            work.command.remaining -= 1
            if work.command.remaining == 0:
                self._spawn_finish(work.command)
        settled = await self._wait_settled(revoked, self.settings.pipeline.drain_timeout_seconds)
        with contextlib.suppress(BridgeError):
            await self._commit(revoked)
        for tp in revoked:
            self._tracker.forget(tp)
            self._open.pop(tp, None)
            self._held.pop(tp, None)
        log.info(
            "partitions revoked",
            partitions=sorted(str(tp) for tp in revoked),
            dropped=len(dropped),
            drained=settled,
        )

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Take this replica's share of the token's budget: its part of all partitions."""
        consumer = self._consumer
        if consumer is None:
            return
        total = 0
        for topic in self.settings.topics.commands:
            partitions = consumer.partitions_for_topic(topic)
            total += len(partitions) if partitions else 0
        share = len(consumer.assignment()) / total if total else 1.0
        self.budget.set_share(share)
        if self._paused:
            consumer.pause(*consumer.assignment())
        log.info(
            "partitions assigned",
            partitions=sorted(str(tp) for tp in assigned),
            budget_share=round(share, 4),
        )
