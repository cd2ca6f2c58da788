"""The bridge: consume commands, carry them out, publish results, commit — and stop cleanly.

Flow of one record::

    consume ─► decode ─┬─ invalid ──────────────────────────────► rejected result + dead letter
                       └─ plan ─► jobs ─► KeyedRunner (per-instance order) ─► Executor (API)
                                                                   │
    commit ◄────────────── Outbox (acks, finished prefix) ◄───────┘  result (+ dead letter)

This module owns intake, flow control, shutdown and rebalancing; :mod:`bridge.outbox` owns what
goes out and when an offset may be committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

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
from bridge.outbox import Outbox, PendingCommand
from bridge.translate import Job, Origin, plan, records_for_invalid, records_for_job

log = structlog.get_logger(__name__)

#: Seconds between log lines with the budget's state (remaining, waiting, time blocked).
_REPORT_EVERY = 30.0


@dataclass(slots=True)
class _Work:
    job: Job
    command: PendingCommand


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
        self._paused = False
        self._consumer: AIOKafkaConsumer | None = None
        self._outbox: Outbox | None = None
        self._runner: KeyedRunner[tuple[str, str], _Work] | None = None
        self._executor: Executor | None = None
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
            self._outbox = Outbox(self.settings, await self._start_producer(stack))
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
        if self._outbox is not None and self._outbox.fatal is not None:
            raise self._outbox.fatal

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
        assert self._outbox is not None
        consumer, outbox = self._consumer, self._outbox
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
                    self._accept(tp, message)
            if time.monotonic() >= next_commit:
                await outbox.commit(consumer)
                next_commit = time.monotonic() + commit_every
            if time.monotonic() >= next_report:
                log.info("budget", pending=outbox.pending, **self.budget.snapshot())
                next_report = time.monotonic() + _REPORT_EVERY

    async def _drain(self) -> None:
        """Stop taking work, let in-flight commands finish within the grace period, commit."""
        consumer, outbox = self._consumer, self._outbox
        if consumer is None or outbox is None:
            return
        if consumer.assignment():
            consumer.pause(*consumer.assignment())
        timeout = self.settings.pipeline.drain_timeout_seconds
        if not await outbox.wait_settled(None, timeout):
            log.warning(
                "drain timed out; unfinished commands will be redelivered", pending=outbox.pending
            )
        with contextlib.suppress(BridgeError):
            await outbox.commit(consumer)
        log.info("bridge drained", pending=outbox.pending)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this replica can do its work now, and why not."""
        consumer = self._consumer
        detail: dict[str, Any] = {
            "running": self.ready.is_set(),
            "api_token_ok": self.gate.is_open,
            "partitions": len(consumer.assignment()) if consumer is not None else 0,
            "pending": self._outbox.pending if self._outbox is not None else 0,
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
        assert self._outbox is not None
        assert self._runner is not None
        self._outbox.consumed(tp, message.offset)
        try:
            command = decode_command(message.value)
        except ContractError as exc:
            held = PendingCommand(origin, tp, remaining=0, records=records_for_invalid(origin, exc))
            self._command_log.warning("command rejected", **held.records[0].log)
            self._outbox.finish(held)
            return
        jobs = plan(command, origin)
        held = PendingCommand(origin, tp, remaining=len(jobs))
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
        assert self._outbox is not None
        await self._outbox.add(command, records)
        command.remaining -= 1
        if command.remaining == 0:
            self._outbox.finish(command)

    # -- flow control --------------------------------------------------------------------

    def _backpressure(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        pending = self._outbox.pending if self._outbox is not None else 0
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

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Give up partitions: drop their queued work, finish the running work, commit."""
        runner, outbox, consumer = self._runner, self._outbox, self._consumer
        if not revoked or runner is None or outbox is None or consumer is None:
            return
        dropped = runner.drop(lambda work: work.command.tp in revoked)
        for work in dropped:
            work.command.abandoned = True
            work.command.remaining -= 1
            if work.command.remaining == 0:
                outbox.finish(work.command)
        settled = await outbox.wait_settled(revoked, self.settings.pipeline.drain_timeout_seconds)
        with contextlib.suppress(BridgeError):
            await outbox.commit(consumer, revoked)
        for tp in revoked:
            outbox.forget(tp)
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
