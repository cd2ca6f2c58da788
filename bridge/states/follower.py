"""The follower: everything the one replica that follows states runs, from start to handover.

Start-up, in order — nothing is published before what was published is known:

1. **recover** the last published state of every instance by reading the state topic from the
   beginning to its end (Kafka, not memory, is the record of what was published);
2. **replay** the command results on the output topic (those written since shortly before the
   newest state) as observations: a result whose change was never published (the previous
   follower stopped in between) is published now, the others are known and dropped;
3. run the sources until stopped: the results tail (from where the replay ended), the queue (when
   ``BRIDGE_STATES__QUEUE_ID`` is set) and the poller (every ``poll_interval_seconds`` without a
   queue, every ``reconcile_interval_seconds`` with one).

Stopping (revocation, shutdown): the sources stop taking work, what was taken is finished and
acknowledged by the broker within the drain timeout, queue messages whose states are on Kafka
are acknowledged and the others handed back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.queues import QueueConsumer
from bridge.config import Settings
from bridge.contract.results import StateRecord
from bridge.errors import BridgeError, InternalError, KafkaUnavailable
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.states import kafka
from bridge.states.background import BackgroundApi
from bridge.states.poller import Poller
from bridge.states.queue_source import QueueSource
from bridge.states.results import result_observation
from bridge.states.sink import StateSink
from bridge.states.tracker import Tracker

log = structlog.get_logger(__name__)

#: Results older than this before the newest state are not replayed (their changes were long
#: published, or are the poller's to find): a bound on the replay's cost, with room for skew.
REPLAY_MARGIN = timedelta(minutes=10)
#: Instances whose records are worked on at once (each waits for its own ``get`` at most).
WORKERS = 64
#: Seconds between sweeps that forget instances which ended long enough ago.
_FORGET_EVERY = 60.0


class Follower:
    """Follows states until ``stop`` is set; :meth:`run` returns after a clean handover."""

    def __init__(
        self,
        settings: Settings,
        client: WorkflowsClient,
        budget: RequestBudget,
        gate: AuthGate,
        *,
        on_published: Callable[[str], None] | None = None,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_published = on_published
        self._client = client
        self._budget = budget
        self._gate = gate
        self.tracker = Tracker()
        self._forget_after = timedelta(seconds=settings.states.forget_final_after_seconds)
        pipeline = settings.pipeline
        self.api = BackgroundApi(
            client,
            budget,
            gate,
            backoff_initial=pipeline.backoff_initial_seconds,
            backoff_max=pipeline.backoff_max_seconds,
            on_request=on_request,
        )
        self._workflows: set[str] = set(settings.states.workflows) | set(
            settings.cloudflare.workflows
        )
        self.sink: StateSink | None = None
        self.queue: QueueSource | None = None
        self.poller: Poller | None = None
        self.fatal: BridgeError | None = None
        self._failed = asyncio.Event()
        self.recovered = 0
        self.replayed = 0

    def known(self, workflow: str, instance_id: str) -> str | None:
        return self.tracker.known(workflow, instance_id)

    def live_count(self) -> int:
        return sum(len(self.tracker.live(w)) for w in self.tracker.workflows())

    def follow(self, workflow: str) -> None:
        self._workflows.add(workflow)

    def workflows(self) -> set[str]:
        return self._workflows | set(self.tracker.workflows())

    def _fail(self, error: BridgeError) -> None:
        if self.fatal is None:
            self.fatal = error
            log.error("state_following_failed", error=str(error), error_type=type(error).__name__)
        self._failed.set()

    # -- the whole life ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Recover, follow until ``stop`` (or a failure), hand over. Raises what failed."""
        settings = self._settings
        began = time.monotonic()
        async with contextlib.AsyncExitStack() as stack:
            producer = kafka.make_producer(settings)
            stack.push_async_callback(producer.stop)
            await _started(producer.start(), "cannot start the state producer")
            newest = await self._recover(stack)
            sink = await stack.enter_async_context(
                StateSink(
                    self.tracker,
                    producer,
                    kafka.state_topic(settings),
                    self.api,
                    fetch_output=settings.states.fetch_output,
                    workers=WORKERS,
                    on_fatal=self._fail,
                    reorder_window=settings.states.reorder_window_seconds,
                    on_published=self._on_published,
                    max_pending=settings.states.max_pending,
                )
            )
            self.sink = sink
            results = await self._replay(stack, sink, newest)
            sources = asyncio.Event()
            tasks = [asyncio.create_task(self._tail(results, sink, sources), name="state-tail")]
            tasks += await self._start_sources(stack, sink, sources, newest)
            log.info(
                "state_following_started",
                recovered=self.recovered,
                replayed=self.replayed,
                live=self.live_count(),
                queue=settings.states.queue_id,
                seconds=round(time.monotonic() - began, 3),
            )
            failed = asyncio.create_task(self._failed.wait())
            stopped = asyncio.create_task(stop.wait())
            try:
                # Sources run until stopped: one that ends on its own has failed (see hand-over).
                await asyncio.wait({failed, stopped, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                failed.cancel()
                stopped.cancel()
                await self._hand_over(sources, tasks, sink)
        if self.fatal is not None:
            raise self.fatal

    async def _recover(self, stack: contextlib.AsyncExitStack) -> datetime | None:
        """Every published state, read back; returns the newest one's ``at``."""
        settings = self._settings
        reader = await self._reader(stack, kafka.state_topic(settings))
        newest: datetime | None = None
        ended_before = datetime.now(UTC) - self._forget_after

        def restore(record: ConsumerRecord[bytes, bytes]) -> None:
            nonlocal newest
            value = kafka.parse(record)
            if value is None or value.get("kind") != "state":
                return
            try:
                state = StateRecord.model_validate(value)
            except ValueError:
                return
            self.tracker.restore(state, ended_before=ended_before)
            self.recovered += 1
            newest = state.at if newest is None else max(newest, state.at)

        await reader.read_to_end(restore)
        return newest

    async def _replay(
        self, stack: contextlib.AsyncExitStack, sink: StateSink, newest: datetime | None
    ) -> kafka.TopicReader:
        """The recent command results, fed to the sink; returns the reader, at their end.

        Only records written since the horizon are read (found by the broker's time index), so
        a takeover's cost follows the recent traffic, not the output topic's whole history.
        """
        horizon = (newest or datetime.now(UTC)) - REPLAY_MARGIN
        reader = await self._reader(stack, self._settings.topics.output, since=horizon)

        def replay(record: ConsumerRecord[bytes, bytes]) -> None:
            value = kafka.parse(record)
            obs = None if value is None else result_observation(value)
            if obs is None:
                return
            self.follow(obs.workflow)
            if obs.at >= horizon:
                self.replayed += 1
                sink.submit(obs)

        await reader.read_to_end(replay)
        return reader

    async def _reader(
        self, stack: contextlib.AsyncExitStack, topic: str, *, since: datetime | None = None
    ) -> kafka.TopicReader:
        partitions = await kafka.partitions_of(self._settings, topic)
        consumer = kafka.make_reader(self._settings)
        stack.push_async_callback(consumer.stop)
        await _started(consumer.start(), f"cannot read {topic}")
        reader = kafka.TopicReader(consumer, topic, partitions)
        await reader.start(since)
        return reader

    async def _tail(self, reader: kafka.TopicReader, sink: StateSink, stop: asyncio.Event) -> None:
        def feed(record: ConsumerRecord[bytes, bytes]) -> None:
            value = kafka.parse(record)
            obs = None if value is None else result_observation(value)
            if obs is not None:
                self.follow(obs.workflow)
                sink.submit(obs)

        next_forget = time.monotonic() + _FORGET_EVERY
        while not stop.is_set():
            await sink.room(stop)
            try:
                await reader.read_more(feed)
            except KafkaUnavailable as exc:
                self._fail(exc)
                return
            if time.monotonic() >= next_forget:
                next_forget = time.monotonic() + _FORGET_EVERY
                forgotten = self.tracker.forget_finals(datetime.now(UTC) - self._forget_after)
                if forgotten:
                    log.info("states_forgotten", instances=forgotten, remembered=len(self.tracker))

    async def _start_sources(
        self,
        stack: contextlib.AsyncExitStack,
        sink: StateSink,
        stop: asyncio.Event,
        newest: datetime | None,
    ) -> list[asyncio.Task[None]]:
        states = self._settings.states
        tasks: list[asyncio.Task[None]] = []
        if states.queue_id is not None:
            # Queue calls are outside the request budget: their own client, no budget hook.
            cf = self._settings.cloudflare
            queue_client = await stack.enter_async_context(
                WorkflowsClient(
                    account_id=cf.account_id,
                    api_token=cf.api_token.get_secret_value(),
                    base_url=cf.base_url,
                    timeout=httpx.Timeout(cf.request_timeout_seconds, connect=5.0),
                )
            )
            self.queue = QueueSource(
                QueueConsumer(queue_client, states.queue_id),
                sink,
                on_workflow=self.follow,
            )
            tasks.append(asyncio.create_task(self.queue.run(stop), name="state-queue"))
        interval = (
            states.poll_interval_seconds
            if states.queue_id is None
            else states.reconcile_interval_seconds
        )
        # With a queue the first reconciliation comes at once only to catch up on instances
        # that were live when the previous follower stopped; the queue holds the rest.
        catch_up = states.queue_id is None or self.live_count() > 0
        self.poller = Poller(
            self.api,
            sink,
            workflows=self.workflows,
            interval=interval,
            since=newest or datetime.now(UTC),
            first_in=0.0 if catch_up else interval,
        )
        tasks.append(asyncio.create_task(self.poller.run(stop), name="state-poller"))
        return tasks

    async def _hand_over(
        self, sources: asyncio.Event, tasks: list[asyncio.Task[None]], sink: StateSink
    ) -> None:
        sources.set()
        # A source may be waiting for the budget or the auth gate: it is not needed any more.
        done, running = await asyncio.wait(tasks, timeout=1.0)
        for task in running:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                self._fail(
                    error
                    if isinstance(error, BridgeError)
                    else InternalError(f"a state source failed: {type(error).__name__}: {error}")
                )
        drained = await sink.wait_idle(self._settings.pipeline.drain_timeout_seconds)
        if self.queue is not None:
            await self.queue.finish(drained)
        log.info(
            "state_following_stopped",
            drained=drained,
            published=dict(sink.published),
            instances=len(self.tracker),
        )

    def snapshot(self) -> dict[str, Any]:
        sink = self.sink
        return {
            "instances": len(self.tracker),
            "workflows": len(self.workflows()),
            "published": {} if sink is None else dict(sink.published),
            "pending": 0 if sink is None else sink.pending,
            "requests": dict(self.api.requests),
            "queue_backlog": None if self.queue is None else self.queue.stats.backlog,
        }


async def _started(start: Any, what: str) -> None:
    try:
        await start
    except KafkaError as exc:
        raise KafkaUnavailable(f"{what}: {exc}") from exc
