"""Scenarios on many instances: cursor direction, deletes, batch terminate and the terminate-all
job, rate-limit headers, and (on request) the creation rate."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from bridge.cloudflare.models import InstanceBulkResponse
from bridge.contract.rules import FINAL_STATUSES
from bridge.tools.conformance.judging import (
    NO_SETTING,
    Row,
    Run,
    Verdict,
    judge,
    local_only,
)
from bridge.tools.conformance.probe import Observed


async def direction(run: Run) -> None:
    api = run.probe.client
    behaviour = "direction on cursor pagination"
    assumed = "asc walks oldest first, its cursor continues asc; desc starts newest"
    first = await run.probe.raw(lambda: api.list_page(run.workflow, per_page=1, direction="asc"))
    if local_only(run, behaviour, first, assumed, "the local engine has no cursor listing"):
        return
    if first.result is None:
        run.add(judge(behaviour, first.describe(), assumed, False))
        return
    page, cursor = first.result
    if cursor is None or not page.result:
        run.add(Row(behaviour, "one instance or none listed", assumed, Verdict.INCONCLUSIVE))
        return
    second = await run.probe.raw(lambda: api.list_page(run.workflow, per_page=1, cursor=cursor))
    newest = await run.probe.raw(lambda: api.list_page(run.workflow, per_page=1, direction="desc"))
    oldest_at = page.result[0].created_on
    next_at, newest_at = _first_created(second), _first_created(newest)
    if oldest_at is None or next_at is None or newest_at is None:
        run.add(judge(behaviour, f"{second.describe()} / {newest.describe()}", assumed, False))
        return
    agrees = oldest_at <= next_at <= newest_at
    run.add(
        judge(
            behaviour,
            f"asc {oldest_at.isoformat()}, then {next_at.isoformat()}; "
            f"desc {newest_at.isoformat()}",
            assumed,
            agrees,
            "none: the emulator's listing order is fixed",
        )
    )


def _first_created(obs: Observed[Any]) -> datetime | None:
    """``created_on`` of the first item of an observed ``list_page``, if there is one."""
    if obs.result is None:
        return None
    page, _ = obs.result
    first = page.result[0] if page.result else None
    return None if first is None else first.created_on


async def deletes(run: Run) -> None:
    c, d, ghost = run.iid("c"), run.iid("d"), run.iid("ghost")
    api = run.probe.client
    if c in run.created:
        gone = await run.probe.call(lambda: api.delete(run.workflow, c))
        again = await run.probe.call(lambda: api.create(run.workflow, instance_id=c))
        if not again.ok:
            run.created.remove(c)
        run.add(
            judge(
                "delete, then create the id again",
                f"delete {gone.describe()}, create {again.describe()}",
                "HTTP 200 {instanceId, timestamp}; the create then succeeds",
                gone.ok and again.ok,
                "none: the emulator frees a deleted id",
            )
        )
    batch = await run.probe.call(lambda: api.delete_batch(run.workflow, [d, ghost]))
    if batch.result is not None:
        deleted = [e.id for e in batch.result.deleted]
        failed = [(e.id, e.code) for e in batch.result.errors]
        if d in deleted:
            run.created.remove(d)
        observed = f"HTTP 200 deleted {deleted} errors {failed}"
    else:
        deleted, failed, observed = [], [], batch.describe()
    run.add(
        judge(
            "batch/delete with an unknown id",
            observed,
            f"HTTP 200 deleted {[d]} errors {[(ghost, 10400)]}",
            deleted == [d] and failed == [(ghost, 10400)],
        )
    )


async def terminates(run: Run) -> None:
    a, b, ghost = run.iid("a"), run.iid("b"), run.iid("ghost")
    api = run.probe.client
    job = await run.probe.call(lambda: api.terminate_all_status(run.workflow))
    behaviour = "GET /instances/terminate"
    assumed = "HTTP 200 {status: not_running}: the job's status, never an instance"
    if not local_only(run, behaviour, job, assumed, "the local engine has no terminate job"):
        run.add(
            judge(
                behaviour,
                f"HTTP 200 {{status: {job.result.status}}}" if job.result else job.describe(),
                assumed,
                job.result is not None and job.result.status == "not_running",
            )
        )
    run.add(
        Row(
            "PUT /instances/terminate (terminate all)",
            "",
            "HTTP 200 {status: ok}, then the job terminates every live instance",
            Verdict.NOT_RUN,
            note="it would terminate every instance of the workflow",
        )
    )
    live = await run.probe.call(lambda: api.get(run.workflow, a))
    batch = await run.probe.call(lambda: api.terminate_batch(run.workflow, [a, b, ghost]))
    behaviour = "batch/terminate of a live, a finished and an unknown id"
    assumed = "HTTP 200 {instancesTerminated: 1, status: ok}: only live ids count"
    if local_only(run, behaviour, batch, assumed, "the local engine has no batch terminate"):
        return
    if live.result is None or live.result.status in FINAL_STATUSES:
        run.add(
            Row(
                behaviour,
                batch.describe(),
                assumed,
                Verdict.INCONCLUSIVE,
                note=f"{a} was not live before the call",
            )
        )
        return
    result = batch.result
    run.add(
        judge(
            behaviour,
            f"HTTP 200 {{instancesTerminated: {result.instances_terminated}, "
            f"status: {result.status}}}"
            if result
            else batch.describe(),
            assumed,
            result is not None and (result.instances_terminated, result.status) == (1, "ok"),
            "none: the emulator counts the live ids it terminated, at once",
        )
    )


async def ratelimit_headers(run: Run) -> None:
    seen = run.probe.ratelimit
    run.add(
        Row(
            "Ratelimit header on answers",
            f"Ratelimit: {seen}" if seen else "none seen",
            "sent only when the emulator has a budget (--budget 1200/300)",
            Verdict.NOT_COMPARED,
            note="informational: the emulator's header depends on its --budget",
        )
    )


async def creation_rate(run: Run) -> None:
    """Two batches of 100 fresh ids at once: over 100 creations/s on one workflow."""
    api = run.probe.client

    async def batch(k: int) -> Observed[list[InstanceBulkResponse]]:
        items = [{"instance_id": run.iid(f"r{k}-{n}")} for n in range(100)]
        return await run.probe.call(lambda: api.create_batch(run.workflow, items))

    answers = await asyncio.gather(batch(0), batch(1))
    for answer in answers:
        for item in answer.result or []:
            run.created.append(item.id)
    limited = next((a for a in answers if a.status == 429), None)
    assumed = "HTTP 429 code 10429 with Retry-After"
    if limited is None:
        run.add(
            Row(
                "creation rate over 100/s per workflow",
                "no 429 for 200 creations",
                assumed,
                Verdict.INCONCLUSIVE,
            )
        )
        return
    retry_after = limited.headers.get("retry-after")
    observed = f"{limited.describe()}, Retry-After {retry_after or 'absent'}"
    agrees = retry_after is not None and limited.code == 10429
    setting = (
        "" if agrees else "creation.retry_after = false" if retry_after is None else NO_SETTING
    )
    run.add(judge("creation rate over 100/s per workflow", observed, assumed, agrees, setting))
