"""Statuses of instances that existed before a create: learnt from ``list`` pages, never one
``get`` per instance.

A create whose id was already taken (a redelivery after a crash, or someone else's instance) is
answered ``already_exists`` with that instance's status. Asking ``GET /instances/{id}`` for each
would cost a request per item — a hundred for one skipped ``/batch``. Instead the lookups of one
workflow that arrive within the linger window share one scan of ``GET /instances`` pages of 100,
newest first (an instance that was just found taken is usually recent), until every wanted id is
found, the pages end, or ``max_pages`` pages were read. An id not found by then, or a scan that
keeps failing, leaves the status unknown (None): the status is a courtesy of the result, never a
reason to spend the budget without bound or to fail the command.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import structlog

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.models import InstanceListResponse
from bridge.contract.rules import MAX_PER_PAGE
from bridge.errors import ApiError, RateLimited
from bridge.pipeline.budget import RequestBudget

log = structlog.get_logger(__name__)

#: Pages one scan reads at most: the newest 1,000 instances of the workflow.
MAX_PAGES = 10
#: Tries per page when the API fails transiently; then the scan gives up.
PAGE_TRIES = 3


@dataclass(slots=True)
class _Scan:
    """Lookups of one workflow waiting for the next scan."""

    wanted: dict[str, list[asyncio.Future[str | None]]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class StatusLookup:
    """Coalesces status lookups per workflow into scans of ``list`` pages."""

    def __init__(
        self,
        client: WorkflowsClient,
        budget: RequestBudget,
        *,
        linger_seconds: float,
        max_pages: int = MAX_PAGES,
        backoff_seconds: float = 0.2,
    ) -> None:
        self._client = client
        self._budget = budget
        self._linger = linger_seconds
        self._max_pages = max_pages
        self._backoff = backoff_seconds
        self._waiting: dict[str, _Scan] = {}
        self._flights: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for scan in self._waiting.values():
            if scan.timer is not None:
                scan.timer.cancel()
            for futures in scan.wanted.values():
                for future in futures:
                    future.cancel()
        self._waiting.clear()
        for task in self._flights:
            task.cancel()
        await asyncio.gather(*self._flights, return_exceptions=True)

    async def status(self, workflow: str, instance_id: str) -> str | None:
        """The instance's current status from the next scan, or None if it was not found."""
        scan = self._waiting.get(workflow)
        if scan is None:
            scan = self._waiting[workflow] = _Scan()
            scan.timer = asyncio.get_running_loop().call_later(self._linger, self._start, workflow)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        scan.wanted.setdefault(instance_id, []).append(future)
        return await future

    def _start(self, workflow: str) -> None:
        scan = self._waiting.pop(workflow, None)
        if scan is None:
            return
        task = asyncio.create_task(self._scan(workflow, scan.wanted), name=f"lookup-{workflow}")
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    async def _scan(
        self, workflow: str, wanted: dict[str, list[asyncio.Future[str | None]]]
    ) -> None:
        asked = len(wanted)
        pages = 0
        cursor: str | None = None
        try:
            while wanted and pages < self._max_pages:
                page = await self._page(workflow, cursor)
                if page is None:
                    break
                pages += 1
                items, cursor = page
                for item in items:
                    for future in wanted.pop(item.id, ()):
                        if not future.done():
                            future.set_result(item.status)
                if cursor is None:
                    break
        finally:
            for futures in wanted.values():
                for future in futures:
                    if not future.done():
                        future.set_result(None)
        log.info(
            "status_lookup",
            workflow=workflow,
            wanted=asked,
            found=asked - len(wanted),
            pages=pages,
        )

    async def _page(
        self, workflow: str, cursor: str | None
    ) -> tuple[list[InstanceListResponse], str | None] | None:
        """One page, retried a few times on transient errors; None when it cannot be read."""
        tries = 0
        while True:
            try:
                async with self._budget.slot():
                    answer, next_cursor = await self._client.list_page(
                        workflow, per_page=MAX_PER_PAGE, cursor=cursor
                    )
                return list(answer.result), next_cursor
            except RateLimited:
                continue  # the budget is blocked now; the next slot waits the block out
            except ApiError as exc:
                tries += 1
                if not exc.retriable or tries >= PAGE_TRIES:
                    log.warning("status_lookup_failed", workflow=workflow, error=str(exc))
                    return None
                await asyncio.sleep(self._backoff * 2 ** (tries - 1) * random.uniform(0.5, 1.0))
