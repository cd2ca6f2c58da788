"""Polling: cursor-paged ``list`` sweeps, the only source without a queue and a slow
reconciliation with one (it also sees ``waiting``, which no event announces).

A sweep of one workflow, every call from the budget's background lane:

1. ``list`` each live status (``queued``, ``running``, ``waiting``, ``waitingForPause``,
   ``paused``, ``rollingBack``), 100 a page, following the cursor: every instance listed is an
   observation at its ``modified_on``;
2. ``list`` each final status for instances created since the previous sweep (less a margin):
   instances that began and ended between two sweeps, including ones created elsewhere;
3. an instance the tracker holds live that no list showed has ended unseen: one ``get`` says
   where (a 404 means it is gone — deleted, or past retention — and it is no longer followed).

The sweep costs ``6 + 3`` requests per workflow plus a page per 100 more instances of a status,
plus a ``get`` per instance that ended unseen (and the sink's ``get`` for outputs). It runs every
``interval`` seconds at most, and the lane spaces calls further when its share is spent; the
first sweep comes after ``first_in`` seconds (with a queue: at once only when there are live
instances to catch up on, else after one interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from bridge.cloudflare.models import InstanceListResponse
from bridge.contract.results import InstanceError
from bridge.contract.rules import FINAL_STATUSES
from bridge.states.background import BackgroundApi
from bridge.states.sink import StateSink
from bridge.states.tracker import LIVE_STATUSES, Kind, Observation, as_utc

log = structlog.get_logger(__name__)

#: Final statuses are listed for instances created this long before the previous sweep began.
MARGIN = timedelta(seconds=60)


@dataclass(slots=True)
class PollStats:
    sweeps: int = 0
    listed: int = 0
    ended_unseen: int = 0
    gone: int = 0


class Poller:
    """Sweeps every followed workflow, then waits ``interval`` seconds, until stopped."""

    def __init__(
        self,
        api: BackgroundApi,
        sink: StateSink,
        *,
        workflows: Callable[[], Iterable[str]],
        interval: float,
        since: datetime,
        first_in: float = 0.0,
    ) -> None:
        self._api = api
        self._sink = sink
        self._workflows = workflows
        self._interval = interval
        self._since = since - MARGIN
        self._first_in = first_in
        self.stats = PollStats()

    async def run(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._first_in)
        while not stop.is_set():
            started, began = datetime.now(UTC), time.monotonic()
            before = dict(self._api.requests)
            followed, live = sorted(self._workflows()), 0
            for workflow in followed:
                await self._sink.room(stop)
                if stop.is_set():
                    return
                live += await self.sweep(workflow)
            self._since = started - MARGIN
            self.stats.sweeps += 1
            spent = {kind: n - before.get(kind, 0) for kind, n in self._api.requests.items()}
            log.info(
                "state_sweep",
                workflows=len(followed),
                requests=sum(spent.values()),
                lists=spent.get("list", 0),
                gets=spent.get("get", 0),
                live=live,
                seconds=round(time.monotonic() - began, 3),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def sweep(self, workflow: str) -> int:
        """Sweep ``workflow``; returns how many instances its lists showed live."""
        tracker, sink = self._sink.tracker, self._sink
        live_before = tracker.live(workflow)
        seen: set[str] = set()
        for status in LIVE_STATUSES:
            await self._list(workflow, status, None, seen)
        live = len(seen)
        for status in sorted(FINAL_STATUSES):
            await self._list(workflow, status, self._since, seen)
        for instance_id in sorted(live_before - seen):
            if tracker.known(workflow, instance_id) in FINAL_STATUSES:
                continue  # ended meanwhile, by another source
            found = await self._api.get(workflow, instance_id)
            if found is None:
                self.stats.gone += 1
                tracker.forget(workflow, instance_id)
                log.info("state_instance_gone", workflow=workflow, instance_id=instance_id)
            elif found.status in FINAL_STATUSES:
                self.stats.ended_unseen += 1
                ended = Observation(
                    workflow,
                    instance_id,
                    found.status,
                    "poll",
                    at=datetime.now(UTC),
                    event_at=None if found.end is None else as_utc(found.end),
                    kind=Kind.ENDED,
                    version_id=found.version_id,
                    created_at=None if found.queued is None else as_utc(found.queued),
                )
                error = found.error
                sink.hold(
                    ended.with_details(
                        version_id=found.version_id,
                        output=found.output,
                        error=None
                        if error is None
                        else InstanceError(name=error.name, message=error.message),
                    )
                )
            # a live status: it moved between two lists; the next sweep sees it
        return live

    async def _list(
        self, workflow: str, status: str, since: datetime | None, seen: set[str]
    ) -> None:
        cursor: str | None = None
        while True:
            items, cursor = await self._api.list_page(
                workflow, status=status, cursor=cursor, date_start=since
            )
            for item in items:
                seen.add(item.id)
                self.stats.listed += 1
                self._observe(workflow, item)
            if cursor is None:
                return

    def _observe(self, workflow: str, item: InstanceListResponse) -> None:
        if item.modified_on is None:
            return  # no time of Cloudflare's to order it by (the API always sends one)
        if self._sink.tracker.known(workflow, item.id) == item.status:
            return  # nothing new: spare the sink the work
        self._sink.hold(
            Observation(
                workflow,
                item.id,
                item.status,
                "poll",
                at=datetime.now(UTC),
                event_at=as_utc(item.modified_on),
                version_id=item.version_id,
                created_at=None if item.created_on is None else as_utc(item.created_on),
            )
        )
