"""Observations in, state records out: per instance in arrival order, details fetched, published.

Every source submits its observations here. Queue events and polls are first *held* for the
reorder window and released in event-time order, so that they merge in the order things
happened (and a command's answer, which is not held, usually comes first). Those of one
instance are handled one at a time in the order submitted (instances run concurrently); each is
asked of the tracker whether it is a change, given what only a ``get`` can tell, and published.
A source that must know when its observation is safely on Kafka (the queue, which may
acknowledge a message only then) passes a :class:`Ticket`: it is settled with the producer's
future (of its last record), or with None when nothing was published.

What a ``get`` is spent on (from the background lane of the budget, see :mod:`.background`):

* an ``instance.errored`` event is confirmed: the event may announce a step's error that will be
  retried, so it counts only if the instance really ended (any final status it reports counts,
  a live one drops the event);
* with ``fetch_output``, the output of ``complete`` and the error of ``errored``;
* nothing for an observation that is no change (a duplicate never costs a request).

**Bounded.** The sink holds at most about ``max_pending`` observations: sources wait in
:meth:`StateSink.room` before they fetch more (the results tail, the queue, the poller), so when
the budget's lane cannot keep up — instances ending faster than their outputs can be fetched —
the backlog waits where it is durable (the output topic, the queue, the API's own lists) instead
of in memory, and the stream falls behind rather than growing without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge.cloudflare.models import InstanceGetResponse
from bridge.contract.results import InstanceError, StateRecord
from bridge.contract.rules import FINAL_STATUSES
from bridge.errors import BridgeError, InternalError, KafkaUnavailable
from bridge.pipeline.keyed import KeyedRunner
from bridge.states.background import BackgroundApi
from bridge.states.tracker import Kind, Observation, Tracker, as_utc, order_key

log = structlog.get_logger(__name__)


class Ticket(Protocol):
    def settle(self, future: asyncio.Future[Any] | None) -> None:
        """The observation was handled: ``future`` resolves once its record is on Kafka."""


@dataclass(slots=True)
class _Work:
    obs: Observation
    ticket: Ticket | None


class StateSink:
    """The one path from observations to state records."""

    def __init__(
        self,
        tracker: Tracker,
        producer: AIOKafkaProducer,
        topic: str,
        api: BackgroundApi,
        *,
        fetch_output: bool,
        workers: int,
        on_fatal: Callable[[BridgeError], None],
        reorder_window: float = 0.0,
        on_published: Callable[[str], None] | None = None,
        max_pending: int = 10_000,
    ) -> None:
        self._on_published = on_published
        self.tracker = tracker
        self._producer = producer
        self._topic = topic
        self._api = api
        self._fetch_output = fetch_output
        self._on_fatal = on_fatal
        self._runner: KeyedRunner[tuple[str, str], _Work] = KeyedRunner(
            self._handle, workers=workers, on_crash=self._crashed
        )
        self._unacked = 0
        self._window = reorder_window
        self._held: list[tuple[float, Observation, Ticket | None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_pending = max_pending
        self._room = asyncio.Event()
        self._room.set()
        #: Records published, by source.
        self.published: Counter[str] = Counter()
        #: ``instance.errored`` events a ``get`` found to be a step's error, not the end.
        self.step_errors = 0

    async def __aenter__(self) -> Self:
        await self._runner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._runner.__aexit__(exc_type, exc, tb)

    # -- intake ------------------------------------------------------------------------

    def submit(self, obs: Observation, ticket: Ticket | None = None) -> None:
        self._idle.clear()
        self._runner.submit(obs.key, _Work(obs, ticket))

    def hold(self, obs: Observation, ticket: Ticket | None = None) -> None:
        """Submit ``obs`` after the reorder window, with everything held that is due by then,
        in event-time order: queue events and polls then merge in the order they happened."""
        if self._window <= 0:
            self.submit(obs, ticket)
            return
        self._idle.clear()
        self._held.append((time.monotonic() + self._window, obs, ticket))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window, self._release)

    def _release(self) -> None:
        self._timer = None
        now = time.monotonic()
        due = [entry for entry in self._held if entry[0] <= now]
        self._held = [entry for entry in self._held if entry[0] > now]
        for _, obs, ticket in sorted(due, key=lambda entry: order_key(entry[1])):
            self.submit(obs, ticket)
        if self._held:
            delay = max(self._held[0][0] - now, 0.0)
            self._timer = asyncio.get_running_loop().call_later(delay, self._release)
        self._poke()

    @property
    def pending(self) -> int:
        """Observations held or not handled yet, plus records not yet acknowledged."""
        return len(self._held) + self._runner.queued + self._unacked

    @property
    def backlog(self) -> int:
        """Observations held or not handled yet."""
        return len(self._held) + self._runner.queued

    async def room(self, stop: asyncio.Event, within: float | None = None) -> bool:
        """Until the backlog is under ``max_pending`` (or ``stop`` is set): where a source waits
        before it fetches more observations. False when ``within`` seconds passed first."""
        deadline = None if within is None else time.monotonic() + within
        while self.backlog >= self._max_pending and not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._room.clear()
            waiters = [asyncio.ensure_future(self._room.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return True

    async def wait_idle(self, within: float) -> bool:
        """Until everything submitted is handled and on Kafka; False on time-out."""
        deadline = time.monotonic() + within
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), min(left, 0.2))
            except TimeoutError:
                continue
        return True

    # -- handling ----------------------------------------------------------------------

    async def _handle(self, work: _Work) -> None:
        # An exception leaves the ticket unsettled: the source must not take it as done.
        future: asyncio.Future[Any] | None = None
        try:
            obs: Observation | None = work.obs
            if obs is not None and self.tracker.is_change(obs):
                obs = await self._detailed(obs)
            for record in [] if obs is None else self.tracker.apply(obs):
                future = await self._publish(record)  # the last one settles the ticket
            if work.ticket is not None:
                work.ticket.settle(future)
        finally:
            self._poke()

    def _needs_get(self, obs: Observation) -> bool:
        if obs.fetched or obs.status not in ("complete", "errored"):
            return False
        return self._fetch_output or (obs.status == "errored" and obs.source == "event")

    async def _detailed(self, obs: Observation) -> Observation | None:
        """``obs`` with what a ``get`` says, when one is due; None when it is no change after
        all (an ``errored`` event for a step's error)."""
        if not self._needs_get(obs):
            return obs
        found = await self._api.get(obs.workflow, obs.instance_id)
        if found is None:  # gone (deleted, or past retention): publish what the source said
            return obs.with_details(version_id=None, output=None, error=None)
        status = found.status
        if status == obs.status:
            return _with(obs, found)
        if status in FINAL_STATUSES:
            # It ended otherwise than the source said: the get saw the result.
            ended = Observation(
                obs.workflow,
                obs.instance_id,
                status,
                "poll",
                at=datetime.now(UTC),
                event_at=None if found.end is None else as_utc(found.end),
                kind=Kind.ENDED,
                created_at=None if found.queued is None else as_utc(found.queued),
            )
            return _with(ended, found)
        if obs.status == "errored":
            self.step_errors += 1
            log.info(
                "state_step_error",
                workflow=obs.workflow,
                instance_id=obs.instance_id,
                status=status,
            )
            return None
        # complete, but it runs again (restarted since): the completion stands, without output.
        return obs.with_details(version_id=found.version_id, output=None, error=None)

    async def _publish(self, record: StateRecord) -> asyncio.Future[Any]:
        value = record.model_dump_json().encode()
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                self._topic, value=value, key=record.instance_id.encode()
            )
        except KafkaError as exc:
            raise KafkaUnavailable(f"could not write to {self._topic}: {exc}") from exc
        self._unacked += 1
        self.published[record.source] += 1
        if self._on_published is not None:
            self._on_published(record.source)
        log.debug(
            "state_published",
            workflow=record.workflow,
            instance_id=record.instance_id,
            status=record.status,
            previous_status=record.previous_status,
            source=record.source,
        )

        def acked(done: asyncio.Future[Any]) -> None:
            self._unacked -= 1
            self._poke()
            if done.cancelled() or done.exception() is not None:
                error = "cancelled" if done.cancelled() else str(done.exception())
                self._on_fatal(KafkaUnavailable(f"the broker did not take a state: {error}"))

        future.add_done_callback(acked)
        return future

    def _poke(self) -> None:
        if not self.pending:
            self._idle.set()
        # Room again below four fifths of the bound: sources resume in batches, not one by one.
        if not self._room.is_set() and self.backlog < self._max_pending * 0.8:
            self._room.set()

    def _crashed(self, work: _Work, error: Exception) -> None:
        self._on_fatal(
            error
            if isinstance(error, BridgeError)
            else InternalError(f"the state stream failed: {type(error).__name__}: {error}")
        )


def _with(obs: Observation, found: InstanceGetResponse) -> Observation:
    error = (
        None
        if found.error is None
        else InstanceError(name=found.error.name, message=found.error.message)
    )
    return obs.with_details(version_id=found.version_id, output=found.output, error=error)
