"""Event Subscriptions → Queue → HTTP pull: events in; acks only once their states are on Kafka.

* Pull batches of up to 100 under a lease of :data:`VISIBILITY_MS`; an empty queue answers at
  once, so empty pulls back off from 0.2 s to 2 s.
* Delivery is at least once and unordered. Every event goes to the sink's hold (the reorder
  window), which releases it in event-time order; the tracker drops what is older than what it
  applied, or already known.
* A message is acknowledged once the sink settled it: nothing to publish, or its record is on
  Kafka. Acks go out in batches. A message that is not an instance event is acknowledged too
  (retrying cannot mend it) and logged.
* On stop, leases not acknowledged are handed back at once (a retry with no delay), so the next
  follower gets the messages without waiting for the leases to expire.

Pulls and acks are outside the API's request budget; their failures are retried with backoff and
never touch the budget or the auth gate (a token without Queues permission is logged, not
treated as a broken token for commands).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.cloudflare.queues import MAX_PULL_BATCH, QueueConsumer
from bridge.errors import ApiError, AuthError
from bridge.states.events import BadEvent, decode_body, observation
from bridge.states.sink import StateSink

log = structlog.get_logger(__name__)

#: Lease of a pulled message: long enough for a budgeted ``get`` to wait its turn.
VISIBILITY_MS = 120_000
_IDLE_MIN, _IDLE_MAX = 0.2, 2.0
#: Back-off after the queue API failed, and after it refused the token.
_ERROR_BACKOFF, _REFUSED_BACKOFF = 2.0, 30.0
#: Largest ack call.
_ACK_BATCH = 1000


@dataclass(slots=True)
class QueueStats:
    pulled: int = 0
    redelivered: int = 0
    invalid: int = 0
    acked: int = 0
    released: int = 0
    backlog: int | None = None
    errors: int = 0


@dataclass(slots=True, eq=False)
class _Ticket:
    source: QueueSource
    lease: str

    def settle(self, future: asyncio.Future[Any] | None) -> None:
        if future is None:
            self.source._ready(self.lease)
            return

        def done(result: asyncio.Future[Any]) -> None:
            if not result.cancelled() and result.exception() is None:
                self.source._ready(self.lease)

        future.add_done_callback(done)


class QueueSource:
    """Pulls one queue until stopped."""

    def __init__(
        self,
        consumer: QueueConsumer,
        sink: StateSink,
        *,
        on_workflow: Callable[[str], None],
    ) -> None:
        self._consumer = consumer
        self._sink = sink
        self._on_workflow = on_workflow
        #: Leases pulled and not yet acknowledged (held, in the sink, or ready to ack).
        self._open: set[str] = set()
        self._to_ack: list[str] = []
        self._woken = asyncio.Event()
        self.stats = QueueStats()

    # -- running -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        idle = _IDLE_MIN
        while not stop.is_set():
            # While the sink is full no more is pulled; what it publishes meanwhile is acked.
            if not await self._sink.room(stop, within=_IDLE_MAX):
                await self._flush()
                continue
            if stop.is_set():
                break
            pulled = await self._pull()
            await self._flush()
            if pulled:
                idle = _IDLE_MIN
                continue
            wait = idle if pulled is not None else _ERROR_BACKOFF
            if pulled == 0:
                idle = min(idle * 2, _IDLE_MAX)
            await self._sleep(stop, wait)

    async def _pull(self) -> int | None:
        """Messages pulled (None: the queue API failed)."""
        try:
            result = await self._consumer.pull(
                batch_size=MAX_PULL_BATCH, visibility_timeout_ms=VISIBILITY_MS
            )
        except AuthError as exc:
            self.stats.errors += 1
            log.error("state_queue_refused", error=str(exc), retry_in=_REFUSED_BACKOFF)
            await asyncio.sleep(_REFUSED_BACKOFF)
            return None
        except ApiError as exc:
            self.stats.errors += 1
            log.warning("state_queue_error", error=str(exc), retry_in=_ERROR_BACKOFF)
            return None
        self.stats.backlog = result.message_backlog_count
        at = datetime.now(UTC)
        for message in result.messages:
            self.stats.pulled += 1
            if (message.attempts or 1) > 1:
                self.stats.redelivered += 1
            self._open.add(message.lease_id)
            try:
                obs = observation(decode_body(message.body), at=at)
            except BadEvent as exc:
                self.stats.invalid += 1
                log.warning("state_event_invalid", message_id=message.id, error=str(exc))
                self._ready(message.lease_id)
                continue
            self._on_workflow(obs.workflow)
            self._sink.hold(obs, _Ticket(self, message.lease_id))
        return len(result.messages)

    def _ready(self, lease: str) -> None:
        self._to_ack.append(lease)
        self._woken.set()

    async def _flush(self) -> None:
        while self._to_ack:
            batch = self._to_ack[:_ACK_BATCH]
            try:
                answer = await self._consumer.ack(batch)
            except ApiError as exc:
                self.stats.errors += 1
                log.warning("state_queue_error", error=str(exc), retry_in=_ERROR_BACKOFF)
                return  # kept: acknowledged with the next flush
            del self._to_ack[: len(batch)]
            self._open.difference_update(batch)
            self.stats.acked += len(batch)
            if answer.warnings:
                log.info("state_ack_warnings", warnings=len(answer.warnings))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self._woken.clear()
        stopping = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait({stopping, woken}, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            stopping.cancel()
            woken.cancel()

    # -- stopping ----------------------------------------------------------------------

    async def finish(self, drained: bool) -> None:
        """After the sink drained (or gave up): acknowledge what is done, hand back the rest."""
        await self._flush()
        rest = sorted(self._open - set(self._to_ack))
        if not rest:
            return
        with contextlib.suppress(ApiError):
            for start in range(0, len(rest), _ACK_BATCH):
                chunk = rest[start : start + _ACK_BATCH]
                await self._consumer.ack([], [(lease, 0) for lease in chunk])
                self.stats.released += len(chunk)
        log.info("state_leases_released", released=len(rest), drained=drained)
        self._open.clear()
