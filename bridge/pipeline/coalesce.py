"""Coalescing: single operations that arrive close together go out as one bulk call.

One mechanism for every operation the API has a bulk form of, per workflow:

======================  ===================================  ================================
operation               bulk call                            what it says about each item
======================  ===================================  ================================
create                  ``POST /instances/batch``            created, or left out (id taken)
terminate               ``POST /instances/batch/terminate``  only a count: see below
delete                  ``POST /instances/batch/delete``     deleted, or an error with a code
======================  ===================================  ================================

Items wait up to the linger time, or until the group is full (100 ids; for creates also the
creation limits and about 1 MiB of body), and the bulk call costs one request from the budget
instead of one per item. Every caller gets an answer about its own item.

When a bulk call fails as a whole with a transient error, each caller sees that error and
retries. When the API refuses a bulk call of several items (a 4xx), each caller is told to go
alone (:class:`BatchRefused`), so one bad item cannot sink the others.

``batch/terminate`` answers ``{instancesTerminated, status}``: when the count equals the ids
sent, every item was terminated; when it is lower, the call cannot say which ids it could not
terminate, and each caller learns that its item is *unsettled* and resolves it on its own;
``already_running`` (a terminate-all job is running) did nothing, and each caller goes alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from bridge.cloudflare.client import WorkflowsClient
from bridge.cloudflare.models import DeleteError, InstanceCreateResponse
from bridge.contract.rules import MAX_BATCH
from bridge.errors import ApiError, BridgeError, Rejected
from bridge.pipeline.budget import RequestBudget

#: Keep a batch body well under the ~1 MiB an API call may carry.
MAX_BATCH_BYTES = 768 * 1024
#: Bounds up to this size are trusted as the item's size: 100 of them still fit a batch.
_CHEAP_BOUND = MAX_BATCH_BYTES // MAX_BATCH

A = TypeVar("A")


class BatchRefused(BridgeError):
    """The API refused, as a whole, a bulk call this item shared with others: send it alone."""


class Bulk(StrEnum):
    """The operations that coalesce."""

    CREATE = "create"
    TERMINATE = "terminate"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """What one ``/batch`` call said about one create."""

    created: InstanceCreateResponse | None
    http_status: int
    cf_ray: str | None


class Termination(StrEnum):
    """What a ``batch/terminate`` call said about one id."""

    #: The call terminated every id it was given, this one included.
    TERMINATED = "terminated"
    #: The call terminated fewer ids than it was given; this one may be among those it did not.
    UNSETTLED = "unsettled"
    #: A terminate-all job was running: the call did nothing.
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class TerminateAnswer:
    termination: Termination
    http_status: int
    cf_ray: str | None


@dataclass(frozen=True, slots=True)
class DeleteAnswer:
    """What one ``batch/delete`` call said about one id: deleted, or its error."""

    error: DeleteError | None
    http_status: int
    cf_ray: str | None


@dataclass(slots=True)
class _Pending(Generic[A]):
    instance_id: str
    body: Any
    size: int
    future: asyncio.Future[A] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Group:
    items: list[_Pending[Any]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


#: Sends one group and settles every item's future.
_Sender = Callable[[str, list[_Pending[Any]]], Awaitable[None]]


class Coalescer:
    """Collects creates, terminates and deletes per workflow and sends them as bulk calls."""

    def __init__(
        self, client: WorkflowsClient, budget: RequestBudget, *, linger_seconds: float
    ) -> None:
        self._client = client
        self._budget = budget
        self._linger = linger_seconds
        self._groups: dict[tuple[Bulk, str], _Group] = {}
        self._flights: set[asyncio.Task[None]] = set()
        self._senders: dict[Bulk, _Sender] = {
            Bulk.CREATE: self._send_creates,
            Bulk.TERMINATE: self._send_terminates,
            Bulk.DELETE: self._send_deletes,
        }

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

    # -- the operations ------------------------------------------------------------------

    async def create(
        self,
        workflow: str,
        instance_id: str,
        body: dict[str, Any],
        *,
        size_bound: int | None = None,
    ) -> BatchAnswer:
        """Create ``instance_id`` as part of the next ``/batch``; raises the batch's error.

        ``size_bound``, an upper bound of the body's serialised size, saves serialising it to
        fill the batch when it is small.
        """
        if size_bound is not None and size_bound <= _CHEAP_BOUND:
            size = size_bound
        else:
            size = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
        pending: _Pending[BatchAnswer] = _Pending(instance_id, body, size)
        return await self._join(Bulk.CREATE, workflow, pending)

    async def terminate(self, workflow: str, instance_id: str) -> TerminateAnswer:
        """Terminate ``instance_id`` as part of the next ``batch/terminate``."""
        pending: _Pending[TerminateAnswer] = _Pending(instance_id, None, 0)
        return await self._join(Bulk.TERMINATE, workflow, pending)

    async def delete(self, workflow: str, instance_id: str) -> DeleteAnswer:
        """Delete ``instance_id`` as part of the next ``batch/delete``."""
        pending: _Pending[DeleteAnswer] = _Pending(instance_id, None, 0)
        return await self._join(Bulk.DELETE, workflow, pending)

    # -- the one mechanism ---------------------------------------------------------------

    def _capacity(self, kind: Bulk, workflow: str) -> int:
        if kind is Bulk.CREATE:
            return self._budget.max_batch(workflow)
        return MAX_BATCH

    async def _join(self, kind: Bulk, workflow: str, pending: _Pending[A]) -> A:
        key = (kind, workflow)
        group = self._groups.get(key)
        if group is not None and group.size + pending.size > MAX_BATCH_BYTES:
            self._flush(key)
            group = None
        if group is None:
            group = self._groups[key] = _Group()
            group.timer = asyncio.get_running_loop().call_later(self._linger, self._flush, key)
        group.items.append(pending)
        group.size += pending.size
        if len(group.items) >= self._capacity(kind, workflow):
            self._flush(key)
        return await pending.future

    def _flush(self, key: tuple[Bulk, str]) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        kind, workflow = key
        task = asyncio.create_task(
            self._send(kind, workflow, group.items), name=f"{kind}-{workflow}"
        )
        self._flights.add(task)
        task.add_done_callback(self._flights.discard)

    async def _send(self, kind: Bulk, workflow: str, items: list[_Pending[Any]]) -> None:
        try:
            await self._senders[kind](workflow, items)
        except Rejected as exc:
            error: BridgeError = exc if len(items) == 1 else BatchRefused(str(exc))
            _fail(items, error)
        except ApiError as exc:
            _fail(items, exc)
        except asyncio.CancelledError:
            for item in items:
                item.future.cancel()
            raise

    # -- the bulk calls ------------------------------------------------------------------

    async def _send_creates(self, workflow: str, items: list[_Pending[Any]]) -> None:
        async with self._budget.slot(creations=len(items), workflow=workflow):
            answer = await self._client.create_batch(workflow, [item.body for item in items])
        created = {instance.id: instance for instance in answer.result}
        for item in items:
            _settle(
                item, BatchAnswer(created.get(item.instance_id), answer.http_status, answer.cf_ray)
            )

    async def _send_terminates(self, workflow: str, items: list[_Pending[Any]]) -> None:
        ids = [item.instance_id for item in items]
        async with self._budget.slot():
            answer = await self._client.terminate_batch(workflow, ids)
        result = answer.result
        if result.status == "already_running":
            termination = Termination.BUSY
        elif result.instances_terminated >= len(set(ids)):
            termination = Termination.TERMINATED
        else:
            termination = Termination.UNSETTLED
        for item in items:
            _settle(item, TerminateAnswer(termination, answer.http_status, answer.cf_ray))

    async def _send_deletes(self, workflow: str, items: list[_Pending[Any]]) -> None:
        async with self._budget.slot():
            answer = await self._client.delete_batch(workflow, [item.instance_id for item in items])
        errors = {error.id: error for error in answer.result.errors}
        deleted = {entry.id for entry in answer.result.deleted}
        for item in items:
            error = errors.get(item.instance_id)
            if error is None and item.instance_id not in deleted:
                # Neither list names it: the call did not account for this id.
                error = DeleteError(id=item.instance_id, code=None, message="not in the answer")
            _settle(item, DeleteAnswer(error, answer.http_status, answer.cf_ray))


def _settle(item: _Pending[A], answer: A) -> None:
    if not item.future.done():
        item.future.set_result(answer)


def _fail(items: list[_Pending[Any]], error: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)
