"""Coalescing: single creates that arrive close together go out as one ``/batch`` call.

A batch takes up to 100 instances and costs one request from the budget instead of one per
instance. ``/batch`` skips ids that already exist and leaves them out of its result, so every
caller learns whether its own instance was created or skipped. When a batch fails for the whole
group (a transient error) each caller sees that error and retries; when the API refuses a batch
of several, the callers are told to go alone, so one bad item cannot sink the others.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.models import InstanceCreateResponse
from bridge.contract.rules import MAX_BATCH
from bridge.errors import ApiError, BridgeError, Rejected
from bridge.pipeline.budget import RequestBudget

#: Keep a batch body well under the ~1 MiB an API call may carry.
MAX_BATCH_BYTES = 768 * 1024
#: Bounds up to this size are trusted as the item's size: 100 of them still fit a batch.
_CHEAP_BOUND = MAX_BATCH_BYTES // MAX_BATCH


class BatchRefused(BridgeError):
    """The API refused, as a whole, a batch this create shared with others: send it alone."""


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """What one ``/batch`` call said about one item."""

    created: InstanceCreateResponse | None
    http_status: int
    cf_ray: str | None


@dataclass(slots=True)
class _Pending:
    instance_id: str
    body: dict[str, Any]
    size: int
    future: asyncio.Future[BatchAnswer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Group:
    items: list[_Pending] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class CreateCoalescer:
    """Collects creates per workflow and sends them as ``/batch`` calls."""

    def __init__(
        self, client: WorkflowsClient, budget: RequestBudget, *, linger_seconds: float
    ) -> None:
        self._client = client
        self._budget = budget
        self._linger = linger_seconds
        self._groups: dict[str, _Group] = {}
        self._flights: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for group in self._groups.values():
            if group.timer is not None:
                group.timer.cancel()
            for item in group.items:
                item.future.cancel()
        self._groups.clear()
        for task in self._flights:
            task.cancel()
        await asyncio.gather(*self._flights, return_exceptions=True)

    async def create(
        self,
        workflow: str,
        instance_id: str,
        body: dict[str, Any],
        *,
        size_bound: int | None = None,
    ) -> BatchAnswer:
        """Create ``instance_id`` as part of the next batch; raises the batch's error.

        ``size_bound``, an upper bound of the body's serialised size, saves serialising it to
        fill the batch when it is small.
        """
        if size_bound is not None and size_bound <= _CHEAP_BOUND:
            size = size_bound
        else:
            size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
        pending = _Pending(instance_id, body, size)
        group = self._groups.get(workflow)
        if group is not None and group.size + size > MAX_BATCH_BYTES:
            self._flush(workflow)
            group = None
        if group is None:
            group = self._groups[workflow] = _Group()
            loop = asyncio.get_running_loop()
            group.timer = loop.call_later(self._linger, self._flush, workflow)
        group.items.append(pending)
        group.size += size
        if len(group.items) >= self._budget.max_batch(workflow):
            self._flush(workflow)
        return await pending.future

    def _flush(self, workflow: str) -> None:
        group = self._groups.pop(workflow, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.create_task(self._send(workflow, group.items), name=f"batch-{workflow}")
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    async def _send(self, workflow: str, items: list[_Pending]) -> None:
        try:
            async with self._budget.slot(creations=len(items), workflow=workflow):
                answer = await self._client.create_batch(workflow, [item.body for item in items])
        except Rejected as exc:
            error: BridgeError = exc if len(items) == 1 else BatchRefused(str(exc))
            _fail(items, error)
            return
        except ApiError as exc:
            _fail(items, exc)
            return
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise
        created = {instance.id: instance for instance in answer.result}
        for item in items:
            if not item.future.done():
                item.future.set_result(
                    BatchAnswer(created.get(item.instance_id), answer.http_status, answer.cf_ray)
                )


def _fail(items: list[_Pending], error: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)
