"""Carrying out one job against the API: the error taxonomy and the retry policy.

* transient errors (no answer, 5xx, ``success: false``) are retried with capped, jittered
  exponential backoff until the command's deadline, then the job ends ``failed``;
* a 429 blocks the whole replica (see :mod:`bridge.pipeline.budget`) and is waited out without
  spending the deadline: rate limiting never fails a command;
* 401/403 park the replica (see :mod:`bridge.pipeline.auth_gate`) and the job waits for the token
  to work;
* a create whose id turns out taken is settled without a request per item: if an earlier attempt
  of the same job sent that id and failed in a way that may have taken effect, the instance is
  the job's own (``ok``); otherwise it existed before the command (``already_exists``) and its
  status comes from what the bridge already knows or from a shared scan of ``list`` pages
  (:mod:`bridge.pipeline.lookup`);
* a status edit refused because the instance is already where the edit would take it (a
  redelivered terminate, pause or resume) is success too; anything else refused is ``rejected``;
* a delete of an instance that does not exist is success (a redelivered delete); a workflow that
  does not exist is ``rejected``, like every 404 of it.

Creates, terminates (without ``rollback``) and deletes of one workflow share bulk calls through
:mod:`bridge.pipeline.coalesce`; each still gets its own outcome. When a bulk terminate ended
fewer instances than it was sent (it answers a count, not which), its ids learn their statuses
from one shared scan of ``list`` pages, and only those not seen terminated are sent alone: one
finished instance in a batch of 100 costs a page or a few and its own request, not 100 ``get``s.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from bridge.cloudflare.client import Answer, WorkflowsClient
from bridge.config import PipelineSettings
from bridge.contract.results import Outcome
from bridge.contract.rules import INSTANCE_NOT_FOUND_CODE, WORKFLOW_NOT_FOUND_CODE
from bridge.errors import (
    AlreadyExists,
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
    Rejected,
    ServerError,
)
from bridge.pipeline.auth_gate import AuthGate
from bridge.pipeline.budget import RequestBudget
from bridge.pipeline.coalesce import BatchRefused, Coalescer, Termination
from bridge.pipeline.lookup import StatusLookup
from bridge.pipeline.statuses import KNOWS_NOTHING, InstanceStatuses
from bridge.pipeline.translate import (
    CreateOp,
    DeleteOp,
    EventOp,
    GetOp,
    Job,
    JobOutcome,
    StatusOp,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: After a refused status edit, these statuses mean the edit's goal already holds.
_ALREADY_THERE = {
    "terminate": {"terminated"},
    "pause": {"paused", "waitingForPause"},
    "resume": {"running", "waiting", "queued"},
}


@dataclass(slots=True)
class _Tally:
    attempts: int = 0
    http_status: int | None = None
    cf_ray: str | None = None
    #: An attempt sent the job's request and failed in a way that may have taken effect.
    maybe_applied: bool = False

    def note(self, answer: Answer[Any] | ApiError) -> None:
        self.http_status = answer.http_status
        self.cf_ray = answer.cf_ray or self.cf_ray


class Executor:
    """Runs jobs through the budget, the coalescer and the client."""

    def __init__(
        self,
        client: WorkflowsClient,
        budget: RequestBudget,
        coalescer: Coalescer,
        gate: AuthGate,
        settings: PipelineSettings,
        *,
        lookup: StatusLookup | None = None,
        statuses: InstanceStatuses = KNOWS_NOTHING,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """``lookup`` finds the statuses of instances that existed before their create (without
        it they stay unknown); ``statuses`` is what the bridge already knows."""
        self._client = client
        self._lookup = lookup
        self._statuses = statuses
        self._on_retry = on_retry
        self._budget = budget
        self._coalescer = coalescer
        self._gate = gate
        self._settings = settings
        self._clock = clock

    async def run(self, job: Job) -> JobOutcome:
        """Carry out ``job``; never raises for API trouble, which becomes the outcome."""
        tally = _Tally()
        deadline = self._clock() + self._settings.retry_deadline_seconds
        failures = 0
        alone = False
        while True:
            await self._gate.wait()
            try:
                return await self._attempt(job, tally, alone=alone)
            except BatchRefused:
                alone = True
            except AuthError as exc:
                tally.note(exc)
                self._gate.close(exc)
            except RateLimited as exc:
                tally.note(exc)  # the budget is blocked now; waiting there costs no deadline
            except ApiError as exc:
                tally.note(exc)
                if not exc.retriable:
                    return self._refused(exc, tally)
                tally.maybe_applied = True  # no answer, 5xx, success=false: perhaps applied
                failures += 1
                delay = self._backoff(failures, exc.retry_after)
                if self._clock() + delay > deadline:
                    return JobOutcome(
                        Outcome.FAILED, None, exc, tally.attempts, exc.http_status, tally.cf_ray
                    )
                if self._on_retry is not None:
                    self._on_retry(type(exc).__name__)
                log.info(
                    "api_retry",
                    instance_id=job.instance_id,
                    error=str(exc),
                    delay=delay,
                )
                await asyncio.sleep(delay)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        base = self._settings.backoff_initial_seconds * 2.0 ** (failures - 1)
        delay = min(base, self._settings.backoff_max_seconds) * random.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    @staticmethod
    def _refused(error: ApiError, tally: _Tally) -> JobOutcome:
        return JobOutcome(
            Outcome.REJECTED, None, error, tally.attempts, error.http_status, tally.cf_ray
        )

    async def _request(
        self,
        tally: _Tally,
        call: Callable[[], Awaitable[Answer[T]]],
        *,
        creations: int = 0,
        workflow: str | None = None,
    ) -> Answer[T]:
        async with self._budget.slot(creations=creations, workflow=workflow):
            tally.attempts += 1
            answer = await call()
        tally.note(answer)
        return answer

    async def _attempt(self, job: Job, tally: _Tally, *, alone: bool) -> JobOutcome:
        op = job.op
        if isinstance(op, CreateOp):
            return await self._create(job, op, tally, alone=alone)
        if isinstance(op, EventOp):
            await self._request(
                tally,
                lambda: self._client.send_event(
                    job.workflow, job.instance_id, op.event_type, op.payload
                ),
            )
            return self._ok(None, tally)
        if isinstance(op, DeleteOp):
            return await self._delete(job, tally, alone=alone)
        if isinstance(op, GetOp):
            return await self._get(job, op, tally)
        if op.status == "terminate" and not op.rollback and not alone:
            return await self._terminate(job, op, tally)
        return await self._edit(job, op, tally)

    async def _create(self, job: Job, op: CreateOp, tally: _Tally, *, alone: bool) -> JobOutcome:
        if alone:
            try:
                answer = await self._request(
                    tally,
                    lambda: self._client.create(
                        job.workflow,
                        instance_id=job.instance_id,
                        params=op.params,
                        instance_retention=op.instance_retention,
                    ),
                    creations=1,
                    workflow=job.workflow,
                )
                return self._ok(answer.result.status, tally)
            except AlreadyExists:
                pass
        else:
            tally.attempts += 1
            batch = await self._coalescer.create(
                job.workflow, job.instance_id, op.body(job.instance_id), size_bound=op.size_bound
            )
            tally.http_status, tally.cf_ray = batch.http_status, batch.cf_ray
            if batch.created is not None:
                return self._ok(batch.created.status, tally)
        # The id is taken. If an earlier attempt of this job sent it and may have taken effect,
        # the instance is this job's own: ok, without asking (its status is whatever the bridge
        # already knows; the result does not wait for more).
        known = self._statuses.known(job.workflow, job.instance_id)
        if tally.maybe_applied:
            return self._ok(known, tally)
        # It existed before the command (a redelivery, or someone else's instance).
        if known is None and self._lookup is not None:
            known = await self._lookup.status(job.workflow, job.instance_id)
        return JobOutcome(
            Outcome.ALREADY_EXISTS, known, None, tally.attempts, tally.http_status, tally.cf_ray
        )

    @staticmethod
    def _ok(status: str | None, tally: _Tally) -> JobOutcome:
        return JobOutcome(Outcome.OK, status, None, tally.attempts, tally.http_status, tally.cf_ray)

    async def _edit(self, job: Job, op: StatusOp, tally: _Tally) -> JobOutcome:
        restarting = op.status == "restart"
        try:
            answer = await self._request(
                tally,
                lambda: self._client.edit_status(
                    job.workflow, job.instance_id, op.status, rollback=op.rollback, from_=op.from_
                ),
                creations=1 if restarting else 0,
                workflow=job.workflow if restarting else None,
            )
        except (Conflict, Rejected):
            goal = _ALREADY_THERE.get(op.status)
            if goal is None:
                raise
            current = await self._status_of(job, tally)
            if current in goal:
                return JobOutcome(
                    Outcome.OK, current, None, tally.attempts, tally.http_status, tally.cf_ray
                )
            raise
        return JobOutcome(
            Outcome.OK, answer.result.status, None, tally.attempts, tally.http_status, tally.cf_ray
        )

    async def _terminate(self, job: Job, op: StatusOp, tally: _Tally) -> JobOutcome:
        tally.attempts += 1
        answer = await self._coalescer.terminate(job.workflow, job.instance_id)
        tally.http_status, tally.cf_ray = answer.http_status, answer.cf_ray
        if answer.termination is Termination.TERMINATED:
            return self._ok("terminated", tally)
        if answer.termination is Termination.UNSETTLED:
            # The call terminated fewer ids than it was sent and does not say which: look at the
            # API (what the bridge knew from before the call is out of date now), in one scan
            # shared by every id of the batch.
            if self._lookup is not None:
                status = await self._lookup.status(job.workflow, job.instance_id)
            else:
                got = await self._request(
                    tally, lambda: self._client.get(job.workflow, job.instance_id)
                )
                status = got.result.status
            if status == "terminated":
                return self._ok("terminated", tally)
        # Still live, not seen (or a terminate-all job made the call do nothing): this id alone.
        return await self._edit(job, op, tally)

    async def _delete(self, job: Job, tally: _Tally, *, alone: bool) -> JobOutcome:
        if not alone:
            tally.attempts += 1
            answer = await self._coalescer.delete(job.workflow, job.instance_id)
            tally.http_status, tally.cf_ray = answer.http_status, answer.cf_ray
            error = answer.error
            if error is None or error.code == INSTANCE_NOT_FOUND_CODE:
                return self._ok(None, tally)
            raise ServerError(
                f"batch/delete did not delete {job.instance_id}: {error.code} {error.message}",
                http_status=answer.http_status,
                code=error.code,
                cf_ray=answer.cf_ray,
            )
        try:
            await self._request(tally, lambda: self._client.delete(job.workflow, job.instance_id))
        except NotFound as exc:
            if _workflow_missing(exc):
                raise
            # No such instance: deleted already (a redelivered delete), which was the goal.
        return self._ok(None, tally)

    async def _get(self, job: Job, op: GetOp, tally: _Tally) -> JobOutcome:
        answer = await self._request(
            tally,
            lambda: self._client.get(job.workflow, job.instance_id, simple=not op.steps),
        )
        state = answer.result
        return JobOutcome(
            Outcome.OK,
            state.status,
            None,
            tally.attempts,
            tally.http_status,
            tally.cf_ray,
            instance=state,
            steps=op.steps,
        )

    async def _status_of(self, job: Job, tally: _Tally) -> str | None:
        """The status of an instance a status edit was refused on: known, else one ``get``."""
        known = self._statuses.known(job.workflow, job.instance_id)
        if known is not None:
            return known
        answer = await self._request(tally, lambda: self._client.get(job.workflow, job.instance_id))
        return answer.result.status


def _workflow_missing(error: NotFound) -> bool:
    """Whether a 404 is about the workflow (not deployed) rather than the instance."""
    return error.code == WORKFLOW_NOT_FOUND_CODE or "workflow.not_found" in error.message
