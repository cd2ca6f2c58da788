"""The bridge as a service: the process-level handle and the assembly of a replica's parts.

:class:`Bridge` is what ``workflows-bridge run`` starts: settings, budget, metrics, readiness,
the health server, and a wait for the broker at start-up. :func:`open_replica` builds every
running part of one replica together (API client, coalescer, status lookup, budget exchange,
auth gate, producer, read-back, outbox, the state role, the executor and the consumer) and
closes them in reverse order; :mod:`bridge.pipeline.replica` is what they do together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaProducer

from bridge.cloudflare.client import WorkflowsClient
from bridge.config import Settings
from bridge.errors import (
    KafkaRefused,
    KafkaUnavailable,
)
from bridge.ops.health import HealthServer
from bridge.ops.metrics import LIVE_GAUGES, Metrics
from bridge.ops.tracing import Tracing
from bridge.pipeline import kafka_io
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.coalesce import Coalescer
from bridge.pipeline.executor import Executor
from bridge.pipeline.lookup import StatusLookup
from bridge.pipeline.outbox import Outbox
from bridge.pipeline.readback import ReadBack
from bridge.pipeline.replica import RebalanceListener, Replica
from bridge.pipeline.share_exchange import ShareExchange
from bridge.pipeline.statuses import KNOWS_NOTHING
from bridge.states.role import StateRole

log = structlog.get_logger(__name__)

#: Longest pause between attempts to reach the broker at start-up.
_START_RETRY_MAX_SECONDS = 30.0
#: The workflow the auth probe lists (one instance): any name answers when the token works.
_PROBE_WORKFLOW = "workflows-bridge-auth-probe"


class Bridge:
    """One replica of the bridge; ``await Bridge(settings).run(stop)`` until ``stop`` is set.

    ``tracer_provider``: an OpenTelemetry provider (tests); default: the global one.
    """

    def __init__(self, settings: Settings, *, tracer_provider: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.metrics.watch(self.live_values, LIVE_GAUGES)
        self.tracing = Tracing(tracer_provider)
        cf = settings.cloudflare
        self.budget = RequestBudget(
            requests=cf.budget_requests,
            window_seconds=cf.budget_window_seconds,
            creations_per_workflow=cf.creations_per_second_per_workflow,
            creations_per_account=cf.creations_per_second_per_account,
        )
        self.ready = asyncio.Event()
        self._replica: Replica | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain, commit and close everything."""
        async with contextlib.AsyncExitStack() as stack:
            if self.settings.health_port:  # first: a taken port stops the start before anything
                await stack.enter_async_context(
                    HealthServer(
                        self.readiness,
                        port=self.settings.health_port,
                        metrics=self.metrics.exposition,
                    )
                )
            replica = await self._open_when_reachable(stack, stop)
            if replica is None:
                return  # stopped while the broker was still out of reach
            self._replica = replica
            self.ready.set()
            log.info(
                "bridge_started",
                topics=self.settings.topics.commands,
                group=self.settings.kafka.group_id,
            )
            try:
                await replica.serve(stop)
            finally:
                self.ready.clear()
                self._replica = None

    async def _open_when_reachable(
        self, stack: contextlib.AsyncExitStack, stop: asyncio.Event
    ) -> Replica | None:
        """Open the replica, waiting (with backoff) while the broker cannot be reached: a
        replica restarted during a broker outage starts once the broker is back instead of
        exiting into its orchestrator's back-off. Refused credentials or TLS stop the start."""
        delay = 1.0
        while True:
            try:
                return await stack.enter_async_context(
                    open_replica(self.settings, self.budget, self.metrics, self.tracing)
                )
            except KafkaRefused:
                raise
            except KafkaUnavailable as exc:
                log.warning("kafka_unavailable", error=str(exc), retry_in_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return None
            delay = min(delay * 2, _START_RETRY_MAX_SECONDS)

    @property
    def replica(self) -> Replica | None:
        """The running parts, while the bridge serves."""
        return self._replica

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this replica can do its work now, and why not."""
        replica = self._replica
        if replica is None:
            return False, {"running": False}
        ok, detail = replica.readiness()
        return ok and self.ready.is_set(), {"running": self.ready.is_set(), **detail}

    def live_values(self) -> dict[str, float]:
        """The gauges read at each ``/metrics`` scrape (see ``bridge.ops.metrics.LIVE_GAUGES``)."""
        ready, _ = self.readiness()
        replica = self._replica
        if replica is None:
            return {"ready": 0.0}
        budget = self.budget.snapshot()
        return {
            "ready": float(ready),
            "api_token_ok": float(replica.gate.is_open),
            "partitions_assigned": float(len(replica.consumer.assignment())),
            "commands_in_flight": float(replica.outbox.pending),
            "budget_capacity_requests": float(budget["capacity"]),
            "budget_share": float(budget["share"]),
            "budget_used_requests": float(budget["used_in_window"]),
            "budget_remaining_requests": float(budget["remaining"]),
            "budget_blocked_seconds": float(budget["blocked_for"]),
            "budget_blocked_seconds_total": float(budget["blocked_seconds_total"]),
            **({} if replica.states is None else replica.states.live_values()),
        }


@contextlib.asynccontextmanager
async def open_replica(
    settings: Settings,
    budget: RequestBudget,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
) -> AsyncIterator[Replica]:
    """Every running part of one replica, started together and closed in reverse order."""
    cf, pipeline = settings.cloudflare, settings.pipeline
    metrics = metrics if metrics is not None else Metrics()
    tracing = tracing if tracing is not None else Tracing()

    def exchanged(endpoint: str, status: int | None, seconds: float) -> None:
        metrics.api_exchange(endpoint, status, seconds)
        tracing.api_call(endpoint, status, seconds)

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
                on_response=budget.observe,
                on_exchange=exchanged,
            )
        )
        # Entered before the intake, left after it: the replica's last record (what it let
        # through still counts) is written once its work has drained.
        shares = await stack.enter_async_context(ShareExchange(settings, budget))
        linger = pipeline.batch_linger_ms / 1000
        coalescer = await stack.enter_async_context(
            Coalescer(client, budget, linger_seconds=linger)
        )
        lookup = await stack.enter_async_context(
            StatusLookup(client, budget, linger_seconds=linger)
        )

        async def probe() -> object:
            async with budget.slot():
                return await client.list_page(_PROBE_WORKFLOW, per_page=1)

        gate = AuthGate(probe, interval=pipeline.auth_probe_seconds)
        stack.push_async_callback(gate.aclose)
        producer = await _started_producer(settings, stack)
        readback = await stack.enter_async_context(ReadBack(settings))
        outbox = Outbox(settings, producer)
        states = (
            StateRole(settings, client, budget, gate, on_fatal=outbox.stop_for, metrics=metrics)
            if settings.states.enabled
            else None
        )
        executor = Executor(
            client,
            budget,
            coalescer,
            gate,
            pipeline,
            lookup=lookup,
            statuses=KNOWS_NOTHING if states is None else states,
            on_retry=metrics.api_retry,
        )
        replica = Replica(
            settings,
            budget=budget,
            gate=gate,
            shares=shares,
            executor=executor,
            outbox=outbox,
            consumer=kafka_io.make_consumer(settings),
            readback=readback,
            metrics=metrics,
            tracing=tracing,
            states=states,
        )
        await stack.enter_async_context(replica.runner)
        await _start_consumer(replica, stack)
        if states is not None:
            # Entered after the consumer, so left before it: the follower hands over before this
            # replica leaves the group and another one takes the role.
            await stack.enter_async_context(states)
        # One request now: a broken token is not ready (and parks) before the first command.
        await gate.verify()
        yield replica


async def _started_producer(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> AIOKafkaProducer:
    producer = kafka_io.make_producer(settings)
    try:
        with kafka_io.explained(settings.kafka, "cannot start the producer"):
            await producer.start()
    except BaseException:
        await producer.stop()
        raise
    stack.push_async_callback(producer.stop)
    return producer


async def _start_consumer(replica: Replica, stack: contextlib.AsyncExitStack) -> None:
    consumer = replica.consumer
    # The group may assign partitions before start() returns: the listener is in place first.
    consumer.subscribe(replica.settings.topics.commands, listener=RebalanceListener(replica))
    try:
        with kafka_io.explained(replica.settings.kafka, "cannot start the consumer"):
            await consumer.start()
    except BaseException:
        await consumer.stop()
        raise
    stack.push_async_callback(consumer.stop)
