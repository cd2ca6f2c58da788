"""Which replica follows states: the one that holds partition 0 of the first command topic.

The consumer group already gives every partition to exactly one member, so the role needs no
coordination service of its own: it starts when that partition is assigned and stops — having
finished and handed over what it took on — when it is revoked, before the group hands it on
(aiokafka runs the revocation callback before the replica rejoins). A replica that dies loses the
partition after the session timeout, and the next holder recovers what was published from Kafka.

The role also answers the executor's :class:`~bridge.pipeline.statuses.InstanceStatuses`
questions from the tracker while this replica follows (other replicas know nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import structlog
from aiokafka import TopicPartition

from bridge.cloudflare.client import WorkflowsClient
from bridge.config import Settings
from bridge.errors import BridgeError, InternalError
from bridge.ops.metrics import Metrics
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.states.follower import Follower

log = structlog.get_logger(__name__)

#: Beyond the drain timeout, how long a stopping follower may take before it is cancelled.
_STOP_GRACE = 5.0


def leader_partition(settings: Settings) -> TopicPartition:
    """The partition whose holder follows states."""
    return TopicPartition(settings.topics.commands[0], 0)


class StateRole:
    """Starts and stops this replica's :class:`Follower` as the leader partition comes and goes."""

    def __init__(
        self,
        settings: Settings,
        client: WorkflowsClient,
        budget: RequestBudget,
        gate: AuthGate,
        *,
        on_fatal: Callable[[BridgeError], None],
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._client = client
        self._budget = budget
        self._gate = gate
        self._on_fatal = on_fatal
        self._leader = leader_partition(settings)
        budget.set_background_share(settings.states.budget_share)
        self._follower: Follower | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_following()

    @property
    def following(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def follower(self) -> Follower | None:
        return self._follower

    def known(self, workflow: str, instance_id: str) -> str | None:
        """The last published status of the instance, when this replica follows."""
        follower = self._follower
        return None if follower is None else follower.known(workflow, instance_id)

    # -- the group's decisions ---------------------------------------------------------

    def on_assigned(self, assignment: set[TopicPartition]) -> None:
        if self._leader in assignment and self._task is None:
            self._start()

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._leader in revoked:
            await self._stop_following()

    # -- internals ---------------------------------------------------------------------

    def _start(self) -> None:
        metrics = self._metrics
        follower = Follower(
            self._settings,
            self._client,
            self._budget,
            self._gate,
            on_published=None if metrics is None else metrics.state_published,
            on_request=None if metrics is None else metrics.state_request,
        )
        stop = asyncio.Event()
        self._follower, self._stop = follower, stop
        self._task = asyncio.create_task(self._run(follower, stop), name="state-follower")
        log.info("state_role_taken", partition=str(self._leader))

    async def _run(self, follower: Follower, stop: asyncio.Event) -> None:
        try:
            await follower.run(stop)
        except BridgeError as exc:
            self._on_fatal(exc)
        except Exception as exc:
            log.exception("state_following_crashed")
            self._on_fatal(InternalError(f"the state follower failed: {type(exc).__name__}: {exc}"))

    async def _stop_following(self) -> None:
        task, stop = self._task, self._stop
        if task is None or stop is None:
            return
        stop.set()
        within = self._settings.pipeline.drain_timeout_seconds + _STOP_GRACE
        done, _ = await asyncio.wait({task}, timeout=within)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.warning("state_stop_timeout", seconds=within)
        self._task = self._stop = None
        self._follower = None
        log.info("state_role_released", partition=str(self._leader))

    def live_values(self) -> dict[str, float]:
        """The ``states_*`` gauges of ``/metrics``."""
        follower = self._follower if self.following else None
        if follower is None:
            return {"states_following": 0.0}
        values = {
            "states_following": 1.0,
            "states_live_instances": float(follower.live_count()),
            "states_pending": float(0 if follower.sink is None else follower.sink.pending),
        }
        backlog = None if follower.queue is None else follower.queue.stats.backlog
        if backlog is not None:
            values["states_queue_backlog"] = float(backlog)
        return values

    def snapshot(self) -> dict[str, Any]:
        follower = self._follower
        detail: dict[str, Any] = {"following": self.following}
        if follower is not None:
            detail.update(follower.snapshot())
        return detail
