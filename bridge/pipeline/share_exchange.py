"""The budget topic: where a group's replicas tell each other their demand and use.

One :class:`ShareExchange` per replica reads partition 0 of the budget topic
(``BRIDGE_TOPICS__BUDGET``, compacted, created with one partition when missing) from its
beginning, writes its own share record about once a second — at once when it wants more — and
sets the request budget's capacity to what :class:`~bridge.pipeline.shares.ShareLedger` allows.
Every rule (why the group never exceeds its budget, the fallback) is in
:mod:`bridge.pipeline.shares`; this module only moves records.

Without a topic name, or when the topic cannot be used at all (it is missing and may not be
created, or reading it is not allowed), the replica runs on the static share: its partitions'
part of the budget, as the other replicas of the group will then do too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidConfigurationError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    KafkaError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

from bridge.config import Settings
from bridge.errors import KafkaRefused
from bridge.pipeline import kafka_io
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.shares import ShareLedger, ShareRecord

log = structlog.get_logger(__name__)

#: Seconds between a replica's records when nothing changes.
HEARTBEAT = 1.0
#: A replica whose records do not come back within this many seconds is cut off (and one not
#: heard from for as long is silent to the others).
LEASE = 5.0
#: How often the exchange looks at the budget's demand and the log.
_TICK = 0.1
#: Errors that say the topic cannot be used with these settings, whatever is retried.
_UNUSABLE = (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidConfigurationError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidTopicError,
    PolicyViolationError,
    TopicAuthorizationFailedError,
)
#: The budget topic keeps each replica's latest record; old segments roll after an hour.
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "3600000"}


class ShareExchange:
    """Keeps this replica's request budget at its demand-aware share of the group's budget."""

    def __init__(
        self,
        settings: Settings,
        budget: RequestBudget,
        *,
        heartbeat: float = HEARTBEAT,
        lease: float = LEASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cf = settings.cloudflare
        self._settings = settings
        self._budget = budget
        self._topic = settings.topics.budget
        self._heartbeat = heartbeat
        self.member = f"{settings.kafka.client_id}-{uuid.uuid4().hex[:12]}"
        self.ledger = ShareLedger(
            group=settings.kafka.group_id,
            member=self.member,
            budget=cf.budget_requests,
            window=cf.budget_window_seconds,
            lease=lease,
            clock=clock,
        )
        self._clock = clock
        #: ``dynamic`` (shares follow demand), ``static`` (partition shares), or ``starting``.
        self.mode = "starting" if self._topic else "static"
        self._partitions = (0, 0)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._last_write = -1e9
        self._applied: int | None = None

    async def __aenter__(self) -> Self:
        if self.mode == "static":
            self._static("no budget topic is set")
        else:
            self._apply()  # nothing until the group has agreed on something
            self._task = asyncio.create_task(self._run(), name="budget-shares")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in self._writes:
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._leave()
        await self._close()

    def set_partitions(self, mine: int, total: int) -> None:
        """The command partitions this replica holds now, of ``total``."""
        self._partitions = (mine, total)
        self.ledger.set_partitions(mine, total)
        share = mine / total if total else 1.0
        if self.mode == "static":
            self._budget.set_share(share)
        else:
            self._budget.set_creation_share(share)  # creation limits are split by partitions

    # -- running -------------------------------------------------------------------------------

    async def _run(self) -> None:
        while self._consumer is None:
            try:
                await self._open()
            except _UNUSABLE as exc:
                await self._close()
                self._static(f"the budget topic {self._topic!r} cannot be used: {exc}")
                return
            except (KafkaError, KafkaRefused, OSError) as exc:
                await self._close()
                log.warning("budget_shares", state="unreachable", error=str(exc))
                self._follow()
                await asyncio.sleep(self.ledger.lease)
        self.mode = "dynamic"
        log.info("budget_shares", state="joined", topic=self._topic, member=self.member)
        consumer = self._consumer
        partition = TopicPartition(self._topic, 0)
        while True:
            try:
                batches = await consumer.getmany(partition, timeout_ms=int(_TICK * 1000))
            except KafkaError as exc:
                log.warning("budget_shares", state="read_failed", error=str(exc))
                batches = {}
                await asyncio.sleep(_TICK)
            for records in batches.values():
                for message in records:
                    self._observe(message.key, message.value)
            self._follow()

    async def _open(self) -> None:
        kafka = self._settings.kafka
        options = kafka_io.client_options(kafka)
        await self._ensure_topic(options)
        self._producer = AIOKafkaProducer(
            acks="all", linger_ms=0, request_timeout_ms=int(self.ledger.lease * 1000), **options
        )
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=int(_TICK * 1000),
            **options,
        )
        await consumer.start()
        partition = TopicPartition(self._topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        self._consumer = consumer

    async def _ensure_topic(self, options: dict[str, Any]) -> None:
        """Create the topic (one partition, compacted) unless it exists. Asking for a missing
        topic's metadata could make the broker create it with its defaults, so creating comes
        first; a replica that may not create topics can still use one that exists."""
        admin = AIOKafkaAdminClient(
            request_timeout_ms=int(self.ledger.lease * 1000),
            **{k: v for k, v in options.items() if k != "client_id"},
            client_id=f"{self._settings.kafka.client_id}-budget",
        )
        await admin.start()
        try:
            brokers = (await admin.describe_cluster()).get("brokers") or [None]
            answer = await admin.create_topics(
                [
                    NewTopic(
                        self._topic,
                        num_partitions=1,
                        replication_factor=min(3, len(brokers)),
                        topic_configs=TOPIC_CONFIG,
                    )
                ]
            )
            code, message = answer.topic_errors[0][1], answer.topic_errors[0][-1]
            if code == 0:
                log.info("budget_shares", state="topic_created", topic=self._topic)
            elif code != TopicAlreadyExistsError.errno:
                error = for_code(code)(f"creating {self._topic!r}: {message}")
                if not isinstance(error, _UNUSABLE) or self._topic not in await admin.list_topics():
                    raise error
        finally:
            await admin.close()

    async def _close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await client.stop()
        self._consumer = self._producer = None

    def _static(self, reason: str) -> None:
        self.mode = "static"
        mine, total = self._partitions
        self._budget.set_share(mine / total if total else 1.0)
        self._applied = None
        log.info("budget_shares", state="static", reason=reason)

    # -- the ledger ----------------------------------------------------------------------------

    def _observe(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        record: ShareRecord | None = None
        if value is not None:
            try:
                record = ShareRecord.decode(value)
            except ValueError:
                return  # not ours (another version, or a stray record): ignore it
        if self.ledger.observe(key.decode(errors="replace"), record):
            self._apply()

    def _follow(self) -> None:
        """Look at demand: lower at once, ask for more when wanted, announce the state."""
        ledger, budget = self.ledger, self._budget
        used = budget.requests.used()
        demand = used + budget.stats.waiting + budget.stats.background_waiting
        target = ledger.target(demand)
        ledger.lower_to(target)
        ledger.follow_fallback()
        for note in ledger.notes():
            if note.startswith("forget "):
                self._write(note.removeprefix("forget "), None)
            else:
                log.warning("budget_shares", state=note, cap=ledger.cap, member=self.member)
        self._apply()
        now = self._clock()
        wants_more = target > ledger.cap
        due = self._heartbeat / 4 if wants_more else self._heartbeat
        if self._producer is not None and ledger.may_write() and now - self._last_write >= due:
            record = ledger.next_record(
                used=used, demand=demand, want=target if wants_more else ledger.cap
            )
            ledger.sent(record)
            self._last_write = now
            self._write(ledger.key, record)

    def _apply(self) -> None:
        cap = self.ledger.cap
        if cap != self._applied:
            self._budget.set_capacity(cap)
            self._applied = cap

    def _write(self, key: str, record: ShareRecord | None) -> None:
        producer = self._producer
        if producer is None:
            return
        task = asyncio.create_task(self._send(producer, key, record), name="budget-share-write")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _send(self, producer: AIOKafkaProducer, key: str, record: ShareRecord | None) -> None:
        value = None if record is None else record.encode()
        try:
            await producer.send_and_wait(self._topic, value, key=key.encode(), partition=0)
        except KafkaError as exc:
            # Not written (or not known to be): the record never comes back, and after a lease
            # the replica counts as cut off (see ShareLedger.cut_off).
            log.warning("budget_shares", state="write_failed", error=str(exc))

    async def _leave(self) -> None:
        """Tell the group this replica is gone; what it let through counts for one more window."""
        if self._producer is None or self.mode != "dynamic":
            return
        record = self.ledger.leaving_record(used=self._budget.requests.used())
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    self._topic, record.encode(), key=self.ledger.key.encode(), partition=0
                ),
                self.ledger.lease,
            )
        log.info("budget_shares", state="left", member=self.member, claim=record.claim)
